"""Member lists: parse and validate a JSON snapshot or a CSV file, in bounded memory.

A 100,000-member list is about 21 MB of JSON and the agent may run on a
512 MB Pi Zero, so nothing here holds the whole decoded list: the members
array is decoded one member at a time (json's `raw_decode` over the text),
loading keeps only the ids and badges seen (to refuse duplicates), and
`Snapshot.members()` decodes the text again, yielding one Member at a time.
The updater process, which writes the members all-or-nothing, skips the
first walk where it can (`load_json(check_members=False)`).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import json
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from agent.core.model import (
    EM_PREFIX,
    EM_READ_LENGTH,
    BadBadge,
    Member,
    badge_identity,
    em_bits,
    is_normal_list_badge,
    normalise_list_badge,
)
from agent.core.timespec import parse_rfc3339, rfc3339
from agent.members.table import (
    COLUMNS,
    DateOrder,
    Table,
    TableError,
    member_objects,
    read_csv,
    read_xlsx,
)
from agent.members.version import VersionError, check_version, next_version

if TYPE_CHECKING:  # signing (and cryptography, 6 MB of RSS) is imported only where a key is used
    from cryptography.hazmat.primitives.asymmetric.ed25519 import (
        Ed25519PrivateKey,
        Ed25519PublicKey,
    )

MAX_BYTES = 32 * 1024 * 1024
FORMAT_VERSION = 1
STATUSES = ("active", "suspended")
MEMBER_KEYS = frozenset(COLUMNS)
TOP_KEYS = frozenset({"v", "version", "generated_at", "members", "sig"})
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_WS = re.compile(r"[ \t\n\r]*")
_SEPARATOR = re.compile(r"[ \t\n\r]*([,\]])[ \t\n\r]*")  # between members, or the array's end


class SnapshotError(ValueError):
    """A member list that cannot be used; the message says where and what is wrong."""

    def __init__(self, message: str, version: int | None = None) -> None:
        super().__init__(message)
        self.version = version


@dataclass(frozen=True)
class Snapshot:
    """A validated member list. `members()` yields its members lazily, as often as asked."""

    version: int
    generated_at: str | None
    count: int | None  # None when the list is read in one pass (see load_json)
    _members: Callable[[], Iterator[Member]] = field(repr=False, compare=False)
    warnings: tuple[str, ...] = ()  # what a table had that is not a member field (ignored)

    def members(self) -> Iterator[Member]:
        return self._members()


# --- one member ---------------------------------------------------------------------------

@functools.lru_cache(maxsize=4096)  # a list repeats the same few expiry dates many times
def _iso_date(text: str) -> dt.date:
    if not _DATE.fullmatch(text):
        raise ValueError(f"{text!r} is not a date (YYYY-MM-DD) or null")
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a real date") from None


def _date(value: Any, what: str, key: str = "") -> dt.date | None:
    if value is None:
        return None
    try:
        if not isinstance(value, str):
            raise ValueError(f"{value!r} is not a date (YYYY-MM-DD) or null")
        return _iso_date(value)
    except ValueError as err:
        raise ValueError(f"{what}{'.' + key if key else ''}: {err}") from None


def _is_text(value: Any) -> bool:
    """A str that SQLite and MQTT can carry: UTF-8 encodable (JSON's \\ud800 escapes are not)."""
    if type(value) is str and value.isascii():
        return True
    if not isinstance(value, str):
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _strings(value: Any, what: str) -> list[str]:
    if not isinstance(value, list):
        raise ValueError(f"{what}: must be a list of non-empty strings")
    for item in value:
        if not (item and _is_text(item)):
            raise ValueError(f"{what}: must be a list of non-empty strings")
    return value


def _member(raw: Any) -> Member:
    """A Member from its JSON shape; ValueError names the field. Ids/badges across members: _Unique."""
    if not isinstance(raw, dict):
        raise ValueError(f"must be an object, not {type(raw).__name__}")
    if not MEMBER_KEYS.issuperset(raw):
        unknown = raw.keys() - MEMBER_KEYS
        raise ValueError(f"{min(unknown)}: unknown field (a member has {', '.join(COLUMNS)})")
    for key in ("id", "status"):
        if key not in raw:
            raise ValueError(f"{key}: missing (it is required)")
    member_id, name, status = raw["id"], raw.get("name", ""), raw["status"]
    if not _is_text(member_id) or not member_id.strip():
        raise ValueError("id: must be a non-empty string")
    if not _is_text(name):
        raise ValueError("name: must be a string of valid Unicode")
    if status not in STATUSES:
        raise ValueError(f"status: {status!r} is not one of {', '.join(STATUSES)}")
    badges = []
    for badge in _strings(raw.get("badges", []), "badges"):
        try:
            badge = normalise_list_badge(badge)
        except BadBadge as err:
            raise ValueError(f"badges: {err}") from None
        if badge_identity(badge) in map(badge_identity, badges):
            raise ValueError(f"badges: {badge_identity(badge)} is listed twice")
        badges.append(badge)
    return Member(
        id=member_id,
        name=name,
        status=status,
        expires=_date(raw.get("expires"), "expires"),
        roles=frozenset(_strings(raw.get("roles", []), "roles")),
        inductions=_inductions(raw.get("inductions", {})),
        badges=tuple(badges),
    )


def _inductions(value: Any) -> Mapping[str, dt.date | None]:
    if type(value) is tuple:  # a decoded JSON object (see _DECODER)
        try:
            hash(value)
        except TypeError:  # a list inside: not valid, and no key for the cache
            value = _object(value)
        else:
            return _json_inductions(value)
    if not isinstance(value, dict):
        raise ValueError("inductions: must be an object of induction name -> expiry date or null")
    for induction in value:
        if not induction or not _is_text(induction):
            raise ValueError(f"inductions: {induction!r} is not an induction name")
    return {k: v if v is None else _date(v, "inductions", k) for k, v in value.items()}


@functools.lru_cache(maxsize=1024)  # a list repeats the same few induction maps many times
def _json_inductions(pairs: tuple[tuple[str, Any], ...]) -> Mapping[str, dt.date | None]:
    """The inductions of a decoded JSON object, read-only: the members that have them share them."""
    return MappingProxyType(_inductions(_object(pairs)))


def _member_json(member: Member) -> dict[str, Any]:
    """The documented JSON shape of a member (the inverse of _member)."""
    return {
        "id": member.id,
        "name": member.name,
        "badges": list(member.badges),
        "status": member.status,
        "expires": member.expires.isoformat() if member.expires else None,
        "roles": sorted(member.roles),
        "inductions": {k: v.isoformat() if v else None for k, v in member.inductions.items()},
    }


class _Unique:
    """Ids and badges seen so far: an id appears once, a badge belongs to one member, and so
    does a tag, whether it is written as its UID or as its printed number."""

    def __init__(self) -> None:
        self.ids: set[str] = set()
        self.badges: dict[str, str] = {}
        self._tags: _SameTag | None = None  # made at the first em: badge; lists without one pay nothing

    def add(self, member: Member) -> None:
        if member.id in self.ids:
            raise ValueError("id: appears more than once in the list")
        self.ids.add(member.id)
        for badge in member.badges:
            card = badge_identity(badge)
            owner = self.badges.setdefault(card, member.id)
            if owner != member.id:
                raise ValueError(f"badges: {card} already belongs to member {owner!r}")
            if self._tags is None and card.startswith(EM_PREFIX):
                self._tags = _SameTag()
                for seen, seen_owner in self.badges.items():
                    if seen != card:
                        self._tags.add(seen, seen_owner)
            if self._tags is not None:
                self._tags.add(card, member.id)


_LOW32, _LOW24 = 0xFFFFFFFF, 0xFFFFFF


class _SameTag:
    """Badges that can name one EM4100 tag: a 5-byte UID, the printed number of its low 32
    bits, and the facility code and card number of its low 24 bits. Two of them under two
    members would make a tap's member depend on how the list was written."""

    def __init__(self) -> None:
        # low bits -> up to two (owner, badge) of distinct owners, for the badges an em: badge
        # would match (two UIDs that differ in their first byte may have two owners)
        self._covered32: dict[int, list[tuple[str, str]]] = {}
        self._covered24: dict[int, list[tuple[str, str]]] = {}
        # the em: badges by their value: (owner, badge)
        self._em32: dict[int, tuple[str, str]] = {}
        self._em24: dict[int, tuple[str, str]] = {}

    def add(self, badge: str, owner: str) -> None:
        """Index `badge` of `owner`; ValueError when another member has a badge of the same tag."""
        bits = em_bits(badge)
        if bits is None:
            if len(badge) != EM_READ_LENGTH:
                return
            value = int(badge, 16)
            self._check(badge, owner, self._em32.get(value & _LOW32), self._em24.get(value & _LOW24))
            self._cover(self._covered32, value & _LOW32, owner, badge)
            self._cover(self._covered24, value & _LOW24, owner, badge)
        elif bits[1] == 32:
            value = bits[0]
            self._check(badge, owner, *self._covered32.get(value, ()), self._em24.get(value & _LOW24))
            self._em32[value] = (owner, badge)
            self._cover(self._covered24, value & _LOW24, owner, badge)
        else:
            self._check(badge, owner, *self._covered24.get(bits[0], ()))
            self._em24[bits[0]] = (owner, badge)

    @staticmethod
    def _check(badge: str, owner: str, *others: tuple[str, str] | None) -> None:
        for other in others:
            if other is not None and other[0] != owner:
                raise ValueError(f"badges: {badge} is the same tag as {other[1]} of member {other[0]!r}")

    @staticmethod
    def _cover(index: dict[int, list[tuple[str, str]]], bits: int, owner: str, badge: str) -> None:
        holders = index.setdefault(bits, [])
        if len(holders) < 2 and all(o != owner for o, _ in holders):
            holders.append((owner, badge))


# --- JSON -----------------------------------------------------------------------------------

def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed in a member list")


# JSON objects decode to tuples of (key, value) pairs: the C decoder builds them
# without calling back into Python for each object (a Python object_pairs_hook
# took a third of a 100,000-member apply), and a key given twice stays visible.
_DECODER = json.JSONDecoder(object_pairs_hook=tuple, parse_constant=_reject_constant)
# Objects as dicts, built in C, a key given twice kept once: only for the first
# pass over an unchecked list (counting, and its signature), whose members are
# validated from _DECODER's pairs when members() reads them, before any is used.
_PLAIN_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


def _object(pairs: tuple[tuple[str, Any], ...]) -> dict[str, Any]:
    """The dict of a decoded object; a key given twice is an error, not last-one-wins."""
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        duplicate = next(k for k, _ in pairs if k in seen or seen.add(k))
        raise ValueError(f"{duplicate}: appears twice in one object")
    return obj


def _plain(value: Any) -> Any:
    """A decoded value with every object, however deep, as a dict (as json.loads gives it)."""
    if type(value) is tuple:
        return {k: _plain(v) for k, v in _object(value).items()}
    if type(value) is list:
        return [_plain(v) for v in value]
    return value


# The order of a member's fields as `to_json` (and so `fabpass members publish`) writes them.
_LAYOUT = ("id", "name", "badges", "status", "expires", "roles", "inductions")


@functools.lru_cache(maxsize=1024)  # a list repeats the same few role sets many times
def _json_roles(roles: tuple[Any, ...]) -> frozenset[str]:
    return frozenset(_strings(list(roles), "roles"))


def _laid_out_member(pairs: tuple[tuple[str, Any], ...]) -> Member | None:
    """The common case of _member, at a fraction of its cost: every field given, in
    _LAYOUT's order, the badges already normal. Makes the same checks on these
    values; returns None for anything else, which _member then reads and explains."""
    if len(pairs) != len(_LAYOUT):
        return None
    (k0, member_id), (k1, name), (k2, badges), (k3, status), (k4, expires), (k5, roles), (k6, inductions) = pairs
    if (k0, k1, k2, k3, k4, k5, k6) != _LAYOUT or status not in STATUSES:
        return None
    if not (_is_text(member_id) and member_id.strip() and _is_text(name)):
        return None
    if type(badges) is not list or not all(map(is_normal_list_badge, badges)) or len(set(badges)) != len(badges):
        return None
    if type(roles) is not list or type(inductions) is not tuple or not (expires is None or type(expires) is str):
        return None
    try:  # the memos raise TypeError for an unhashable (invalid) value, ValueError for a bad one
        return Member(member_id, name, status, None if expires is None else _iso_date(expires),
                      _json_roles(tuple(roles)), _json_inductions(inductions), tuple(badges))
    except (TypeError, ValueError):
        return None


def _json_member(raw: Any) -> Member:
    """A Member from its decoded JSON. Only the member and its inductions are
    objects in a valid one, and _inductions takes its pairs as they are; for a
    member that is not valid, the error is found again on the plain values,
    whose reprs it shows."""
    if type(raw) is not tuple:
        return _member(raw)  # not an object: the error names its type
    member = _laid_out_member(raw)
    if member is not None:
        return member
    try:
        return _member(_object(raw))
    except ValueError:
        pass
    try:
        plain = _plain(raw)
    except RecursionError:  # the decoder went deeper than _plain can
        raise ValueError("nested too deeply") from None
    return _member(plain)


def _where_json(index: int, raw: Any) -> str:
    member_id = dict(raw).get("id") if type(raw) is tuple else None
    return f"members[{index}]" + (f" (id {member_id!r})" if isinstance(member_id, str) else "")


def _skip(text: str, pos: int) -> int:
    return _WS.match(text, pos).end()


def _expect(text: str, pos: int, char: str, what: str) -> int:
    if not text.startswith(char, pos):
        raise json.JSONDecodeError(f"expected {what}", text, pos)
    return _skip(text, pos + 1)


def _raw_members(text: str, pos: int, end: list[int] | None = None,
                 decoder: json.JSONDecoder = _DECODER) -> Iterator[Any]:
    """Decode the array at text[pos] item by item. Appends the offset after `]` to `end`."""
    pos = _expect(text, pos, "[", "'['")
    if text.startswith("]", pos):
        pos += 1
    else:
        while True:
            item, pos = decoder.raw_decode(text, pos)
            yield item
            separator = _SEPARATOR.match(text, pos)
            if separator is None:
                raise json.JSONDecodeError("expected ',' or ']' after a member", text, _skip(text, pos))
            pos = separator.end()
            if separator.group(1) == "]":
                break
    if end is not None:
        end.append(pos)


class _TopLevel:
    """The snapshot's top-level object, read in order. `keys()` reads pairs into
    `fields` up to the members array and returns its offset, or None at the
    object's end; the caller reads the array, and `after(end)` goes on past it."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.fields: dict[str, Any] = {}
        self.members_at: int | None = None
        pos = _skip(text, 0)
        if not text.startswith("{", pos):
            raise SnapshotError("a member snapshot must be a JSON object ({\"v\": 1, …})")
        self.pos = _skip(text, pos + 1)
        self.closed = text.startswith("}", self.pos)

    def keys(self) -> int | None:
        text = self.text
        while not self.closed:
            if not text.startswith('"', self.pos):
                raise json.JSONDecodeError("expected a key in double quotes", text, self.pos)
            key, pos = _DECODER.raw_decode(text, self.pos)
            if key in self.fields or (key == "members" and self.members_at is not None):
                raise SnapshotError(f"{key}: appears twice at the top level", _version(self.fields))
            pos = _expect(text, _skip(text, pos), ":", "':' after a key")
            if key == "members" and text.startswith("[", pos):
                self.members_at = self.pos = pos
                return pos
            value, pos = _DECODER.raw_decode(text, pos)
            self.fields[key] = _plain(value)
            self.after(pos)
        end = _skip(text, self.pos + 1)
        if end != len(text):
            raise json.JSONDecodeError("extra data after the snapshot", text, end)
        return None

    def after(self, pos: int) -> None:
        """Go on after a value that ends at `pos`."""
        pos = _skip(self.text, pos)
        self.closed = self.text.startswith("}", pos)
        self.pos = pos if self.closed else _expect(self.text, pos, ",", "',' or '}'")


def _version(fields: dict[str, Any]) -> int | None:
    """The version when it is a valid one, for the messages that name it."""
    try:
        return check_version(fields.get("version"))
    except VersionError:
        return None


def _check_top(fields: dict[str, Any], members_at: int | None) -> None:
    version = _version(fields)
    unknown = sorted(set(fields) - TOP_KEYS)
    if unknown:
        raise SnapshotError(f"{unknown[0]}: unknown top-level key (a snapshot has v, version, "
                            "generated_at, members and optionally sig)", version)
    if fields.get("v") != FORMAT_VERSION or isinstance(fields.get("v"), bool):
        raise SnapshotError(f"v: {fields.get('v')!r} is not a snapshot format this agent reads "
                            f"(expected {FORMAT_VERSION})", version)
    if version is None:
        try:
            check_version(fields.get("version"))
        except VersionError as err:
            raise SnapshotError(f"version: {str(err).removeprefix('version ')}") from None
    generated_at = fields.get("generated_at")
    if generated_at is not None and not _is_rfc3339(generated_at):
        raise SnapshotError(f"generated_at: {generated_at!r} is not an RFC 3339 time with its offset "
                            "(such as 2026-11-25T09:00:00Z) or null", version)
    if members_at is None:
        what = "missing" if "members" not in fields else "must be a list"
        raise SnapshotError(f"members: {what}", version)


def _is_rfc3339(value: Any) -> bool:
    try:
        parse_rfc3339(value)
    except ValueError:
        return False
    return True


class _Signed:
    """The canonical bytes of the snapshot without `sig`, built a batch of members at a time
    (one encoder call per batch gives the bytes of each member joined by ",")."""

    BATCH = 500

    def __init__(self) -> None:
        self.members = bytearray()
        self._pending: list[Any] = []

    def add(self, member: Any) -> None:
        """A member as json.loads gives it (see _plain)."""
        self._pending.append(member)
        if len(self._pending) >= self.BATCH:
            self.flush()

    def flush(self) -> None:
        from agent.signing import canonical_json

        if self._pending:
            if self.members:
                self.members += b","
            self.members += canonical_json(self._pending)[1:-1]
            self._pending.clear()

    def verify(self, fields: dict[str, Any], public_key: Ed25519PublicKey) -> None:
        from agent.signing import canonical_json, verify_bytes

        self.flush()  # members still pending would be missing from the signed bytes
        others = {k: v for k, v in fields.items() if k != "sig"}
        head = [canonical_json(k) + b":" + canonical_json(v) for k, v in sorted(others.items()) if k < "members"]
        tail = [canonical_json(k) + b":" + canonical_json(v) for k, v in sorted(others.items()) if k > "members"]
        # Grow the one buffer in place rather than join a copy: it may be 20 MB.
        self.members[:0] = b"{" + b"".join(part + b"," for part in head) + b'"members":['
        self.members += b"]" + b"".join(b"," + part for part in tail) + b"}"
        verify_bytes(self.members, fields.get("sig"), public_key)


# The keys a Snapshot reports before its members are read. When they come
# before the members array, as `fabpass members publish` writes a list, an
# unchecked unsigned list is read in one pass.
_HEAD_KEYS = frozenset({"v", "version", "generated_at"})


@contextlib.contextmanager
def _refusals(version: int | None = None) -> Iterator[None]:
    """Errors met while reading the text, as SnapshotError."""
    try:
        yield
    except SnapshotError:
        raise
    except json.JSONDecodeError as err:
        raise SnapshotError(f"not valid JSON at line {err.lineno} column {err.colno}: {err.msg}", version) from None
    except ValueError as err:  # a duplicate key, NaN, or a lone surrogate in canonical JSON
        raise SnapshotError(f"not a valid member snapshot: {err}", version) from None
    except RecursionError:
        raise SnapshotError("not a valid member snapshot: nested too deeply", version) from None


def load_json(data: bytes | str, public_key: str | Ed25519PublicKey | None = None,
              check_members: bool = True) -> Snapshot:
    """Parse and validate a JSON snapshot. With `public_key`, it must carry a valid `sig`.

    `public_key` is the base64 of signing.pub (or an already loaded key).
    With `check_members` false, loading checks the structure (and signature)
    only, and each member is validated as `members()` yields it, raising
    SnapshotError at the first bad one: for a caller that consumes the members
    all-or-nothing anyway (the cache writes a new file and renames it only at
    the end), this reads the list once instead of twice. An unsigned list whose
    v, version and generated_at come before its members is then not even
    walked at loading: `count` is None, and what follows the members is checked
    when `members()` reaches it.
    """
    _check_size(data)
    if isinstance(data, (bytes, bytearray)):
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as err:
            raise SnapshotError(f"not UTF-8 (byte {err.start})") from None
    else:
        text = data
    if public_key is not None:
        from agent.signing import SignatureError, load_public_key
    if isinstance(public_key, str):
        try:
            public_key = load_public_key(public_key)
        except SignatureError as err:
            raise SnapshotError(f"members.public_key: {err}") from None
    signed = _Signed() if public_key is not None else None
    unique = _Unique()
    first_error: list[str] = []
    count = 0

    def on_member(index: int, raw: Any) -> None:
        nonlocal count
        count += 1
        if signed is not None:
            try:
                signed.add(_plain(raw))
            except ValueError as err:  # a key given twice: no canonical bytes to check
                raise SnapshotError(f"{_where_json(index, raw)}: {err}") from None
        if check_members and not first_error:
            try:
                unique.add(_json_member(raw))
            except ValueError as err:
                first_error.append(f"{_where_json(index, raw)}: {err}")

    with _refusals():
        top = _TopLevel(text)
        start = top.keys()
        one_pass = signed is None and not check_members and start is not None and _HEAD_KEYS <= top.fields.keys()
        decoder = _DECODER if check_members else _PLAIN_DECODER
        if not one_pass:
            while start is not None:
                end: list[int] = []
                for index, raw in enumerate(_raw_members(text, start, end, decoder)):
                    on_member(index, raw)
                if signed is not None:  # here, so that an encoding error reads as a refusal
                    signed.flush()
                top.after(end[0])
                start = top.keys()
    fields, members_at = top.fields, top.members_at
    version = _version(fields)
    if signed is not None and public_key is not None:
        try:
            signed.verify(fields, public_key)
        except (SignatureError, ValueError) as err:
            raise SnapshotError(str(err), version) from None
    _check_top(fields, members_at)
    if first_error:
        raise SnapshotError(first_error[0], version)
    assert version is not None and members_at is not None
    begin = members_at

    def rest(end: int) -> None:
        """In one pass, the keys after the members array."""
        top = _TopLevel(text)
        top.keys()
        top.after(end)
        top.keys()
        _check_top(top.fields, begin)

    def members() -> Iterator[Member]:
        again = _Unique()
        end: list[int] = []
        with _refusals(version):
            for index, raw in enumerate(_raw_members(text, begin, end)):
                try:
                    member = _json_member(raw)
                    if not check_members:
                        again.add(member)
                except ValueError as err:
                    raise SnapshotError(f"{_where_json(index, raw)}: {err}", version) from None
                yield member
            if one_pass:
                rest(end[0])

    return Snapshot(version, fields.get("generated_at"), None if one_pass else count, members)


def member_names(data: bytes | str) -> dict[str, str] | None:
    """id -> name of a JSON list's members, to show people by name (`logs tail`); None
    for a list that cannot be read. Signatures are not checked: names decide nothing."""
    try:
        return {member.id: member.name for member in load_json(data, check_members=False).members() if member.name}
    except SnapshotError:
        return None


def to_json(snapshot: Snapshot, sign_key: Ed25519PrivateKey | None = None) -> bytes:
    """The documented JSON form (docs/reference/mqtt.md) of `snapshot`, with `sig` when `sign_key` is given."""
    obj: dict[str, Any] = {"v": FORMAT_VERSION, "version": snapshot.version,
                           "generated_at": snapshot.generated_at,
                           "members": [_member_json(m) for m in snapshot.members()]}
    if sign_key is not None:
        from agent.signing import sign

        obj = sign(obj, sign_key)
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


# --- tables (CSV, XLSX) -------------------------------------------------------------------

def from_objects(rows: Iterable[tuple[str, dict[str, Any]]], version: int, generated_at: str | None = None,
                 warnings: Iterable[str] = ()) -> Snapshot:
    """A snapshot of members given in their JSON shape, each with its place (`FILE row N`):
    validated like a JSON list, the error naming the place."""
    try:
        check_version(version)
    except VersionError as err:
        raise SnapshotError(str(err)) from None
    unique = _Unique()
    members: list[Member] = []
    for place, raw in rows:
        try:
            member = _member(raw)
            unique.add(member)
        except ValueError as err:
            raise SnapshotError(f"{place} (id {str(raw.get('id', '')).strip()!r}): {err}", version) from None
        members.append(member)
    return Snapshot(version, generated_at, len(members), lambda: iter(members), tuple(warnings))


def load_table(table: Table, version: int, date_order: DateOrder | None = None,
               generated_at: str | None = None) -> Snapshot:
    """A snapshot of a CSV or XLSX member table (agent.members.table)."""
    try:
        rows = member_objects(table, date_order)
    except TableError as err:
        raise SnapshotError(str(err), version) from None
    return from_objects(rows, version, generated_at, table.warnings)


def load_csv(text: str, version: int, source: str = "<csv>", generated_at: str | None = None,
             date_order: DateOrder | None = None) -> Snapshot:
    """Parse and validate a CSV member list given as text; errors name `source` and the row
    (the header is row 1)."""
    return load_table_bytes(text, ".csv", source, version, date_order, generated_at)


# --- files ----------------------------------------------------------------------------------

def _check_size(data: bytes | bytearray | str) -> None:
    if len(data) > MAX_BYTES:
        raise SnapshotError(f"the member list is {len(data) / 2**20:.1f} MiB, larger than 32 MiB; "
                            "refused unparsed")


TABLES = (".csv", ".xlsx")


def load_file(path: Path, version: int | None = None,
              public_key: str | Ed25519PublicKey | None = None,
              date_order: DateOrder | None = None) -> Snapshot:
    """A member list from a .json, .csv or .xlsx file. A table is made as it is read: its
    `generated_at` is now, its version `version` or else the current Unix time."""
    path = Path(path)
    kind = path.suffix.lower()
    if kind not in (".json", *TABLES):
        raise SnapshotError(f"{path}: unknown member list format {kind or '(no extension)'!r}; "
                            "use a .json, .csv or .xlsx file")
    if kind == ".json" and version is not None:
        raise SnapshotError(f"{path}: a JSON list carries its own version; a version is given only for CSV")
    if kind in TABLES and public_key is not None:
        raise SnapshotError(f"{path}: unsigned (a public key is configured and a {kind[1:].upper()} list cannot "
                            "be signed; publish it as signed JSON)")
    try:
        size = path.stat().st_size
        if size > MAX_BYTES:
            raise SnapshotError(f"{path}: {size / 2**20:.1f} MiB, larger than 32 MiB; refused unparsed")
        data = path.read_bytes()
    except OSError as err:
        raise SnapshotError(f"{path}: cannot read: {err.strerror or err}") from None
    if kind == ".json":
        try:
            return load_json(data, public_key)
        except SnapshotError as err:
            message = str(err) if str(err).startswith(str(path)) else f"{path}: {err}"
            raise SnapshotError(message, err.version) from None
    now = dt.datetime.now(dt.timezone.utc)
    return load_table_bytes(data, kind, str(path), version if version is not None else next_version(None, now),
                            date_order, rfc3339(now))


def load_table_bytes(data: bytes | str, kind: str, source: str, version: int,
                     date_order: DateOrder | None = None, generated_at: str | None = None) -> Snapshot:
    """A CSV (`kind` ".csv", bytes or text) or XLSX (".xlsx") member list; errors name `source`."""
    try:
        check_version(version)
    except VersionError as err:
        raise SnapshotError(f"{source}: {err}") from None
    _check_size(data)
    try:
        table = read_xlsx(data, source) if kind == ".xlsx" else read_csv(data, source)
    except TableError as err:
        raise SnapshotError(str(err), version) from None
    return load_table(table, version, date_order, generated_at)
