"""Fuzzing what comes from outside: the machine config, remote commands, member lists.

Each parser has one way to say no (ConfigError, CommandError, SnapshotError, all
ValueErrors with a message for a person); any other exception would crash a
daemon thread or print a traceback where the contract promises exit 2.
Hypothesis runs derandomized with bounded example counts, so CI is reproducible.
"""

from __future__ import annotations

import datetime as dt
import json
import time
import tomllib
import tracemalloc
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.config import SECTIONS, ConfigError, parse
from agent.link import commands as remote
from agent.members.snapshot import MAX_BYTES, Snapshot, SnapshotError, load_json
from agent.signing import (
    ReplayGuard,
    generate_keys,
    load_private_key,
    load_public_key,
    sign,
    sign_command,
)
from tests.support.agents import config_text, members_json

FUZZ = settings(max_examples=150, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])

# --- values ---------------------------------------------------------------------------------

json_scalars = st.one_of(st.none(), st.booleans(), st.integers(min_value=-2**70, max_value=2**70),
                         st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=20))
json_values = st.recursive(json_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)), max_leaves=12)

toml_scalars = st.one_of(
    st.integers(min_value=-2**64, max_value=2**64).map(str),
    st.floats().map(lambda f: "nan" if f != f else ("inf" if f == float("inf") else "-inf" if f == float("-inf") else repr(f))),
    st.booleans().map(lambda b: str(b).lower()),
    st.text(max_size=20).map(lambda s: json.dumps(s)),
    st.sampled_from(['"1h"', '"0s"', '"-5m"', '"nan"', '"1e400s"', '"4h30m"', '""', '"Europe/Rome"',
                     '"../../etc/passwd"', '"mqtt://x:1"', '"mqtt://:0"', '"mon-fri 09:00-19:00"',
                     '"simulated"', '"rdm6300"', '"head"', '"mfrc522"', '2026-11-25', '09:00:00',
                     '2026-11-25T09:00:00Z', '"\\u0000"', "0x1F", "1_000", "27", "28", "-1"]),
)
toml_values = st.recursive(toml_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3).map(lambda xs: "[" + ", ".join(xs) + "]"),
    st.dictionaries(st.from_regex(r"[a-z_]{1,8}", fullmatch=True), inner, max_size=3).map(
        lambda d: "{" + ", ".join(f"{k} = {v}" for k, v in d.items()) + "}")), max_leaves=6)

KNOWN_KEYS = sorted({f"{section}.{name}" for section, cls in SECTIONS.items()
                     for name in cls.__dataclass_fields__})


def assert_config_or_config_error(text: str) -> None:
    try:
        parse(text, "fuzz.toml")
    except ConfigError as err:
        assert str(err).startswith("fuzz.toml"), f"the message names the file: {err}"


# --- config ------------------------------------------------------------------------------------

@FUZZ
@given(st.text(max_size=300))
def test_fuzz_config_any_text_is_a_config_or_a_config_error(text):
    assert_config_or_config_error(text)


@FUZZ
@given(st.lists(st.one_of(
    st.sampled_from(sorted(SECTIONS)).map(lambda s: f"[{s}]"),
    st.from_regex(r"\[[a-z.]{1,10}\]", fullmatch=True),
    st.tuples(st.sampled_from([k.split(".")[1] for k in KNOWN_KEYS] + ["bogus", "x.y"]), toml_values).map(
        lambda kv: f"{kv[0]} = {kv[1]}"),
), max_size=12))
def test_fuzz_config_toml_ish_lines_are_a_config_or_a_config_error(lines):
    assert_config_or_config_error("\n".join(lines))


def _valid_tables(tmp: str = "/tmp/fabpass-fuzz") -> dict[str, dict[str, str]]:
    """A full valid config as {section: {key: TOML value text}}."""
    text = config_text(tmp, extra='[mqtt]\nurl = "mqtt://localhost:1883"\n[sensor]\npin = 27\n')
    tables: dict[str, dict[str, str]] = {}
    for section, table in tomllib.loads(text).items():
        tables[section] = {k: json.dumps(v) if isinstance(v, str) else str(v).lower() for k, v in table.items()}
    return tables


def _render(tables: dict[str, Any]) -> str:
    out = []
    for section, table in tables.items():
        if isinstance(table, str):
            out.append(f"{section} = {table}")  # a section replaced by a plain value
            continue
        out.append(f"[{section}]")
        out += [f"{k} = {v}" for k, v in table.items()]
    return "\n".join(out) + "\n"


def test_fuzz_config_the_base_of_the_mutations_is_valid():
    assert parse(_render(_valid_tables()), "fuzz.toml").machine.id


mutation = st.one_of(
    st.tuples(st.just("set"), st.sampled_from(KNOWN_KEYS + ["machine.bogus", "relay.pins", "nothing.at_all"]),
              toml_values),
    st.tuples(st.just("delete"), st.sampled_from(KNOWN_KEYS), st.none()),
    st.tuples(st.just("flatten"), st.sampled_from(sorted(SECTIONS)), toml_values),
)


@FUZZ
@given(st.lists(mutation, min_size=1, max_size=4))
def test_fuzz_config_mutations_of_a_valid_config_are_a_config_or_a_config_error(mutations):
    tables: dict[str, Any] = _valid_tables()
    for op, target, value in mutations:
        if op == "flatten":
            tables[target] = value
            continue
        section, key = target.split(".")
        table = tables.setdefault(section, {})
        if isinstance(table, str):
            continue
        if op == "set":
            table[key] = value
        else:
            table.pop(key, None)
    assert_config_or_config_error(_render(tables))


@pytest.mark.parametrize("text", [
    "a = " + "[" * 5000,
    "a = " + "{b = " * 5000,
    '[machine]\nid = ' + "[" * 3000 + "]" * 3000,
])
def test_fuzz_config_deeply_nested_toml_is_a_config_error_not_a_recursion_error(text):
    """Found by this fuzzing: tomllib recurses per nesting level and agent/config.py
    catches only TOMLDecodeError, so `fabpass run` dies with a RecursionError traceback
    instead of exit 2 naming the file."""
    with pytest.raises(ConfigError, match="fuzz.toml"):
        parse(text, "fuzz.toml")


# --- remote commands ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    directory = tmp_path_factory.mktemp("keys")
    key_path, pub_path = generate_keys(directory)
    return load_private_key(key_path), load_public_key(pub_path.read_text())


command_like = st.fixed_dictionaries(
    {"v": st.one_of(st.just(1), json_values), "command": st.one_of(st.sampled_from(remote.KINDS), json_values)},
    optional={"by": st.one_of(st.just("tech"), json_values), "reason": json_values, "now": json_values,
              "machine": st.one_of(st.just("laser-1"), json_values), "ts": json_values, "nonce": json_values,
              "sig": json_values, "extra": json_values})


@FUZZ
@given(obj=command_like, signed=st.booleans(), age_s=st.floats(-3600, 3600), raw_tail=st.binary(max_size=8))
def test_fuzz_signed_command_parser_raises_only_command_error(keys, obj, signed, age_s, raw_tail):
    """The agent with a public key: random near-commands, signed or not, at any age; the
    tail appends junk bytes to the JSON half of the time."""
    key, public = keys
    now = dt.datetime(2026, 11, 25, 9, 0, tzinfo=dt.timezone.utc)
    if signed:
        try:
            obj = sign_command(obj, key, now - dt.timedelta(seconds=age_s))
        except ValueError:  # not serialisable as canonical JSON: nobody could sign it
            return
    payload = json.dumps(obj).encode() + (raw_tail if age_s > 0 else b"")
    try:
        command = remote.parse(payload, "laser-1", public, ReplayGuard(), now=now)
    except remote.CommandError:
        return
    assert signed and command.kind in remote.KINDS


# --- member lists -------------------------------------------------------------------------------

def assert_snapshot_or_error(payload: bytes | str, public_key: Any = None) -> Snapshot | None:
    try:
        snapshot = load_json(payload, public_key)
    except SnapshotError:
        return None
    try:
        members = list(snapshot.members())  # iterating an accepted list may only raise SnapshotError
    except SnapshotError:
        return snapshot
    assert len({m.id for m in members}) == snapshot.count
    return snapshot


@FUZZ
@given(st.binary(max_size=400))
def test_fuzz_member_list_any_bytes_is_a_snapshot_or_a_snapshot_error(payload):
    assert_snapshot_or_error(payload)


@FUZZ
@given(json_values)
def test_fuzz_member_list_any_json_is_a_snapshot_or_a_snapshot_error(value):
    assert_snapshot_or_error(json.dumps(value).encode())


member_mutation = st.tuples(st.integers(0, 3), st.sampled_from(
    ["id", "name", "badges", "status", "expires", "roles", "inductions", "bogus"]), json_values)
top_mutation = st.tuples(st.sampled_from(["v", "version", "generated_at", "members", "sig", "other"]), json_values)


@FUZZ
@given(member_changes=st.lists(member_mutation, max_size=3), top_changes=st.lists(top_mutation, max_size=2),
       sign_it=st.booleans())
def test_fuzz_member_list_mutations_of_a_valid_list(keys, member_changes, top_changes, sign_it):
    key, public = keys
    obj = json.loads(members_json(5))
    for index, field, value in member_changes:
        obj["members"][index][field] = value
    for field, value in top_changes:
        obj[field] = value
    if sign_it:
        try:
            obj = sign(obj, key)
        except ValueError:
            return
    payload = json.dumps(obj).encode()
    snapshot = assert_snapshot_or_error(payload, public)
    if snapshot is not None:
        assert sign_it, "an unsigned list passed the signature check"
    assert_snapshot_or_error(payload)  # and the same without a key


@pytest.mark.parametrize("payload", [
    b'{"v":' + b"[" * 100_000 + b"]" * 100_000 + b"}",
    b'{"v":1,"version":2,"members":[' + b"[" * 100_000 + b"]" * 100_000 + b"]}",
], ids=["deep_top_level_value", "deep_member"])
def test_fuzz_member_list_deeply_nested_json_is_a_snapshot_error_not_a_recursion_error(payload):
    """Found by this fuzzing: agent/members/snapshot.py load_json lets json's RecursionError out.
    In the agent that escapes ListSync.take (which catches ValueError and OSError)
    and kills the members-sync thread: see test_security_hostile.py."""
    with pytest.raises(SnapshotError):
        load_json(payload)


@pytest.mark.parametrize("check_members", [True, False], ids=["checked", "unchecked"])
@pytest.mark.parametrize("depth", [300, 600, 900, 990])
def test_fuzz_member_list_nesting_the_decoder_takes_is_still_a_snapshot_error(depth, check_members):
    """Found when objects began to decode as pair tuples: a member nested a few hundred
    levels decodes, then turning it back into plain values for the error message recursed
    past the limit, and the unchecked load (the updater's) let the RecursionError out."""
    nested = "[" * depth + "]" * depth
    for member in (nested, '{"id": ' + nested + ', "status": "active"}'):
        payload = ('{"v":1,"version":2,"members":[' + member + "]}").encode()
        with pytest.raises(SnapshotError, match=r"members\[0\]|nested too deeply"):
            list(load_json(payload, check_members=check_members).members())


def test_fuzz_member_list_over_32_mib_refused_by_size_fast_without_parsing():
    payload = b"[" * (MAX_BYTES + 1024 * 1024)  # 33 MiB of what would be a deeply nested parse
    tracemalloc.start()
    try:
        started = time.perf_counter()
        with pytest.raises(SnapshotError, match="larger than 32 MiB; refused unparsed"):
            load_json(payload)
        elapsed = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert elapsed < 0.05, f"refusing by size took {elapsed:.3f} s: it was parsed"
    assert peak < 1024 * 1024, f"refusing by size allocated {peak / 2**20:.1f} MiB: it was decoded"
