"""Member lists: JSON and CSV parsing, validation messages, signatures, size and memory bounds."""

from __future__ import annotations

import base64
import datetime as dt
import json
import re
import time
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.core.model import Member
from agent.members.snapshot import (
    MAX_BYTES,
    SnapshotError,
    load_csv,
    load_file,
    load_json,
    member_names,
    to_json,
)
from agent.members.version import MAX_VERSION
from agent.signing import canonical_json, sign

KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
PUBLIC = base64.b64encode(KEY.public_key().public_bytes(
    serialization.Encoding.Raw, serialization.PublicFormat.Raw)).decode()
OTHER_KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(1, 33)))

ADA = {"id": "m-0001", "name": "Ada Lovelace", "badges": ["04A1B2C3D4E5F6"], "status": "active",
       "expires": "2027-06-30", "roles": ["staff"], "inductions": {"laser": None, "cnc": "2027-01-31"}}
GRACE = {"id": "m-0002", "name": "Grace Hopper", "badges": ["04:a1:b2:c4", "0a0b0c0d0e"], "status": "suspended",
         "expires": None, "roles": [], "inductions": {}}


def snapshot(*members: dict, **top: Any) -> dict:
    return {"v": 1, "version": 42, "generated_at": "2026-11-25T09:00:00Z", "members": list(members), **top}


def dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False)


CSV_HEADER = "id,name,badges,status,expires,roles,inductions\n"
CSV_ADA = "m-0001,Ada Lovelace,04A1B2C3D4E5F6,active,2027-06-30,staff,laser cnc:2027-01-31\n"
CSV_GRACE = "m-0002,Grace Hopper,04:a1:b2:c4 0a0b0c0d0e,suspended,,,\n"


# --- valid lists ------------------------------------------------------------------------------

def test_snapshot_json_parses_contract_example() -> None:
    snap = load_json(dumps(snapshot(ADA, GRACE)))
    assert (snap.version, snap.generated_at, snap.count) == (42, "2026-11-25T09:00:00Z", 2)
    ada, grace = snap.members()
    assert ada == Member(id="m-0001", name="Ada Lovelace", status="active", expires=dt.date(2027, 6, 30),
                         roles=frozenset({"staff"}), badges=("04A1B2C3D4E5F6",),
                         inductions={"laser": None, "cnc": dt.date(2027, 1, 31)})
    assert grace.badges == ("04A1B2C4", "0A0B0C0D0E")
    assert grace.status == "suspended" and grace.expires is None


def test_snapshot_members_iterable_more_than_once() -> None:
    snap = load_json(dumps(snapshot(ADA, GRACE)).encode())
    assert list(snap.members()) == list(snap.members())
    assert len(list(snap.members())) == 2


def test_snapshot_json_accepts_whitespace_any_key_order_and_no_generated_at() -> None:
    text = '\n { "members" : [ \n ] ,\t"version": 7 , "v" : 1 }\n'
    snap = load_json(text)
    assert (snap.version, snap.generated_at, snap.count, list(snap.members())) == (7, None, 0, [])


def test_snapshot_json_optional_member_fields_default() -> None:
    member = next(load_json(dumps(snapshot({"id": "m-1", "status": "active"}))).members())
    assert member == Member(id="m-1", name="", status="active")


def test_snapshot_members_with_the_same_inductions_share_them_read_only() -> None:
    """A list's repeated induction maps are validated once, and no member can change another's."""
    first, second = load_json(dumps(snapshot(ADA, {**ADA, "id": "m-0003", "badges": []}))).members()
    assert first.inductions == second.inductions == {"laser": None, "cnc": dt.date(2027, 1, 31)}
    with pytest.raises(TypeError):
        first.inductions["laser"] = dt.date(2030, 1, 1)
    assert next(load_json(dumps(snapshot(ADA))).members()).inductions["laser"] is None


def test_snapshot_csv_parses_like_json() -> None:
    csv_snap = load_csv(CSV_HEADER + CSV_ADA + CSV_GRACE, version=42)
    json_snap = load_json(dumps(snapshot(ADA, GRACE)))
    assert (csv_snap.version, csv_snap.count) == (42, 2)
    assert list(csv_snap.members()) == list(json_snap.members())


def test_snapshot_csv_columns_any_order_bom_quotes_blank_rows() -> None:
    text = ("\ufeffstatus,id,name,badges,expires,roles,inductions\r\n"
            'active,m-9,"Lovelace, Ada",04A1B2C3,,staff member,laser\r\n'
            ",,,,,,\r\n\r\n")
    (member,) = load_csv(text, version=1).members()
    assert member == Member(id="m-9", name="Lovelace, Ada", status="active", badges=("04A1B2C3",),
                            roles=frozenset({"staff", "member"}), inductions={"laser": None})


def test_snapshot_round_trip_through_to_json() -> None:
    original = load_csv(CSV_HEADER + CSV_ADA + CSV_GRACE, version=9)
    again = load_json(to_json(original))
    assert (again.version, again.count) == (9, 2)
    assert list(again.members()) == list(original.members())


member_ids = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), min_size=1).filter(str.strip)
names = st.text(alphabet=st.characters(blacklist_categories=("Cs",)))
dates = st.none() | st.dates(min_value=dt.date(1000, 1, 1))
members_strategy = st.builds(
    Member, id=member_ids, name=names, status=st.sampled_from(["active", "suspended"]), expires=dates,
    roles=st.frozensets(names.filter(bool), max_size=3),
    inductions=st.dictionaries(names.filter(bool), dates, max_size=3),
    badges=st.just(()),
)


@settings(max_examples=50)
@given(st.lists(members_strategy, max_size=5, unique_by=lambda m: m.id), st.integers(1, MAX_VERSION))
def test_snapshot_any_valid_list_round_trips_signed(members: list[Member], version: int) -> None:
    members = [m._replace(badges=(f"{i:08X}",)) for i, m in enumerate(members)]
    obj = {"v": 1, "version": version, "members": [
        {"id": m.id, "name": m.name, "status": m.status, "badges": list(m.badges),
         "expires": m.expires and m.expires.isoformat(), "roles": sorted(m.roles),
         "inductions": {k: v and v.isoformat() for k, v in m.inductions.items()}} for m in members]}
    snap = load_json(dumps(sign(obj, KEY)), PUBLIC)
    assert list(snap.members()) == members
    assert list(load_json(to_json(snap, KEY), PUBLIC).members()) == members


# --- the fast path for members in publish order ------------------------------------------------
# A member whose fields come in the order `to_json` writes them is read by a
# shortcut (_laid_out_member); it must decide exactly as the full check does.
# The full check reads the same member with its fields in reverse order.

OMIT = object()
LAYOUT = ("id", "name", "badges", "status", "expires", "roles", "inductions")
NORMAL_BADGES = [[], ["04A1B2C3"], ["04A1B2C3D4E5F6", "0A0B0C0D0E"], ["A" * 64]]
VALID_FIELDS: dict[str, list[Any]] = {  # OMIT: an optional field left out
    "id": ["m-1", "é-2", " m-3 "],
    "name": ["Ada", "", "Università", OMIT],
    "badges": NORMAL_BADGES + [["04a1b2c3"], ["04:A1:B2:C3"], OMIT],
    "status": ["active", "suspended"],
    "expires": [None, "2099-12-31", OMIT],
    "roles": [[], ["staff"], ["staff", "host", "staff"], OMIT],
    "inductions": [{}, {"laser": None}, {"laser": "2099-06-30", "cnc": None}, OMIT],
}
BAD_FIELDS: dict[str, list[Any]] = {
    "id": ["", " ", 7, None, [], {"x": 1}, '"\\ud800"', OMIT],
    "name": [None, 5, ["x"], '"\\udfff"'],
    "badges": [["04A1B2C3", "04A1B2C3"], ["04A1B2C3", "04:a1:b2:c3"], [""], [12345678], "04A1B2C3", None,
               [["04A1B2C3"]], ["04A1B2C"], [{"x": 1}], ["a" * 63]],
    "status": ["Active", "", None, 1, ["active"], {"active": 1}, OMIT],
    "expires": ["2099-02-30", "2099-1-1", "", 20991231, ["2099-12-31"], {"d": 1}, "２０９９-１２-３１", True],
    "roles": [[""], [5], "staff", None, [["x"]], [{"a": 1}], ['"\\ud800"']],
    "inductions": [{"laser": "bad"}, {"": None}, {"laser": 5}, {"laser": ["x"]}, [], None, "laser",
                   {"laser": {"x": 1}}, {"laser": True}, '{"laser":null,"laser":null}'],
}


def fragment(value: Any) -> str:
    """JSON for a value; a str that is already JSON text (a lone surrogate, a duplicated key) as it is."""
    if isinstance(value, str) and value[:1] in ('"', "{"):
        return value
    if isinstance(value, list) and value and isinstance(value[0], str) and value[0].startswith('"'):
        return "[" + ",".join(value) + "]"
    return dumps(value)


def member_text(fields: dict[str, Any], order: tuple[str, ...]) -> str:
    return "{" + ",".join(f'"{k}":{fragment(fields[k])}' for k in order if fields[k] is not OMIT) + "}"


def read_one(text: str) -> list[Member] | str:
    try:
        return list(load_json('{"v":1,"version":1,"members":[' + text + "]}").members())
    except SnapshotError as err:
        return str(err)


def test_snapshot_laid_out_member_takes_the_shortcut_and_agrees_for_every_valid_mix() -> None:
    """The shortcut takes every member in publish order whose badges are normal already."""
    import itertools

    from agent.members.snapshot import _DECODER, _laid_out_member

    for values in itertools.product(*(VALID_FIELDS[k] for k in LAYOUT)):
        fields = dict(zip(LAYOUT, values))
        full = read_one(member_text(fields, LAYOUT[::-1]))
        assert isinstance(full, list), full
        fast = _laid_out_member(_DECODER.decode(member_text(fields, LAYOUT)))
        if OMIT not in values and fields["badges"] in NORMAL_BADGES:
            assert [fast] == full
        else:
            assert fast is None
        assert read_one(member_text(fields, LAYOUT)) == full


@pytest.mark.parametrize("field, value", [(k, v) for k in LAYOUT for v in BAD_FIELDS[k]],
                         ids=lambda v: repr(v)[:30])
def test_snapshot_laid_out_member_with_a_bad_field_is_refused_as_the_full_check_says(field: str, value: Any) -> None:
    fields = {k: VALID_FIELDS[k][1] for k in LAYOUT} | {field: value}
    full = read_one(member_text(fields, LAYOUT[::-1]))
    assert isinstance(full, str) and full.startswith("members[0]"), full
    assert read_one(member_text(fields, LAYOUT)) == full


# --- bad JSON ---------------------------------------------------------------------------------

def member(**changes: Any) -> dict:
    return {k: v for k, v in {**ADA, **changes}.items() if v is not ...}


BAD_JSON = [
    ("[]", "must be a JSON object"),
    ("", "must be a JSON object"),
    ('{"v": 1, "version": 1, "members": [}', "not valid JSON at line 1 column 36"),
    ('{"v": 1, "version": 1, "members": []} x', "not valid JSON at line 1 column 39: extra data"),
    ('{"v": 1, "version": 1, "members": [] "x": 1}', "not valid JSON .*',' or '}'"),
    ('{"v": 1, "version": 1, "members": [{"id": "a"} {"id": "b"}]}', "not valid JSON .*after a member"),
    ('{"v": 1, "v": 1, "version": 1, "members": []}', "v: appears twice at the top level"),
    ('{"v": 1, "version": 1, "members": [], "members": []}', "members: appears twice"),
    ('{"v": 1, "version": 1, "members": [{"id": "a", "id": "b", "status": "active"}]}', "id: appears twice in one object"),
    ('{"v": 1, "version": 1, "members": [{"id": "a", "status": "active", "inductions": {"cnc": null, "cnc": null}}]}',
     r"members\[0\] \(id 'a'\): cnc: appears twice in one object"),
    ('{"v": 1, "version": 1, "members": [{"id": "a", "status": "active", "roles": [{"x": 1, "x": 2}]}]}',
     "x: appears twice in one object"),
    ('{"v": 1, "version": 1, "members": [{"id": "a", "status": {"x": 1}}]}', r"status: \{'x': 1\} is not one of"),
    ('{"v": 1, "version": 1, "members": [{"id": "a", "status": "active", "inductions": {"cnc": {"x": 1}}}]}',
     r"inductions.cnc: \{'x': 1\} is not a date"),
    ('{"v": 1, "version": 1, "members": [[["id", "a"], ["status", "active"]]]}', r"members\[0\]: must be an object, not list"),
    ('{"v": 1, "version": 1, "members": [{"id": "a", "status": "active"}, ]}', "not valid JSON"),
    ('{"v": 1, "version": 1, "members": [{"id": NaN}]}', "NaN is not allowed"),
    (dumps(snapshot(ADA, v=2)), "v: 2 is not a snapshot format"),
    (dumps(snapshot(ADA, v=True)), "v: True is not a snapshot format"),
    (dumps({"version": 1, "members": []}), "v: None"),
    (dumps(snapshot(ADA, version=0)), "version: 0 must be a positive integer"),
    (dumps(snapshot(ADA, version=-3)), "version: -3 must be a positive integer"),
    (dumps(snapshot(ADA, version=True)), "version: True must be a positive integer"),
    (dumps(snapshot(ADA, version="42")), "version: '42' must be a positive integer"),
    (dumps(snapshot(ADA, version=4.5)), "version: 4.5 must be"),
    (dumps(snapshot(ADA, generated_at=5)), "generated_at: 5 is not an RFC 3339 time"),
    (dumps(snapshot(ADA, generated_at="yesterday")), "generated_at: 'yesterday' is not an RFC 3339 time"),
    (dumps(snapshot(ADA, generated_at="2026-11-25T09:00:00")), "with its offset"),  # which moment?
    (dumps(snapshot(ADA, members={"m-0001": ADA})), "members: must be a list"),
    (dumps({"v": 1, "version": 3}), "members: missing"),
    (dumps(snapshot(ADA, extra=1)), "extra: unknown top-level key"),
    (dumps(snapshot(ADA, "m-0002")), r"members\[1\]: must be an object, not str"),
    (dumps(snapshot(member(id=...))), r"members\[0\]: id: missing"),
    (dumps(snapshot(member(status=...))), r"members\[0\] \(id 'm-0001'\): status: missing"),
    (dumps(snapshot(member(id=""))), r"members\[0\] \(id ''\): id: must be a non-empty string"),
    (dumps(snapshot(member(id=7))), r"members\[0\]: id: must be a non-empty string"),
    (dumps(snapshot(member(name=None))), r"members\[0\] \(id 'm-0001'\): name: must be a string"),
    ('{"v":1,"version":1,"members":[{"id":"m","status":"active","name":"\\ud800"}]}', r"name: must be a string of valid Unicode"),
    (dumps(snapshot(member(status="banned"))), r"\(id 'm-0001'\): status: 'banned' is not one of active, suspended"),
    (dumps(snapshot(member(badges="04A1B2C3"))), r"\(id 'm-0001'\): badges: must be a list of non-empty strings"),
    (dumps(snapshot(member(badges=[12345678]))), r"badges: must be a list"),
    (dumps(snapshot(member(badges=["04A1B2"]))), r"\(id 'm-0001'\): badges: badge '04A1B2' has 6 hex digits"),
    (dumps(snapshot(member(badges=["ZZZZZZZZ"]))), r"badges: badge 'ZZZZZZZZ' is not hexadecimal"),
    (dumps(snapshot(member(badges=["04A1B2C3", "04:a1:b2:c3"]))), r"badges: 04A1B2C3 is listed twice"),
    (dumps(snapshot(ADA, member(id="m-0001", badges=[]))), r"members\[1\] \(id 'm-0001'\): id: appears more than once"),
    (dumps(snapshot(ADA, member(id="m-0002", badges=["04 a1 b2 c3 d4 e5 f6"]))),
     r"members\[1\] \(id 'm-0002'\): badges: 04A1B2C3D4E5F6 already belongs to member 'm-0001'"),
    (dumps(snapshot(member(expires="30/06/2027"))), r"expires: '30/06/2027' is not a date \(YYYY-MM-DD\)"),
    (dumps(snapshot(member(expires="20270630"))), r"expires: '20270630' is not a date"),
    (dumps(snapshot(member(expires="2027-02-30"))), r"expires: '2027-02-30' is not a real date"),
    (dumps(snapshot(member(expires=20270630))), r"expires: 20270630 is not a date"),
    (dumps(snapshot(member(roles="staff"))), r"roles: must be a list of non-empty strings"),
    (dumps(snapshot(member(roles=["staff", None]))), r"roles: must be a list"),
    (dumps(snapshot(member(inductions=["laser"]))), r"inductions: must be an object"),
    (dumps(snapshot(member(inductions={"laser": "soon"}))), r"inductions.laser: 'soon' is not a date"),
    (dumps(snapshot(member(inductions={"laser": ["2027-01-01"]}))), r"inductions.laser: \['2027-01-01'\] is not a date"),
    (dumps(snapshot(member(inductions={"": None}))), r"inductions: '' is not an induction name"),
    (dumps(snapshot(member(expiry="2027-01-01"))), r"\(id 'm-0001'\): expiry: unknown field"),
]


@pytest.mark.parametrize("check_members", [True, False], ids=["checked", "unchecked"])
@pytest.mark.parametrize("text, message", BAD_JSON, ids=[m for _, m in BAD_JSON])
def test_snapshot_bad_json_refused_naming_the_place(text: str, message: str, check_members: bool) -> None:
    """Unchecked (as the updater loads), the same error comes at the latest while the members are read."""
    with pytest.raises(SnapshotError, match=message):
        list(load_json(text, check_members=check_members).members())


HEAD = '{"v": 1, "version": 5, "generated_at": null, "members": '
AFTER_MEMBERS = [
    (HEAD + "[]} x", "not valid JSON at line 1 column 61: extra data"),
    (HEAD + '[] "x": 1}', "not valid JSON .*',' or '}'"),
    (HEAD + "[], \"members\": []}", "members: appears twice at the top level"),
    (HEAD + "[], \"v\": 1}", "v: appears twice at the top level"),
    (HEAD + "[], \"extra\": 1}", "extra: unknown top-level key"),
    (HEAD + '[{"id": "a", "status": "active"} {"id": "b"}]}', "not valid JSON .*after a member"),
    (HEAD + '[{"id": NaN}]}', "NaN is not allowed"),
]


@pytest.mark.parametrize("text, message", AFTER_MEMBERS, ids=[m for _, m in AFTER_MEMBERS])
def test_snapshot_unchecked_one_pass_checks_what_follows_the_members(text: str, message: str) -> None:
    """Unchecked and unsigned, with its head first, a list is not walked at loading: whatever
    is wrong in or after its members array comes out of `members()`, with the version."""
    with pytest.raises(SnapshotError, match=message):
        load_json(text)
    snap = load_json(text, check_members=False)
    assert (snap.version, snap.count) == (5, None)
    with pytest.raises(SnapshotError, match=message) as err:
        list(snap.members())
    assert err.value.version == 5


def test_snapshot_unchecked_one_pass_reads_the_same_members() -> None:
    text = dumps(snapshot(ADA, GRACE))
    one_pass = load_json(text, check_members=False)
    assert one_pass.count is None and one_pass.generated_at == "2026-11-25T09:00:00Z"
    assert list(one_pass.members()) == list(one_pass.members()) == list(load_json(text).members())
    # The version after the members (sorted keys) or a key to check it against: walked first.
    late = json.dumps(snapshot(ADA, GRACE), sort_keys=True)
    assert load_json(late, check_members=False).count == 2
    assert load_json(dumps(sign(snapshot(ADA, GRACE), KEY)), PUBLIC, check_members=False).count == 2


def test_snapshot_error_carries_readable_version() -> None:
    with pytest.raises(SnapshotError) as err:
        load_json(dumps(snapshot(member(status="banned"), version=17)))
    assert err.value.version == 17
    with pytest.raises(SnapshotError) as err:
        load_json(dumps(snapshot(ADA, version="x")))
    assert err.value.version is None


def test_snapshot_bad_member_after_many_good_names_its_index() -> None:
    good = [member(id=f"m-{i}", badges=[f"{i:08X}"]) for i in range(50)]
    with pytest.raises(SnapshotError, match=r"members\[50\] \(id 'bad'\): status"):
        load_json(dumps(snapshot(*good, member(id="bad", badges=[], status="?"))))


def test_snapshot_not_utf8_refused() -> None:
    with pytest.raises(SnapshotError, match="not UTF-8"):
        load_json(b'{"v": 1, "name": "\xff"}')


def test_snapshot_larger_than_32_mib_refused_unparsed() -> None:
    data = b" " * (MAX_BYTES + 1)  # all whitespace: parsing it would say "not an object"
    with pytest.raises(SnapshotError, match="larger than 32 MiB; refused unparsed"):
        load_json(data)
    with pytest.raises(SnapshotError, match="larger than 32 MiB"):
        load_csv(data.decode(), version=1)


def test_snapshot_exactly_32_mib_is_parsed() -> None:
    text = dumps(snapshot())
    with pytest.raises(SnapshotError, match="must be a JSON object"):
        load_json(" " * (MAX_BYTES - len(text)) + "x" + text[1:])


# --- signatures -------------------------------------------------------------------------------

def test_snapshot_signed_accepted_with_public_key() -> None:
    snap = load_json(dumps(sign(snapshot(ADA, GRACE), KEY)), PUBLIC)
    assert snap.count == 2 and len(list(snap.members())) == 2


@pytest.mark.parametrize("check_members", [True, False], ids=["checked", "unchecked"])
def test_snapshot_signed_member_with_a_key_given_twice_refused(check_members: bool) -> None:
    """Its last value gives the signed bytes, so the signature holds; the list is still refused."""
    text = dumps(sign(snapshot(ADA, GRACE), KEY)).replace('"status": "active"', '"status": "x", "status": "active"')
    with pytest.raises(SnapshotError, match=r"^members\[0\] \(id 'm-0001'\): status: appears twice in one object$"):
        list(load_json(text, PUBLIC, check_members=check_members).members())


def test_snapshot_signed_list_longer_than_a_signing_batch() -> None:
    people = [{**GRACE, "id": f"m-{n}", "badges": [f"{n:08X}"]} for n in range(1234)]
    for check_members in (True, False):
        snap = load_json(dumps(sign(snapshot(*people), KEY)), PUBLIC, check_members=check_members)
        assert [m.id for m in snap.members()] == [p["id"] for p in people]
    tampered = dumps(sign(snapshot(*people), KEY)).replace('"m-1233"', '"m-1234"')
    with pytest.raises(SnapshotError, match="bad signature"):
        load_json(tampered, PUBLIC, check_members=False)


def test_snapshot_signature_covers_members_still_pending_in_a_batch() -> None:
    """_Signed encodes members a batch at a time; verify() must see the unfinished batch."""
    from agent.members.snapshot import _Signed

    signed = sign(snapshot(ADA, GRACE), KEY)
    pending = _Signed()
    for member in signed["members"]:
        pending.add(member)
    pending.verify(signed, KEY.public_key())  # raises on a bad signature
    assert bytes(pending.members) == canonical_json({k: v for k, v in signed.items() if k != "sig"})


def test_snapshot_signature_independent_of_layout() -> None:
    signed = sign(snapshot(ADA, GRACE), KEY)
    reordered = {k: signed[k] for k in ["sig", "members", "version", "generated_at", "v"]}
    assert load_json(json.dumps(reordered, indent=2), PUBLIC).count == 2
    assert load_json(json.dumps(signed, ensure_ascii=True), KEY.public_key()).count == 2


@pytest.mark.parametrize("tamper, message", [
    (lambda o: {k: v for k, v in o.items() if k != "sig"}, "unsigned"),
    (lambda o: {**o, "version": 43}, "bad signature"),
    (lambda o: {**o, "generated_at": None}, "bad signature"),
    (lambda o: {**o, "members": [{**ADA, "roles": ["staff", "admin"]}, GRACE]}, "bad signature"),
    (lambda o: {**o, "members": [ADA]}, "bad signature"),
    (lambda o: {**o, "members": [GRACE, ADA]}, "bad signature"),
    (lambda o: {**o, "sig": sign(o, OTHER_KEY)["sig"]}, "bad signature"),
    (lambda o: {**o, "sig": "%%%"}, "not base64"),
    (lambda o: {**o, "members": [{**ADA, "status": "nope"}, GRACE]}, "bad signature"),
], ids=["unsigned", "version", "generated_at", "member-field", "member-removed", "reordered",
        "other-key", "non-base64", "invalid-and-tampered"])
def test_snapshot_tampered_signed_refused(tamper, message: str) -> None:
    signed = sign(snapshot(ADA, GRACE), KEY)
    with pytest.raises(SnapshotError, match=message) as err:
        load_json(dumps(tamper(signed)), PUBLIC)
    assert err.value.version in (42, 43)


def test_snapshot_unsigned_accepted_without_public_key() -> None:
    assert load_json(dumps(sign(snapshot(ADA), KEY))).count == 1


def test_snapshot_bad_public_key_refused() -> None:
    with pytest.raises(SnapshotError, match="members.public_key: the public key is not base64"):
        load_json(dumps(sign(snapshot(ADA), KEY)), "not a key!")


def test_snapshot_signed_bytes_are_canonical_json() -> None:
    signed = sign(snapshot(ADA), KEY)
    # cryptography's verify raises InvalidSignature unless these are exactly the signed bytes
    assert KEY.public_key().verify(base64.b64decode(signed["sig"]), canonical_json(snapshot(ADA))) is None


# --- bad CSV ----------------------------------------------------------------------------------

def csv_row(**changes: str) -> str:
    cells = {"id": "m-7", "name": "Ada", "badges": "04A1B2C3", "status": "active", "expires": "",
             "roles": "", "inductions": "laser", **changes}
    return ",".join(cells.values()) + "\n"


BAD_CSV = [
    ("", "members.csv: empty: no header row"),
    ("id,name,badges,status,expires,roles\n", r"members.csv: no members \(only a header\)"),
    (CSV_HEADER.replace("status", "state") + CSV_ADA,
     "members.csv row 1: no 'status' column .*found id, name, badges, state, expires, roles, inductions"),
    ("id,status,badges,ID\n" + CSV_ADA, "members.csv row 1: column 'id' appears twice"),
    (CSV_HEADER + CSV_ADA + "m-2,Bob\n", "members.csv row 3: 2 cells; the header has 7"),
    (CSV_HEADER + CSV_ADA + csv_row(status="banned"), r"members.csv row 3 \(id 'm-7'\): status: 'banned'"),
    (CSV_HEADER + csv_row(id=""), r"members.csv row 2 \(id ''\): id: must be a non-empty string"),
    (CSV_HEADER + csv_row(badges="04A1B2"), r"row 2 \(id 'm-7'\): badges: badge '04A1B2' has 6 hex digits"),
    (CSV_HEADER + csv_row(expires="2027-13-01"), r"row 2 \(id 'm-7'\): expires: '2027-13-01' is not a real date"),
    (CSV_HEADER + csv_row(expires="next year"), r"row 2 \(id 'm-7'\): expires: 'next year' is not a date"),
    (CSV_HEADER + csv_row(inductions="laser:31/13/2027"), r"row 2 \(id 'm-7'\): inductions.laser: '31/13/2027' is not"),
    (CSV_HEADER + csv_row(inductions=":2027-01-01"), r"row 2 \(id 'm-7'\): inductions: ':2027-01-01' has no name"),
    (CSV_HEADER + csv_row(inductions="laser laser:2027-01-01"), r"inductions: 'laser' is listed twice"),
    (CSV_HEADER + CSV_ADA + "\n" + csv_row(id="m-0001"), r"members.csv row 4 \(id 'm-0001'\): id: appears more than once"),
    (CSV_HEADER + CSV_ADA + csv_row(badges="04a1b2c3d4e5f6"),
     r"row 3 \(id 'm-7'\): badges: 04A1B2C3D4E5F6 already belongs to member 'm-0001'"),
    (CSV_HEADER + 'm-7,"Ada\n', "members.csv row 2: not valid CSV"),
]


@pytest.mark.parametrize("text, message", BAD_CSV, ids=[m for _, m in BAD_CSV])
def test_snapshot_bad_csv_refused_naming_the_row(text: str, message: str) -> None:
    with pytest.raises(SnapshotError, match=message):
        load_csv(text, version=5, source="members.csv")


@pytest.mark.parametrize("version", [0, -1, True, "5", None])
def test_snapshot_csv_bad_version_refused(version: Any) -> None:
    with pytest.raises(SnapshotError, match="must be a positive integer"):
        load_csv(CSV_HEADER + CSV_ADA, version=version)


# --- files ------------------------------------------------------------------------------------

def test_snapshot_load_file_json_and_csv(tmp_path: Path) -> None:
    (tmp_path / "list.json").write_text(dumps(snapshot(ADA)))
    (tmp_path / "list.CSV").write_text(CSV_HEADER + CSV_ADA)
    assert load_file(tmp_path / "list.json").version == 42
    assert load_file(tmp_path / "list.CSV", version=8).version == 8
    before = int(time.time() * 1000)  # a list without a version: now in milliseconds, as every publish
    assert before <= load_file(tmp_path / "list.CSV").version <= int(time.time() * 1000)


def test_snapshot_load_file_signed(tmp_path: Path) -> None:
    path = tmp_path / "list.json"
    path.write_bytes(to_json(load_json(dumps(snapshot(ADA))), KEY))
    assert load_file(path, public_key=PUBLIC).count == 1


@pytest.mark.parametrize("name, content, kwargs, message", [
    ("list.json", dumps(snapshot(member(status="x"))), {}, r"{dir}/list.json: members\[0\] \(id 'm-0001'\): status"),
    ("list.json", "{", {}, "{dir}/list.json: not valid JSON at line 1 column 2"),
    ("list.json", dumps(snapshot(ADA)), {"public_key": PUBLIC}, "{dir}/list.json: unsigned"),
    ("list.json", dumps(snapshot(ADA)), {"version": 3}, "{dir}/list.json: a JSON list carries its own version"),
    ("list.csv", CSV_HEADER + csv_row(status="x"), {}, r"{dir}/list.csv row 2 \(id 'm-7'\): status"),
    ("list.csv", CSV_HEADER + CSV_ADA, {"public_key": PUBLIC}, "{dir}/list.csv: unsigned"),
    ("list.csv", b"id,name\xff", {}, "{dir}/list.csv: not UTF-8"),
    ("list.txt", "", {}, "{dir}/list.txt: unknown member list format '.txt'"),
    ("missing.json", None, {}, "{dir}/missing.json: cannot read: No such file"),
])
def test_snapshot_load_file_errors_name_the_file(tmp_path: Path, name: str, content: Any, kwargs: dict,
                                                message: str) -> None:
    path = tmp_path / name
    if isinstance(content, str):
        path.write_text(content)
    elif content is not None:
        path.write_bytes(content)
    with pytest.raises(SnapshotError, match=message.format(dir=tmp_path)):
        load_file(path, **kwargs)


def test_snapshot_load_file_too_large_refused_before_reading(tmp_path: Path) -> None:
    path = tmp_path / "big.json"
    with open(path, "wb") as f:
        f.truncate(MAX_BYTES + 1)  # sparse: reading it would be the only way to find the NULs
    with pytest.raises(SnapshotError, match=f"{path}: 32.0 MiB, larger than 32 MiB; refused unparsed"):
        load_file(path)


# --- memory -----------------------------------------------------------------------------------

def big_list(count: int) -> bytes:
    """A `count`-member list: 2 badges and 3 inductions each (about 21 MB for 100,000)."""
    members = (dumps({"id": f"m-{i:06d}", "name": f"Member Number {i}", "badges": [f"04{i:012X}", f"{i:08X}"],
                      "status": "active", "expires": "2027-06-30", "roles": ["member"],
                      "inductions": {"laser": None, "cnc": "2027-01-31", "printer": None}})
               for i in range(count))
    return ('{"v":1,"version":7,"generated_at":"2026-11-25T09:00:00Z","members":[' + ",".join(members) + "]}").encode()


@pytest.mark.slow
def test_snapshot_100k_members_peak_memory_bounded() -> None:
    """Signed, the heaviest path: the canonical bytes are built too (unsigned peaks ~16 MiB lower)."""
    data = to_json(load_json(big_list(100_000)), KEY)
    assert len(data) > 20_000_000
    tracemalloc.start()
    try:
        started = time.perf_counter()
        snap = load_json(data, PUBLIC)
        count = sum(1 for _ in snap.members())
        elapsed = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    print(f"100k signed members: peak {peak / 2**20:.1f} MiB, "
          f"{elapsed:.1f} s under tracemalloc")
    assert count == snap.count == 100_000
    assert peak < 120 * 2**20


def test_snapshot_unchecked_load_validates_each_member_as_it_is_read():
    good = {"id": "m-1", "name": "A", "badges": ["04A1B2C3"], "status": "active", "expires": None,
            "roles": [], "inductions": {}}
    for bad, message in (({**good, "id": "m-2", "expires": "tomorrow"}, "expires"),
                         ({**good, "badges": ["DEADBEEF"]}, "id")):
        data = json.dumps({"v": 1, "version": 3, "members": [good, bad]}).encode()
        snapshot = load_json(data, check_members=False)
        assert snapshot.count == 2 and snapshot.version == 3
        reader = snapshot.members()
        assert next(reader).id == "m-1"
        with pytest.raises(SnapshotError, match=message) as info:
            next(reader)
        assert str(info.value).startswith("members[1]") and info.value.version == 3


# --- EM4100 printed numbers ---------------------------------------------------------------------

def test_snapshot_csv_ten_decimal_digits_without_a_prefix_is_an_error_naming_both_readings() -> None:
    """The reproduced defect: the number printed on an EM4100 card, typed into the
    spreadsheet, was taken as 10 hex digits without a word, and every tap refused."""
    text = CSV_HEADER + csv_row(badges="0004567890")
    with pytest.raises(SnapshotError) as caught:
        load_csv(text, version=5, source="members.csv")
    message = str(caught.value)
    assert message.startswith("members.csv row 2 (id 'm-7'): badges: ")
    assert "hex:0004567890" in message and "em:0004567890" in message  # both readings, and how to choose
    assert "0045B352" in message  # what the printed number means on the tag


def test_snapshot_csv_ten_digits_too_large_for_a_printed_number_still_asks_for_hex() -> None:
    with pytest.raises(SnapshotError, match=r"row 2 \(id 'm-7'\): badges: 9999999999 .*at most 4294967295.*"
                                            r"write hex:9999999999"):
        load_csv(CSV_HEADER + csv_row(badges="9999999999"), version=5, source="members.csv")


@pytest.mark.parametrize("cell, badge", [
    ("em:0004567890", "em:0004567890"),
    ("EM:4567890", "em:0004567890"),           # a spreadsheet that dropped the leading zeros
    ('"em:069,46930"', "em:069,46930"),         # facility code, card number: quoted for the comma
    ('"em:69,46930"', "em:069,46930"),
    ("hex:0004567890", "0004567890"),           # the same digits, said to be hex
    ("HEX:04:a1:b2:c3", "04A1B2C3"),
    ("0A0045B352", "0A0045B352"),               # 10 hex digits with a letter are not ambiguous
])
def test_snapshot_csv_em_and_hex_badges(cell: str, badge: str) -> None:
    (member,) = load_csv(CSV_HEADER + csv_row(badges=cell), version=5).members()
    assert member.badges == (badge,)


@pytest.mark.parametrize("cell, message", [
    ("em:4294967296", "at most 4294967295"),
    ('"em:256,00001"', "facility code is 0-255"),
    ('"em:001,65536"', "card number 0-65535"),
    ("em:", "is not an EM4100 number"),
    ("em:12345678901", "is not an EM4100 number"),
    ("em:0x45B352", "is not an EM4100 number"),
    ("hex:0004567", "has 7 hex digits"),
])
def test_snapshot_bad_em_and_hex_badges_name_the_row(cell: str, message: str) -> None:
    with pytest.raises(SnapshotError, match=rf"members.csv row 2 \(id 'm-7'\): badges: .*{message}"):
        load_csv(CSV_HEADER + csv_row(badges=cell), version=5, source="members.csv")


def test_snapshot_json_em_badges_are_read_in_normal_form_and_round_trip() -> None:
    ada = {**ADA, "badges": ["em:0004567890", "em:69,46930", "hex:0004567890"]}
    snap = load_json(dumps(snapshot(ada)))
    (member,) = snap.members()
    assert member.badges == ("em:0004567890", "em:069,46930", "0004567890")
    assert list(load_json(to_json(snap)).members()) == [member]
    # in normal form a member takes the fast path and reads the same
    fast = load_json(dumps(snapshot({**ada, "badges": list(member.badges)})))
    assert list(fast.members()) == [member]


@pytest.mark.parametrize("first, second", [
    ("0A0045B352", "em:0004567890"),   # a hex read and the printed number of the same tag
    ("em:0004567890", "0A0045B352"),   # in either order
    ("em:0004567890", "em:069,45906"),  # 0x0045B352: facility 0x45 = 69, card 0xB352 = 45906
    ("0A0045B352", "em:069,45906"),
    ("em:069,45906", "FF0045B352"),
    ("em:0004567890", "em:0004567890"),
])
def test_snapshot_one_tag_under_two_members_is_refused(first: str, second: str) -> None:
    ada, grace = {**ADA, "badges": [first]}, {**GRACE, "badges": [second]}
    with pytest.raises(SnapshotError, match=r"members\[1\] \(id 'm-0002'\): badges: .*(is the same tag as .* "
                                            r"of member 'm-0001'|already belongs to member 'm-0001')"):
        load_json(dumps(snapshot(ada, grace)))


@pytest.mark.parametrize("first, second", [
    ("0A0045B352", "em:0004567891"), ("em:0004567890", "em:069,45907"), ("em:0004567890", "em:4571986"),
])
def test_snapshot_printed_numbers_of_different_tags_may_belong_to_two_members(first: str, second: str) -> None:
    ada, grace = {**ADA, "badges": [first]}, {**GRACE, "badges": [second]}
    assert load_json(dumps(snapshot(ada, grace))).count == 2


def test_snapshot_one_member_may_list_a_tag_and_its_printed_number() -> None:
    (member,) = load_json(dumps(snapshot({**ADA, "badges": ["0A0045B352", "em:0004567890"]}))).members()
    assert member.badges == ("0A0045B352", "em:0004567890")


def test_snapshot_tags_that_differ_only_in_their_first_byte_may_belong_to_two_members() -> None:
    ada, grace = {**ADA, "badges": ["0A0045B352"]}, {**GRACE, "badges": ["0B0045B352"]}
    assert load_json(dumps(snapshot(ada, grace))).count == 2
    # but then the printed number cannot say which of the two it means
    carol = {**ADA, "id": "m-0003", "badges": ["em:0004567890"]}
    with pytest.raises(SnapshotError, match="is the same tag as"):
        load_json(dumps(snapshot(ada, grace, carol)))


def test_snapshot_member_names_for_people_to_read() -> None:
    assert member_names(dumps(snapshot(ADA, {**GRACE, "name": ""}))) == {"m-0001": "Ada Lovelace"}
    assert member_names(dumps(snapshot())) == {}
    assert member_names(b"not a list") is None and member_names(dumps(snapshot({"id": 5}))) is None


# --- secure cards: badges accepted by their UID alone -------------------------------------------

def test_snapshot_uid_badges_in_json_and_csv() -> None:
    member = {**ADA, "badges": ["uid:04a1b2c3d4e5f6", "UID: 04:A1:B2:C4", "04A1B2C3D4E5F7"]}
    (ada,) = load_json(dumps(snapshot(member))).members()
    assert ada.badges == ("uid:04A1B2C3D4E5F6", "uid:04A1B2C4", "04A1B2C3D4E5F7")
    (ada,) = load_csv(CSV_HEADER + CSV_ADA.replace("04A1B2C3D4E5F6", "uid:04a1b2c3d4e5f6 04A1B2C3D4E5F7"), 1).members()
    assert ada.badges == ("uid:04A1B2C3D4E5F6", "04A1B2C3D4E5F7")
    hashed = "uid:" + "AB" * 32
    (ada,) = load_json(dumps(snapshot({**ADA, "badges": [hashed.lower()]}))).members()
    assert ada.badges == (hashed,)


def test_snapshot_uid_badges_round_trip_through_to_json() -> None:
    snap = load_json(dumps(snapshot({**ADA, "badges": ["uid:04a1b2c3d4e5f6"]})))
    assert json.loads(to_json(snap))["members"][0]["badges"] == ["uid:04A1B2C3D4E5F6"]


@pytest.mark.parametrize("members, message", [
    ([{**ADA, "badges": ["uid:xyz"]}], "members[0] (id 'm-0001'): badges: badge 'xyz' is not hexadecimal"),
    ([{**ADA, "badges": ["uid:"]}], "members[0] (id 'm-0001'): badges: badge '' is not hexadecimal"),
    ([{**ADA, "badges": ["uid:uid:04A1B2C3"]}], "badges: 'uid:uid:04A1B2C3' has two uid: prefixes"),
    ([{**ADA, "badges": ["04A1B2C3D4E5F6", "uid:04A1B2C3D4E5F6"]}], "badges: 04A1B2C3D4E5F6 is listed twice"),
    ([ADA, {**GRACE, "badges": ["uid:04A1B2C3D4E5F6"]}],
     "members[1] (id 'm-0002'): badges: 04A1B2C3D4E5F6 already belongs to member 'm-0001'"),
    ([{**ADA, "badges": ["uid:04A1B2C3D4E5F6"]}, {**GRACE, "badges": ["04A1B2C3D4E5F6"]}],
     "already belongs to member 'm-0001'"),
])
@pytest.mark.parametrize("check_members", [True, False])
def test_snapshot_bad_uid_badges_refused(members: list, message: str, check_members: bool) -> None:
    with pytest.raises(SnapshotError, match=re.escape(message)):
        list(load_json(dumps(snapshot(*members)), check_members=check_members).members())
