"""agent.cli.text.event_line: one readable line per event, members by name where the list names them."""

from __future__ import annotations

import pytest

from agent.cli.text import event_line
from agent.core.model import EventType

NAMES = {"ada": "Ada Lovelace", "tess": "Tess Trainer"}


def line(type_: str, **fields) -> str:
    event = {"v": 1, "type": type_, "machine": "laser-1", "seq": 7, "ts": "2026-12-03T10:00:00.000Z", **fields}
    return event_line(event, NAMES).split("#7", 1)[1].strip()


@pytest.mark.parametrize("event, text", [
    (("session_started", {"member_id": "ada", "badge": "04A1B2C3"}), "Ada Lovelace (ada) started badge 04A1B2C3"),
    (("session_started", {"member_id": "eve", "badge": "04A1B2C4"}), "eve started badge 04A1B2C4"),
    (("badge_enrolled", {"member_id": "ada", "badge": "0A0045B352", "by": "giulia"}),
     "Ada Lovelace (ada) enrolled badge 0A0045B352 (by giulia)"),
    (("enrolment_refused", {"member_id": "ada", "by": "giulia", "reason": "badge_known", "badge": "CAFEBABE",
                            "owner": "tess"}),
     "enrolment of Ada Lovelace (ada) by giulia: REFUSED, badge CAFEBABE belongs to Tess Trainer (tess)"),
    (("enrolment_refused", {"member_id": "x", "by": "giulia", "reason": "unknown_member"}),
     "enrolment of x by giulia: REFUSED, no such member in the list"),
    (("enrolment_refused", {"member_id": "ada", "by": "giulia", "reason": "window_closed"}),
     "enrolment of Ada Lovelace (ada) by giulia: closed, no unknown badge was tapped within 60 s"),
    (("induction_granted", {"member_id": "ada", "induction": "laser", "by": "tess", "expires": "2027-12-03"}),
     "Ada Lovelace (ada) inducted on laser by Tess Trainer (tess) until 2027-12-03"),
    (("induction_granted", {"member_id": "ada", "induction": "laser", "by": "tess", "expires": None}),
     "Ada Lovelace (ada) inducted on laser by Tess Trainer (tess)"),
    (("out_of_order_reported", {"by": "ada"}), "OUT OF ORDER reported by Ada Lovelace (ada)"),
    (("out_of_order_reported", {"by": None}), "OUT OF ORDER reported"),
    (("bypass_on", {}), "BYPASS ON: the key switch powers the machine"),
    (("bypass_off", {}), "bypass off"),
])
def test_event_lines_name_members_and_say_what_happened_at_the_machine(event, text):
    assert line(event[0], **event[1]) == text


@pytest.mark.parametrize("kind", list(EventType), ids=str)
def test_event_lines_every_event_type_has_its_own_words(kind):
    assert line(kind.value) != kind.value, f"{kind} is shown by its bare type"
