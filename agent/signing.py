"""Ed25519 signatures for member snapshots and technicians' commands.

A signed object is the same JSON object with one more key, `sig`: the base64
Ed25519 signature of the object without `sig`, serialised as canonical JSON.
Signed commands also carry `ts` and `nonce`, checked by ReplayGuard so that a
captured command cannot be played again later.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import heapq
import json
import os
import secrets
import stat
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from agent.core.timespec import MissingOffset, parse_rfc3339, rfc3339

KEY_FILE = "signing.key"
PUB_FILE = "signing.pub"
MAX_FUTURE_S = 60.0  # clock skew tolerated between the admin's computer and a machine
MAX_NONCE_CHARS = 128


class SignatureError(ValueError):
    """An object that is unsigned, badly signed, replayed, or a key that cannot be used."""


class KeyFileError(ValueError):
    """A key file that cannot be created or read; the message names the file."""


def canonical_json(obj: Any) -> bytes:
    """The bytes that are signed: keys sorted, separators `,` and `:`, UTF-8, no spaces."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode("utf-8")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str) -> bytes:
    """Strict base64: raises ValueError on anything but the standard alphabet with padding."""
    try:
        return base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("not base64") from None


def generate_keys(directory: Path) -> tuple[Path, Path]:
    """Write DIR/signing.key (the private seed, mode 0600) and DIR/signing.pub; never overwrite."""
    directory = Path(directory)
    key_path, pub_path = directory / KEY_FILE, directory / PUB_FILE
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as err:
        raise KeyFileError(f"{directory}: cannot create the directory: {err.strerror or err}") from None
    for path in (key_path, pub_path):
        if path.exists() or path.is_symlink():
            raise KeyFileError(f"{path}: already exists; refusing to overwrite a signing key")
    key = Ed25519PrivateKey.generate()
    seed = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                             serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    _write_new(key_path, _b64(seed) + "\n", 0o600)
    try:
        _write_new(pub_path, _b64(public) + "\n", 0o644)
    except KeyFileError:
        key_path.unlink()
        raise
    return key_path, pub_path


def _write_new(path: Path, text: str, mode: int) -> None:
    """Create `path` with `mode` from the first instant (O_EXCL: no overwrite, no symlink)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    except OSError as err:
        raise KeyFileError(f"{path}: cannot create: {err.strerror or err}") from None
    try:
        os.fchmod(fd, mode)  # the umask may have removed bits we want (never added any)
        os.write(fd, text.encode("ascii"))
        os.fsync(fd)
    finally:
        os.close(fd)


def load_private_key(path: Path) -> Ed25519PrivateKey:
    """The key in `path` (base64 of the 32-byte seed); refused when group or others may read it."""
    path = Path(path)
    try:
        mode = path.stat().st_mode
        text = path.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as err:
        reason = err.strerror if isinstance(err, OSError) and err.strerror else err
        raise KeyFileError(f"{path}: cannot read the signing key: {reason}") from None
    if mode & 0o077:
        raise KeyFileError(f"{path}: the signing key is accessible to group or others "
                           f"(mode {stat.S_IMODE(mode):04o}); run: chmod 600 {path}")
    try:
        seed = _unb64(text)
    except ValueError:
        raise KeyFileError(f"{path}: not a signing key (expected one line of base64)") from None
    if len(seed) != 32:
        raise KeyFileError(f"{path}: not a signing key (expected 32 bytes, found {len(seed)})")
    return Ed25519PrivateKey.from_private_bytes(seed)


def load_public_key(text: str) -> Ed25519PublicKey:
    """A public key from the base64 of its 32 raw bytes (the one line of signing.pub)."""
    if not isinstance(text, str):
        raise SignatureError(f"a public key must be a base64 string, not {type(text).__name__}")
    try:
        raw = _unb64(text)
    except ValueError:
        raise SignatureError("the public key is not base64 (copy the line of signing.pub)") from None
    if len(raw) != 32:
        raise SignatureError(f"the public key is {len(raw)} bytes; an Ed25519 key is 32 "
                             "(copy the line of signing.pub)")
    return Ed25519PublicKey.from_public_bytes(raw)


def sign(obj: dict, key: Ed25519PrivateKey) -> dict:
    """A copy of `obj` with `sig`: the signature of its canonical JSON without `sig`."""
    unsigned = {k: v for k, v in obj.items() if k != "sig"}
    return {**unsigned, "sig": _b64(key.sign(canonical_json(unsigned)))}


def verify_bytes(message: bytes | bytearray, sig: Any, public_key: Ed25519PublicKey) -> None:
    """Check `sig` (the object's `sig` value, None when absent) against canonical bytes."""
    if sig is None:
        raise SignatureError("unsigned (a public key is configured, so only signed objects are accepted)")
    if not isinstance(sig, str):
        raise SignatureError("bad signature: sig must be a base64 string")
    try:
        raw = _unb64(sig)
    except ValueError:
        raise SignatureError("bad signature: sig is not base64") from None
    try:
        public_key.verify(raw, message)
    except InvalidSignature:
        raise SignatureError("bad signature: not signed by the configured key, or changed since") from None


def verify(obj: dict, public_key: Ed25519PublicKey) -> None:
    """Raise SignatureError unless `obj` carries a valid `sig` by `public_key`."""
    unsigned = {k: v for k, v in obj.items() if k != "sig"}
    try:
        message = canonical_json(unsigned)
    except ValueError as err:  # a lone surrogate or NaN: nobody signed that
        raise SignatureError(f"bad signature: not serialisable as canonical JSON ({err})") from None
    verify_bytes(message, obj.get("sig"), public_key)


def sign_command(obj: dict, key: Ed25519PrivateKey, now: dt.datetime) -> dict:
    """`obj` with `ts` (now) and a fresh random `nonce`, signed."""
    return sign({**obj, "ts": rfc3339(now), "nonce": secrets.token_urlsafe(16)}, key)


def _parse_ts(ts: Any) -> dt.datetime:
    if not isinstance(ts, str):
        raise SignatureError("ts must be an RFC 3339 UTC time such as 2026-11-25T09:00:00Z")
    try:
        moment = parse_rfc3339(ts)
    except MissingOffset:
        raise SignatureError(f"ts {ts!r} must be in UTC (end it with Z)") from None
    except ValueError:
        raise SignatureError(f"ts {ts!r} is not an RFC 3339 time such as 2026-11-25T09:00:00Z") from None
    if moment.utcoffset() != dt.timedelta(0):
        raise SignatureError(f"ts {ts!r} must be in UTC (end it with Z)")
    return moment


class ReplayGuard:
    """Refuses signed commands that are old, from the future, or seen before.

    Check the signature first: only then may a nonce be remembered. A nonce is
    remembered until its command would be refused as too old anyway, so memory
    is bounded by the commands signed within one window.
    """

    def __init__(self, window_s: float = 300.0) -> None:
        self.window = dt.timedelta(seconds=window_s)
        self._seen: set[str] = set()
        self._expiry: list[tuple[dt.datetime, str]] = []  # heap of (ts + window, nonce)

    def check(self, ts: str, nonce: str, now: dt.datetime) -> None:
        moment = _parse_ts(ts)
        if not isinstance(nonce, str) or not nonce or len(nonce) > MAX_NONCE_CHARS:
            raise SignatureError(f"nonce must be a non-empty string of at most {MAX_NONCE_CHARS} characters")
        self._forget(now)
        age = (now - moment).total_seconds()
        if age > self.window.total_seconds():
            raise SignatureError(f"too old: signed {age:.0f} s ago, the limit is "
                                 f"{self.window.total_seconds():.0f} s (replayed, or a clock is wrong)")
        if -age > MAX_FUTURE_S:
            raise SignatureError(f"from the future: signed {-age:.0f} s ahead of this machine's clock "
                                 f"(at most {MAX_FUTURE_S:.0f} s allowed; check the clocks)")
        if nonce in self._seen:
            raise SignatureError("replayed: this nonce was already used")
        self._seen.add(nonce)
        heapq.heappush(self._expiry, (moment + self.window, nonce))

    def _forget(self, now: dt.datetime) -> None:
        while self._expiry and self._expiry[0][0] < now:
            self._seen.discard(heapq.heappop(self._expiry)[1])

    def __len__(self) -> int:
        """How many nonces are remembered."""
        return len(self._seen)
