"""The notification rules and rate limit on their own (pure)."""

from __future__ import annotations

from agent.logbook.alerts import _message
from agent.logbook.notify import RateLimit


def test_notify_rate_limit_holds_back_a_flood_and_counts_it() -> None:
    limit = RateLimit(per_window=3, window_s=60)
    assert [limit.allow("laser-1", t) for t in (0, 1, 2, 3, 4)] == [0, 0, 0, None, None]
    assert limit.allow("cnc-1", 5) == 0  # per subject
    assert limit.allow("laser-1", 59) is None
    assert limit.allow("laser-1", 60) == 3  # the oldest left the window; three were held back
    assert limit.allow("laser-1", 61) == 0


def event(type: str, **fields) -> dict:
    return {"machine": "laser-1", "type": type, "ts": "2026-12-02T09:00:00.000Z", **fields}


def test_notify_messages_for_what_technicians_are_told() -> None:
    assert _message(event("machine_locked", by="giulia", reason="tube change")) == (
        "laser-1 locked", "laser-1 was locked by giulia: tube change at 2026-12-02T09:00:00.000Z.")
    assert _message(event("out_of_order_reported", by=None))[0] == "laser-1 reported out of order"
    assert "storage_error" in _message(event("access_denied", reason="storage_error", badge="X"))[1]
    assert _message(event("members_rejected", version=7, error="bad"))[0] == "laser-1 refused member list version 7"
    assert _message(event("machine_id_conflict", other_incarnation="abc"))[0] == "laser-1: two agents use this machine id"


def test_notify_no_message_for_ordinary_events() -> None:
    for kind, fields in (("access_denied", {"reason": "not_inducted"}), ("session_started", {}),
                         ("members_updated", {}), ("agent_started", {})):
        assert _message(event(kind, **fields)) is None
