"""Approval policies: the real file loads and chooses the chains it promises; each kind of mistake (bad
YAML, a gap, an overlap, an unknown department or value) is refused at its line; choosing never fails
nor depends on the rules' order for a request whose values the policy lists."""

from __future__ import annotations

import itertools
import re
import shutil
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.approvals.policies import (
    DEFAULT_CALENDARS_DIR,
    DEFAULT_POLICY_DIR,
    LISTED,
    ApprovalPolicy,
    load_policies,
    load_policy,
)
from services.platform.calendars import BusinessCalendar, load_calendars
from services.platform.errors import InvalidArgument
from services.platform.topics import department_codes
from services.platform.yamlconfig import ConfigError

SHIPPED = DEFAULT_POLICY_DIR / "approvals-v1.yaml"
DEPARTMENTS = department_codes()
HEADER = """policy: test
version: 1
calendar: cn-gov
currency: CNY
values:
  kind: [refund, fee_waiver]
  customer_tier: [standard, gold]
  ticket_type: [complaint]
rules:
"""
LEAD = "    steps: [{name: lead, deciders: [{department: center}], deadline: 4h, at_deadline: expire}]\n"


@pytest.fixture(scope="module")
def calendars() -> dict[str, BusinessCalendar]:
    return load_calendars(DEFAULT_CALENDARS_DIR)


@pytest.fixture(scope="module")
def shipped(calendars: dict[str, BusinessCalendar]) -> ApprovalPolicy:
    return load_policy(SHIPPED, calendars, DEPARTMENTS)


def write(tmp_path: Path, rules: str, header: str = HEADER) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(header + rules, encoding="utf-8")
    return path


def refused(path: Path, calendars: dict[str, BusinessCalendar]) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        load_policy(path, calendars, DEPARTMENTS)
    assert caught.value.path == path
    return caught.value


def line_of(path: Path, fragment: str) -> int:
    return next(n for n, line in enumerate(path.read_text().splitlines(), 1) if fragment in line)


def request(kind: str = "refund", tier: str = "standard", ticket_type: str = "complaint") -> dict[str, str]:
    return {"kind": kind, "customer_tier": tier, "ticket_type": ticket_type}


def chain(policy: ApprovalPolicy, amount: str, kind: str = "refund") -> list[str]:
    rule = policy.choose(request(kind), Decimal(amount))
    return [str(decider) for step in rule.steps for decider in step.deciders]


def test_the_shipped_policy_chains_by_amount_as_the_business_asks(shipped: ApprovalPolicy) -> None:
    assert chain(shipped, "0") == ["center/team_lead"], "no amount counts as 0"
    assert chain(shipped, "1000") == ["center/team_lead"], "up to 1,000: the team lead"
    assert chain(shipped, "1000.01") == ["center/team_lead", "finance"], "up to 10,000: and finance"
    assert chain(shipped, "10000") == ["center/team_lead", "finance"]
    assert chain(shipped, "10000.01") == ["center/team_lead", "finance", "legal"], "above: and legal"
    board = shipped.choose(request("contract_change"), Decimal(0)).steps
    assert [(step.parallel, step.needed, len(step.deciders)) for step in board] == [(True, 2, 3)]
    assert shipped.amount_of(123456, "CNY") == Decimal("1234.56")


def test_every_version_in_the_folder_loads_and_a_version_defined_twice_is_refused(tmp_path: Path) -> None:
    assert ("approvals", 1) in load_policies()
    shutil.copy(SHIPPED, tmp_path / "a.yaml")
    shutil.copy(SHIPPED, tmp_path / "b.yaml")
    with pytest.raises(ConfigError, match=r"version 1 is already defined in .*a\.yaml; a changed policy"):
        load_policies(tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ConfigError, match="no approval policy"):
        load_policies(empty)


def test_a_value_the_policy_does_not_list_is_refused_naming_the_parameter(shipped: ApprovalPolicy) -> None:
    with pytest.raises(
        InvalidArgument, match=re.escape("customer_tier: 'diamond' is not one of standard, gold")
    ):
        shipped.choose(request(tier="diamond"), Decimal(1))
    with pytest.raises(
        InvalidArgument, match=re.escape("amount.currency: this policy decides amounts in CNY, not EUR")
    ):
        shipped.amount_of(100, "EUR")


def test_a_file_that_does_not_parse_is_refused_at_its_line(
    tmp_path: Path, calendars: dict[str, BusinessCalendar]
) -> None:
    path = write(tmp_path, "  - name: a\n    kind: [refund\n" + LEAD)
    error = refused(path, calendars)
    assert "not valid YAML" in error.reason and error.line is not None


def test_a_gap_between_amounts_is_refused_naming_the_combination_and_the_amounts(
    tmp_path: Path, calendars: dict[str, BusinessCalendar]
) -> None:
    rules = "  - name: small\n    amount: {up_to: 1000}\n" + LEAD
    rules += "  - name: large\n    amount: {above: 2000}\n" + LEAD
    error = refused(write(tmp_path, rules), calendars)
    assert error.reason == (
        "gap: no rule takes kind refund, customer_tier standard, ticket_type complaint, "
        "amount above 1000 up to 2000"
    )
    assert error.line == line_of(tmp_path / "policy.yaml", "rules:")


def test_a_combination_of_values_no_rule_takes_is_a_gap(
    tmp_path: Path, calendars: dict[str, BusinessCalendar]
) -> None:
    rules = "  - name: refunds\n    kind: [refund]\n" + LEAD
    rules += "  - name: waivers-of-gold\n    kind: [fee_waiver]\n    customer_tier: [gold]\n" + LEAD
    error = refused(write(tmp_path, rules), calendars)
    assert error.reason == (
        "gap: no rule takes kind fee_waiver, customer_tier standard, ticket_type complaint, amount any"
    )


def test_amounts_no_rule_reaches_above_are_a_gap(
    tmp_path: Path, calendars: dict[str, BusinessCalendar]
) -> None:
    error = refused(write(tmp_path, "  - name: small\n    amount: {up_to: 1000}\n" + LEAD), calendars)
    assert error.reason.endswith("amount above 1000")
    error = refused(write(tmp_path, "  - name: paid\n    amount: {above: 0}\n" + LEAD), calendars)
    assert error.reason.endswith("amount up to 0"), "0, and a request with no amount, left out"


def test_two_rules_taking_the_same_request_are_an_overlap_at_the_second_rules_line(
    tmp_path: Path, calendars: dict[str, BusinessCalendar]
) -> None:
    rules = "  - name: small\n    amount: {up_to: 1000}\n" + LEAD
    rules += (
        "  - name: gold-refunds\n    kind: [refund]\n    customer_tier: [gold]\n    amount: {up_to: 500}\n"
    )
    rules += LEAD + "  - name: large\n    amount: {above: 1000}\n" + LEAD
    path = write(tmp_path, rules)
    error = refused(path, calendars)
    assert error.reason == (
        "overlap: rules 'small' and 'gold-refunds' both take kind refund, customer_tier gold, "
        "ticket_type complaint, amount up to 500"
    )
    assert error.line == line_of(path, "name: gold-refunds")


def test_a_decider_of_an_unknown_department_is_refused_at_its_step(
    tmp_path: Path, calendars: dict[str, BusinessCalendar]
) -> None:
    rules = "  - name: all\n    steps:\n      - name: lead\n        deciders: [{department: treasury}]\n"
    rules += "        deadline: 4h\n        at_deadline: expire\n"
    path = write(tmp_path, rules)
    error = refused(path, calendars)
    assert error.reason.startswith("rules[0].steps[0].deciders[0]: department 'treasury' has no inbox topic")
    assert error.line == line_of(path, "- name: lead")
    escalating = rules.replace("at_deadline: expire", "at_deadline: {escalate_to: {department: treasury}}")
    escalating = escalating.replace("treasury}]", "finance}]", 1)
    error = refused(write(tmp_path, escalating), calendars)
    assert error.reason.startswith("rules[0].steps[0].at_deadline.escalate_to: department 'treasury'")


@pytest.mark.parametrize(
    ("rules", "reason"),
    [
        (
            "  - name: all\n    kind: [refund, donation]\n" + LEAD,
            "rules[0].kind: 'donation' is not listed in values.kind",
        ),
        (
            "  - name: all\n    steps: [{name: s, deciders: [{department: finance}], approvals_needed: 2,"
            " deadline: 4h, at_deadline: expire}]\n",
            "rules[0].steps[0]: approvals_needed is 2, but the step has 1 decider(s)",
        ),
        (
            "  - name: all\n    steps: [{name: s, deciders: [{department: finance}], deadline: 3d,"
            " at_deadline: expire}]\n",
            "rules[0].steps[0].deadline: a deadline counts working time (4h, 2wd), not calendar days: '3d'",
        ),
        (
            "  - name: all\n    steps: [{name: s, deciders: [{department: finance}], deadline: 4h,"
            " remind_at: [0.8, 0.5], at_deadline: expire}]\n",
            "rules[0].steps[0].remind_at: reminders are shares of the deadline between 0 and 1, rising: "
            "[0.8, 0.5]",
        ),
        (
            "  - name: all\n    amount: {above: 5, up_to: 5}\n" + LEAD,
            "rules[0].amount: amount: up_to (5) must be more than above (5)",
        ),
        ("  - name: all\n    colour: red\n" + LEAD, "rules[0].colour: unknown key"),
        (
            "  - name: all\n" + LEAD + "  - name: all\n    kind: [refund]\n" + LEAD,
            "rule name 'all' is used twice",
        ),
    ],
)
def test_each_mistake_in_a_rule_is_refused_with_its_reason(
    tmp_path: Path, calendars: dict[str, BusinessCalendar], rules: str, reason: str
) -> None:
    error = refused(write(tmp_path, rules), calendars)
    assert error.reason == reason
    assert error.line is not None and error.line > HEADER.count("\n")


def test_an_unknown_calendar_is_refused(tmp_path: Path, calendars: dict[str, BusinessCalendar]) -> None:
    path = write(tmp_path, "  - name: all\n" + LEAD, HEADER.replace("cn-gov", "mars"))
    error = refused(path, calendars)
    assert error.reason.startswith("calendar 'mars' is not loaded") and error.line == 3


AMOUNTS = st.decimals(min_value=0, max_value=10**9, places=2, allow_nan=False, allow_infinity=False)


@settings(max_examples=300, deadline=None)
@given(
    amount=AMOUNTS,
    case=st.tuples(*(st.integers(0, 50) for _ in LISTED)),
    order=st.randoms(use_true_random=False),
)
def test_a_listed_request_gets_exactly_one_rule_whatever_the_rules_order(
    shipped: ApprovalPolicy, amount: Decimal, case: tuple[int, ...], order
) -> None:
    values = {
        name: shipped.values[name][i % len(shipped.values[name])]
        for name, i in zip(LISTED, case, strict=True)
    }
    chosen = shipped.choose(values, amount)
    rules = list(shipped.rules)
    order.shuffle(rules)
    assert [r for r in rules if r.takes(values) and r.takes_amount(amount)] == [chosen]


def test_every_listed_combination_has_a_chain(shipped: ApprovalPolicy) -> None:
    for combination in itertools.product(*(shipped.values[name] for name in LISTED)):
        rule = shipped.choose(dict(zip(LISTED, combination, strict=True)), Decimal("1e12"))
        assert rule.steps
