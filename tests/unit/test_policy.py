"""agent.core.policy.decide: the refusal precedence, staff exemptions, expiry dates.

A pure function, so every case is a row: who taps, what the machine is doing, when.
"""

from __future__ import annotations

import datetime as dt
import itertools

import pytest

from agent.core.hours import OpeningHours
from agent.core.model import Member, Reason
from agent.core.policy import GRANT, Decision, Rules, Situation, decide

# A Wednesday, 10:00 local time, inside the opening hours below.
NOW = dt.datetime(2026, 11, 25, 10, 0)
TODAY = NOW.date()
YESTERDAY = TODAY - dt.timedelta(days=1)
TOMORROW = TODAY + dt.timedelta(days=1)
HOURS = OpeningHours.parse(["mon-fri 09:00-19:00"])
RULES = Rules("laser")
RULES_HOURS = Rules("laser", HOURS)
CONTRACT_ORDER = [
    "unknown_badge", "stale_member_list", "suspended", "membership_expired", "not_inducted",
    "induction_expired", "machine_locked", "outside_hours", "in_use", "storage_error",
]


def member(status: str = "active", expires: dt.date | None = None, staff: bool = False,
           inductions: dict[str, dt.date | None] | None = None) -> Member:
    return Member(
        id="m-1", name="Ada", status=status, expires=expires,
        roles=frozenset({"staff"}) if staff else frozenset(),
        inductions={"laser": None} if inductions is None else inductions,
        badges=("04A1B2C3",),
    )


def test_policy_reason_enum_follows_the_contract_order():
    declared = [r.value for r in Reason if r.value in CONTRACT_ORDER]
    assert declared == CONTRACT_ORDER


@pytest.mark.parametrize(
    "who, rules, situation, now, expected",
    [
        # grants
        (member(), RULES, Situation(), NOW, None),
        (member(expires=TOMORROW), RULES, Situation(), NOW, None),
        (member(inductions={"laser": TOMORROW}), RULES, Situation(), NOW, None),
        (member(inductions={"laser": None, "cnc": YESTERDAY}), RULES, Situation(), NOW, None),
        (member(), RULES_HOURS, Situation(), NOW, None),
        # one refusal at a time
        (None, RULES, Situation(), NOW, Reason.UNKNOWN_BADGE),
        (member(), RULES, Situation(list_stale=True), NOW, Reason.STALE_MEMBER_LIST),
        (member(status="suspended"), RULES, Situation(), NOW, Reason.SUSPENDED),
        (member(status="banned"), RULES, Situation(), NOW, Reason.SUSPENDED),  # anything not active
        (member(expires=YESTERDAY), RULES, Situation(), NOW, Reason.MEMBERSHIP_EXPIRED),
        (member(inductions={}), RULES, Situation(), NOW, Reason.NOT_INDUCTED),
        (member(inductions={"cnc": None}), RULES, Situation(), NOW, Reason.NOT_INDUCTED),
        (member(inductions={"laser": YESTERDAY}), RULES, Situation(), NOW, Reason.INDUCTION_EXPIRED),
        (member(), RULES, Situation(locked=True), NOW, Reason.MACHINE_LOCKED),
        (member(), RULES_HOURS, Situation(), NOW.replace(hour=20), Reason.OUTSIDE_HOURS),
        (member(), RULES_HOURS, Situation(), dt.datetime(2026, 11, 28, 10, 0), Reason.OUTSIDE_HOURS),  # Saturday
        (member(), RULES, Situation(in_use_by_other=True), NOW, Reason.IN_USE),
    ],
)
def test_policy_single_condition(who, rules, situation, now, expected):
    decision = decide(who, rules, situation, now)
    if expected is None:
        assert decision == GRANT
        assert decision.granted and decision.reason is None
    else:
        assert decision == Decision(False, expected)


# Every condition that can refuse a non-staff member, in the contract's order.
CONDITIONS = [
    ("stale_member_list", lambda m, s: (m, {**s, "list_stale": True})),
    ("suspended", lambda m, s: ({**m, "status": "suspended"}, s)),
    ("membership_expired", lambda m, s: ({**m, "expires": YESTERDAY}, s)),
    ("not_inducted", lambda m, s: ({**m, "inductions": {}}, s)),
    ("induction_expired", lambda m, s: ({**m, "inductions": {"laser": YESTERDAY}}, s)),
    ("machine_locked", lambda m, s: (m, {**s, "locked": True})),
    ("outside_hours", lambda m, s: (m, {**s, "late": True})),
    ("in_use", lambda m, s: (m, {**s, "in_use_by_other": True})),
]


def _build(chosen):
    m: dict = {"status": "active", "expires": None, "inductions": {"laser": None}}
    s: dict = {"locked": False, "in_use_by_other": False, "list_stale": False, "late": False}
    for _, apply in chosen:
        m, s = apply(m, s)
    now = NOW.replace(hour=21) if s.pop("late") else NOW
    who = Member(id="m-1", name="Ada", status=m["status"], expires=m["expires"], inductions=m["inductions"])
    return who, Situation(**s), now


@pytest.mark.parametrize(
    "chosen",
    [combo for n in (2, 3, 7) for combo in itertools.combinations(CONDITIONS, n)
     # not inducted and an expired induction cannot both hold
     if not {"not_inducted", "induction_expired"} <= {name for name, _ in combo}],
    ids=lambda combo: "+".join(name for name, _ in combo),
)
def test_policy_precedence_first_in_contract_order_wins(chosen):
    who, situation, now = _build(chosen)
    assert decide(who, RULES_HOURS, situation, now) == Decision(False, Reason(chosen[0][0]))


@pytest.mark.parametrize(
    "who, situation, now, expected",
    [
        # staff are exempt from the lock, the hours and a stale list...
        (member(staff=True), Situation(locked=True), NOW, None),
        (member(staff=True), Situation(), NOW.replace(hour=23), None),
        (member(staff=True), Situation(list_stale=True), NOW, None),
        (member(staff=True), Situation(locked=True, list_stale=True), NOW.replace(hour=3), None),
        # ...but not from status, membership or induction
        (member(staff=True, status="suspended"), Situation(locked=True), NOW, Reason.SUSPENDED),
        (member(staff=True, expires=YESTERDAY), Situation(list_stale=True), NOW, Reason.MEMBERSHIP_EXPIRED),
        (member(staff=True, inductions={}), Situation(locked=True), NOW, Reason.NOT_INDUCTED),
        (member(staff=True, inductions={"laser": YESTERDAY}), Situation(), NOW.replace(hour=23),
         Reason.INDUCTION_EXPIRED),
        # ...nor from a machine in use by someone else
        (member(staff=True), Situation(in_use_by_other=True), NOW, Reason.IN_USE),
        # an unknown badge is unknown, whatever else
        (None, Situation(locked=True, list_stale=True), NOW.replace(hour=23), Reason.UNKNOWN_BADGE),
    ],
)
def test_policy_staff_exemptions(who, situation, now, expected):
    decision = decide(who, RULES_HOURS, situation, now)
    assert decision == (GRANT if expected is None else Decision(False, expected))


@pytest.mark.parametrize(
    "now, granted",
    [
        (dt.datetime(2026, 11, 25, 0, 0), True),
        (dt.datetime(2026, 11, 25, 23, 59, 59, 999999), True),  # the last instant of the day
        (dt.datetime(2026, 11, 26, 0, 0), False),  # the next day
        (dt.datetime(2026, 11, 24, 12, 0), True),
    ],
)
@pytest.mark.parametrize("which", ["membership", "induction"])
def test_policy_expiry_valid_through_end_of_day(now, granted, which):
    day = dt.date(2026, 11, 25)
    who = member(expires=day) if which == "membership" else member(inductions={"laser": day})
    expected = GRANT if granted else Decision.refuse(
        Reason.MEMBERSHIP_EXPIRED if which == "membership" else Reason.INDUCTION_EXPIRED)
    assert decide(who, RULES, Situation(), now) == expected


def test_policy_expiry_read_in_the_local_time_passed_in():
    rome = dt.timezone(dt.timedelta(hours=1))
    # 23:30 UTC on the 25th is 00:30 on the 26th in Rome: a membership ending the 25th is over there.
    utc = dt.datetime(2026, 11, 25, 23, 30, tzinfo=dt.timezone.utc)
    who = member(expires=dt.date(2026, 11, 25))
    assert decide(who, RULES, Situation(), utc) == GRANT
    assert decide(who, RULES, Situation(), utc.astimezone(rome)) == Decision.refuse(Reason.MEMBERSHIP_EXPIRED)


def test_policy_no_hours_means_always_open():
    assert decide(member(), RULES, Situation(), dt.datetime(2026, 11, 29, 3, 0)) == GRANT


def test_policy_decision_refuse_helper():
    assert Decision.refuse(Reason.IN_USE) == Decision(False, Reason.IN_USE)
    assert not Decision.refuse(Reason.IN_USE).granted


# --- secure cards ------------------------------------------------------------------------------


def test_policy_card_not_authentic_comes_first():
    assert list(Reason)[0] is Reason.CARD_NOT_AUTHENTIC


@pytest.mark.parametrize("who", [member(), member(staff=True), None, member(status="suspended")],
                         ids=["member", "staff", "unknown", "suspended"])
@pytest.mark.parametrize("situation", [
    Situation(card_authentic=False),
    Situation(card_authentic=False, locked=True, list_stale=True, in_use_by_other=True, clock_trusted=False),
], ids=["alone", "with-everything-else"])
def test_policy_a_card_that_did_not_authenticate_is_refused_before_anything_else(who, situation):
    assert decide(who, RULES_HOURS, situation, NOW.replace(hour=23)) == Decision(False, Reason.CARD_NOT_AUTHENTIC)


def test_policy_staff_with_a_card_that_did_not_authenticate_end_no_session():
    from agent.core.policy import may_end_others

    assert may_end_others(member(staff=True), Situation(card_authentic=False), NOW) == \
        Decision(False, Reason.CARD_NOT_AUTHENTIC)
