"""Ed25519 signatures for member snapshots and technicians' commands.

A signed object is the same JSON object with one more key, `sig`: the base64
Ed25519 signature of the object without `sig`, serialised as canonical JSON.
Signed commands also carry `ts` and `nonce`, under the signature: the agent
refuses an old command (agent.link.commands.admit) and a nonce it has seen
(agent.daemon.nonces), so that a captured command cannot be played again.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
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

from agent.core.timespec import rfc3339

KEY_FILE = "signing.key"
PUB_FILE = "signing.pub"


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
    """`obj` with `ts` (now, unless it has one) and a fresh random `nonce`, signed."""
    return sign({"ts": rfc3339(now), **obj, "nonce": secrets.token_urlsafe(16)}, key)
