"""Ed25519 signing: canonical JSON, key files, signed objects, replayed commands, `fabpass keys`."""

from __future__ import annotations

import base64
import datetime as dt
import os
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st

from agent.cli import main
from agent.signing import (
    KeyFileError,
    SignatureError,
    canonical_json,
    generate_keys,
    load_private_key,
    load_public_key,
    sign,
    sign_command,
    verify,
)

NOW = dt.datetime(2026, 11, 25, 9, 0, tzinfo=dt.timezone.utc)
KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
OTHER_KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(1, 33)))
MEMBER = {"id": "m-0001", "name": "Ada Lovelace", "badges": ["04A1B2C3D4E5F6"], "status": "active",
          "expires": "2027-06-30", "roles": ["staff"], "inductions": {"laser": None, "cnc": "2027-01-31"}}


def test_signing_canonical_json_sorted_compact_utf8() -> None:
    assert canonical_json({"b": 1, "a": {"z": [1, "é"], "y": None}}) == '{"a":{"y":null,"z":[1,"é"]},"b":1}'.encode()


def test_signing_canonical_json_independent_of_key_order() -> None:
    reordered = dict(reversed(list(MEMBER.items())))
    reordered["inductions"] = {"cnc": "2027-01-31", "laser": None}
    assert canonical_json(reordered) == canonical_json(MEMBER)


def test_signing_canonical_json_stable_for_non_ascii_names() -> None:
    obj = {"name": "Zoë Ñuñez 李小龍"}
    assert canonical_json(obj) == b'{"name":"Zo\xc3\xab \xc3\x91u\xc3\xb1ez \xe6\x9d\x8e\xe5\xb0\x8f\xe9\xbe\x8d"}'


def test_signing_round_trip() -> None:
    signed = sign(MEMBER, KEY)
    assert {k: v for k, v in signed.items() if k != "sig"} == MEMBER
    assert "sig" not in MEMBER
    verify(signed, KEY.public_key())
    verify(dict(reversed(list(signed.items()))), KEY.public_key())


def test_signing_resign_replaces_old_sig() -> None:
    signed = sign({**MEMBER, "sig": "stale"}, KEY)
    assert signed["sig"] != "stale"
    verify(signed, KEY.public_key())  # raises SignatureError if the old sig were kept or signed


@pytest.mark.parametrize("tamper, message", [
    (lambda o: {**o, "status": "suspended"}, "bad signature"),
    (lambda o: {**o, "roles": ["staff", "admin"]}, "bad signature"),
    (lambda o: {**o, "extra": 1}, "bad signature"),
    (lambda o: {k: v for k, v in o.items() if k != "expires"}, "bad signature"),
    (lambda o: {k: v for k, v in o.items() if k != "sig"}, "unsigned"),
    (lambda o: {**o, "sig": sign(MEMBER, OTHER_KEY)["sig"]}, "bad signature"),
    (lambda o: {**o, "sig": "not base64!"}, "not base64"),
    (lambda o: {**o, "sig": 42}, "bad signature"),
    (lambda o: {**o, "sig": base64.b64encode(b"short").decode()}, "bad signature"),
], ids=["changed", "added-role", "added-field", "removed-field", "no-sig", "other-key", "non-base64",
        "sig-not-string", "short-sig"])
def test_signing_tampered_object_refused(tamper, message: str) -> None:
    with pytest.raises(SignatureError, match=message):
        verify(tamper(sign(MEMBER, KEY)), KEY.public_key())


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=6,
)


@given(key=st.sampled_from(sorted(MEMBER)), value=json_values)
def test_signing_any_change_to_a_signed_member_detected(key: str, value: object) -> None:
    signed = sign(MEMBER, KEY)
    tampered = {**signed, key: value}
    if tampered[key] == MEMBER[key]:
        verify(tampered, KEY.public_key())
    else:
        with pytest.raises(SignatureError, match="bad signature"):
            verify(tampered, KEY.public_key())


@given(name=st.text())
def test_signing_any_unicode_name_round_trips(name: str) -> None:
    obj = {**MEMBER, "name": name}
    try:
        canonical_json(obj)
    except UnicodeEncodeError:  # a lone surrogate cannot be UTF-8: refused, never signed
        with pytest.raises(UnicodeEncodeError):
            sign(obj, KEY)
        return
    verify(sign(obj, KEY), KEY.public_key())


def test_signing_generate_keys_files_and_modes(tmp_path: Path) -> None:
    old = os.umask(0)  # even a permissive umask must not widen the key file
    try:
        key_path, pub_path = generate_keys(tmp_path / "keys")
    finally:
        os.umask(old)
    assert key_path == tmp_path / "keys" / "signing.key"
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "keys").stat().st_mode) == 0o700
    assert len(key_path.read_text().splitlines()) == 1
    assert len(base64.b64decode(pub_path.read_text().strip(), validate=True)) == 32
    key = load_private_key(key_path)
    verify(sign(MEMBER, key), load_public_key(pub_path.read_text()))


def test_signing_generate_keys_refuses_to_overwrite(tmp_path: Path) -> None:
    key_path, pub_path = generate_keys(tmp_path)
    before = key_path.read_bytes()
    with pytest.raises(KeyFileError, match=f"{key_path}: already exists"):
        generate_keys(tmp_path)
    assert key_path.read_bytes() == before
    key_path.unlink()
    with pytest.raises(KeyFileError, match=f"{pub_path}: already exists"):
        generate_keys(tmp_path)
    assert not key_path.exists()


def test_signing_load_private_key_refuses_readable_by_others(tmp_path: Path) -> None:
    key_path, _ = generate_keys(tmp_path)
    key_path.chmod(0o640)
    with pytest.raises(KeyFileError, match=r"accessible to group or others \(mode 0640\); run: chmod 600"):
        load_private_key(key_path)


@pytest.mark.parametrize("content, message", [
    ("not base64!\n", "expected one line of base64"),
    (base64.b64encode(b"x" * 31).decode(), "expected 32 bytes, found 31"),
])
def test_signing_load_private_key_bad_content_names_file(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "signing.key"
    path.write_text(content)
    path.chmod(0o600)
    with pytest.raises(KeyFileError, match=f"{path}: .*{message}"):
        load_private_key(path)


def test_signing_load_private_key_missing_names_file(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match=f"{tmp_path / 'nope.key'}: cannot read"):
        load_private_key(tmp_path / "nope.key")


@pytest.mark.parametrize("text, message", [
    ("", "0 bytes"),
    ("@@@", "not base64"),
    (base64.b64encode(b"k" * 33).decode(), "33 bytes"),
    (None, "must be a base64 string"),
])
def test_signing_load_public_key_refuses_bad(text, message: str) -> None:
    with pytest.raises(SignatureError, match=message):
        load_public_key(text)


def test_signing_command_signed_with_ts_and_nonce() -> None:
    command = {"v": 1, "command": "lock", "reason": "mirror cleaning", "by": "tech"}
    first, second = sign_command(command, KEY, NOW), sign_command(command, KEY, NOW)
    verify(first, KEY.public_key())
    assert first["ts"] == "2026-11-25T09:00:00.000Z"
    assert first["nonce"] != second["nonce"]
    kept = sign_command({**command, "ts": "2026-11-25T08:59:59.000Z"}, KEY, NOW)
    assert kept["ts"] == "2026-11-25T08:59:59.000Z", "a command's own ts is signed as it is"


def test_signing_cli_keys_generate(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["keys", "generate", str(tmp_path / "k")])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [str(tmp_path / "k" / "signing.key"), str(tmp_path / "k" / "signing.pub")]
    assert stat.S_IMODE((tmp_path / "k" / "signing.key").stat().st_mode) == 0o600


def test_signing_cli_keys_generate_existing_exits_2(tmp_path: Path) -> None:
    generate_keys(tmp_path)
    result = CliRunner().invoke(main, ["keys", "generate", str(tmp_path)])
    assert result.exit_code == 2
    assert f"{tmp_path / 'signing.key'}: already exists" in result.output


def test_signing_cli_keys_generate_unusable_dir_exits_2(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    result = CliRunner().invoke(main, ["keys", "generate", str(tmp_path / "file" / "sub")])
    assert result.exit_code == 2
    assert "cannot create the directory" in result.output
