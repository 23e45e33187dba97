"""What an agent keeps in its storage directory, and the rules read from it, opened
the same way by the running agent and by `fabpass members check|import` when no
agent runs: the outbox, the member cache, the badge hasher and the list's age."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from agent.config import Config
from agent.core import session
from agent.core.grants import Grants
from agent.core.model import UID_PREFIX, Instant, Member, printed_numbers
from agent.core.policy import Rules
from agent.core.timespec import parse_rfc3339
from agent.daemon.listsync import ListOutcome, ListSync, is_stale, list_age
from agent.daemon.outbox import Outbox
from agent.members.badgehash import BadgeHasher
from agent.members.cache import MemberCache
from agent.members.update import update_cache
from agent.members.version import next_version

OUTBOX_FILE = "agent.db"
MEMBERS_REMEMBERED = 64  # members looked up by id (enrolments, a session's trainer) per list
GRANTS_KEY = "grants"  # the outbox meta key of what the machine granted by itself (agent.core.grants)


def machine_of(config: Config) -> session.Machine:
    """What the session machine needs to know of this machine's config."""
    m = config.machine
    return session.Machine(
        rules=Rules(m.induction, m.hours),
        timing=session.Timing(
            max_session=m.max_session, warn_before=m.warn_before, hard_limit=m.hard_limit,
            idle_timeout=config.sensor.idle_timeout, min_off=config.relay.min_off, run_on=config.relay.run_on,
        ),
        tz=config.tz,
        has_sensor=config.sensor.pin is not None,
        induction_valid=m.induction_valid,
        report_hold=config.report.hold,
    )


class Storage:
    """The storage directory of the machine in `config`.

    `create` makes the directory and the outbox when they are missing (the
    agent, an import); without it a machine that has never run has no outbox,
    and its list has no age. Raises BadgeKeyError for an unusable hash key.
    """

    def __init__(self, config: Config, create: bool = True) -> None:
        self.config = config
        directory = config.storage.dir
        if create:
            directory.mkdir(mode=0o750, parents=True, exist_ok=True)
        limit = config.mqtt.outbox_limit if config.mqtt else 100_000
        path = directory / OUTBOX_FILE
        self.outbox = Outbox(path, config.machine.id, limit) if create or path.exists() else None
        self.cache = MemberCache(directory)
        self.lists = ListSync(self.outbox, self.cache) if self.outbox is not None else None
        key_file = config.members.badge_hash_key_file
        self.hasher = BadgeHasher.from_file(key_file) if key_file else None
        self.machine = machine_of(config)
        self._members: dict[str, Member | None] = {}  # by id, for the badges enrolled here
        self._members_version: int | None = None

    def badge_key(self, uid: str) -> str:
        """How this machine stores and reports a badge: the UID, or its keyed hash."""
        return self.hasher(uid) if self.hasher else uid

    def member(self, member_id: str) -> Member | None:
        """The list's member with this id, remembered until the list changes (a scan of the
        cache; at most MEMBERS_REMEMBERED remembered, so commands naming ids cannot grow it)."""
        version = self.cache.version
        if version != self._members_version or len(self._members) >= MEMBERS_REMEMBERED:
            self._members, self._members_version = {}, version
        if member_id not in self._members:
            self._members[member_id] = self.cache.member(member_id)
        return self._members[member_id]

    def grants(self) -> Grants:
        """What this machine granted by itself, as its agent last stored it."""
        return Grants.from_json(self.outbox.get(GRANTS_KEY)) if self.outbox is not None else Grants()

    def list_in_force(self, now: dt.datetime, holder: str | None = None) -> session.NewList | None:
        """The cached list as the session machine takes it, with what it says of the member
        `holder` (an open session's), or None before any list. A list without a readable
        generated_at counts as generated when it is taken."""
        info = self.cache.info()
        if info.version is None:
            return None
        try:
            generated = parse_rfc3339(info.generated_at) if info.generated_at else now
        except ValueError:
            generated = now
        return session.NewList(info.version, generated, self.member(holder) if holder else None)

    def idle_state(self, now: Instant) -> session.State:
        """The machine taken as idle and unlocked (no agent runs), with what it granted."""
        state = session.State(at_machine=session.AtMachine(grants=self.grants()))
        in_force = self.list_in_force(now.wall)
        return state if in_force is None else session.handle(state, in_force, now, self.machine).state

    def find(self, uid: str, grants: Grants) -> tuple[Member | None, bool]:
        """The member holding the badge read as `uid`, and whether the list writes it `uid:`
        (secure cards). Looked up as itself, then, for an EM4100 read, by the numbers
        printed on the card, then `uid:`, and at last as a badge enrolled here: a read
        listed as itself costs one query, as it always did."""
        badge = self.badge_key(uid)
        member = self.cache.lookup(badge)
        if member is not None:
            return member, False
        printed = printed_numbers(uid)
        if printed:
            member = self.cache.lookup(*map(self.badge_key, printed))
            if member is not None:
                return member, False
        member = self.cache.lookup(UID_PREFIX + badge)
        if member is not None:
            return member, True
        if grants.badges:
            enrolled = grants.member_id(badge)
            member = self.member(enrolled) if enrolled is not None else None
        return member, False

    def tap(self, uid: str, now: dt.datetime, clock_trusted: bool, grants: Grants,
            authentic: bool = True) -> session.Tap:
        """The session machine's input for a tap of `uid`, its badge as this machine stores
        and reports it. A card that did not authenticate (secure cards) is accepted by its
        UID alone when the list writes its badge `uid:`, and refused otherwise."""
        member, listed_by_uid = self.find(uid, grants)
        by_uid = listed_by_uid and not authentic
        return session.Tap(self.badge_key(uid), member, self.list_stale(now, clock_trusted), clock_trusted,
                           authentic or by_uid, by_uid)

    def list_age(self, now: dt.datetime) -> float | None:
        """Seconds since the cached list was made (its generated_at); None when unknown."""
        return list_age(self.cache.info().generated_at, now)

    def list_stale(self, now: dt.datetime, clock_trusted: bool = True) -> bool:
        """Whether max_list_age refuses non-staff: the list is too old, its age is
        unknown, or the clock it would be judged by is not trusted."""
        max_age = self.config.members.max_list_age
        return max_age is not None and (not clock_trusted or is_stale(max_age, self.list_age(now)))

    def check(self, uid: str, state: session.State, now: Instant, clock_trusted: bool) -> dict[str, Any]:
        """Would a tap of `uid` be granted in `state` now? The session machine's answer,
        with no effect; a check never enrols, so an open enrolment does not count."""
        tap = self.tap(uid, now.wall, clock_trusted, state.grants)
        state = replace(state, at_machine=replace(state.at_machine, enrolment=None))
        outcome = session.handle(state, tap, now, self.machine).outcome
        assert outcome is not None
        return {"granted": outcome.granted, "action": outcome.action, "reason": outcome.reason,
                "member_id": tap.member.id if tap.member else None}

    def import_list(self, load: Callable[[], Any], now: dt.datetime) -> ListOutcome:
        """Take a list parsed by `load` (a file being imported), in this process."""
        assert self.lists is not None, "open the storage with create=True to import"
        return self.lists.take(lambda: update_cache(self.cache, load, self.hasher), now)

    def import_file(self, path: Path, version: int | None, now: dt.datetime) -> ListOutcome:
        """Take a member list file (`fabpass members import`). A CSV or XLSX list without
        `version` gets the next after the cached one (agent.members.version)."""

        def load() -> Any:
            # Imported when used: an agent that only takes lists from the broker never loads it.
            from agent.members.snapshot import TABLES, load_file

            given = version
            if given is None and path.suffix.lower() in TABLES:
                given = next_version(self.cache.version, now)
            return load_file(path, version=given, public_key=self.config.members.public_key)

        return self.import_list(load, now)

    def close(self) -> None:
        self.cache.close()
        if self.outbox is not None:
            self.outbox.close()
