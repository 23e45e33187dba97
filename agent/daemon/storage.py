"""What an agent keeps in its storage directory, and the rules read from it, opened
the same way by the running agent and by `fabpass members check|import` when no
agent runs: the outbox, the member cache, the badge hasher and the list's age."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

from agent.config import Config
from agent.core import session
from agent.core.model import UID_PREFIX, Instant, Member
from agent.core.policy import Rules
from agent.daemon.listsync import ListOutcome, ListSync, is_stale
from agent.daemon.outbox import Outbox
from agent.members.badgehash import BadgeHasher
from agent.members.cache import MemberCache
from agent.members.update import update_cache

OUTBOX_FILE = "agent.db"


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

    def badge_key(self, uid: str) -> str:
        """How this machine stores and reports a badge: the UID, or its keyed hash."""
        return self.hasher(uid) if self.hasher else uid

    def find(self, badge: str) -> tuple[Member | None, bool]:
        """The member holding `badge` (as stored), and whether the list writes it `uid:`."""
        member = self.cache.lookup(badge)
        if member is not None:
            return member, False
        member = self.cache.lookup(UID_PREFIX + badge)
        return member, member is not None

    def tap(self, badge: str, now: dt.datetime, clock_trusted: bool, authentic: bool = True) -> session.Tap:
        """The session machine's input for a tap of `badge` (as stored). A card that did
        not authenticate (secure cards) is accepted by its UID alone when the list
        writes its badge `uid:`, and refused otherwise."""
        member, listed_by_uid = self.find(badge)
        by_uid = listed_by_uid and not authentic
        return session.Tap(badge, member, self.list_stale(now), clock_trusted, authentic or by_uid, by_uid)

    def list_age(self, now: dt.datetime) -> float | None:
        return None if self.lists is None else self.lists.age(now)

    def list_stale(self, now: dt.datetime) -> bool:
        return is_stale(self.config.members.max_list_age, self.list_age(now))

    def check(self, badge: str, state: session.State, now: Instant, clock_trusted: bool) -> dict[str, Any]:
        """Would a tap of `badge` (as stored) be granted in `state` now? The session
        machine's answer, with no effect."""
        tap = self.tap(badge, now.wall, clock_trusted)
        outcome = session.handle(state, tap, now, self.machine).outcome
        assert outcome is not None
        return {"granted": outcome.granted, "reason": outcome.reason,
                "member_id": tap.member.id if tap.member else None}

    def import_list(self, load: Callable[[], Any], now: dt.datetime) -> ListOutcome:
        """Take a list parsed by `load` (a file being imported), in this process."""
        assert self.lists is not None, "open the storage with create=True to import"
        return self.lists.take(lambda: update_cache(self.cache, load, self.hasher), now)

    def close(self) -> None:
        self.cache.close()
        if self.outbox is not None:
            self.outbox.close()
