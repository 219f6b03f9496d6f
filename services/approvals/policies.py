"""Approval policies: which chain of sign-offs a request needs, chosen by its kind and parameters.

A policy is a versioned YAML file under ``deploy/approvals/`` (the file says its format). Every file
is loaded strictly: it must parse, every decider must be a department with an inbox (or ``center``,
the contact center's own staff), and the rules must match every combination of the listed parameter
values and every amount exactly once: a combination no rule matches is a gap, one two rules match is
an overlap, and either is refused with the file, the line and the combination. So choosing a chain
never fails for a request whose values the policy lists, and never depends on the rules' order.

Deadlines are working time on the policy's business calendar, the calendars the tickets service
counts on (``deploy/calendars/``), loaded by the same kernel code.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, PlainValidator, field_validator, model_validator

from services.platform.calendars import BusinessCalendar, Duration, load_calendars, parse_duration
from services.platform.errors import InvalidArgument
from services.platform.settings import PROJECT_ROOT
from services.platform.yamlconfig import ConfigError, Document, read, validate

DEFAULT_POLICY_DIR = PROJECT_ROOT / "deploy" / "approvals"
DEFAULT_CALENDARS_DIR = PROJECT_ROOT / "deploy" / "calendars"
# The contact center's own staff (team leads, duty managers, dispatchers): a department with no inbox.
CENTER = "center"
# The parameters a rule matches by a list of values, in the order refusals name them.
LISTED = ("kind", "customer_tier", "ticket_type")
_CODE = r"^[a-z][a-z0-9_]{0,63}$"
_NAME = r"^[a-z][a-z0-9_-]{0,63}$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _duration(value: object) -> Duration:
    if not isinstance(value, str):
        raise ValueError(f"a deadline is working time such as 4h or 2wd, not {value!r}")
    duration = parse_duration(value)
    if duration.calendar:
        raise ValueError(f"a deadline counts working time (4h, 2wd), not calendar days: {value!r}")
    return duration


DeadlineText = Annotated[Duration, PlainValidator(_duration)]
Code = Annotated[str, Field(pattern=_CODE)]
Name = Annotated[str, Field(pattern=_NAME)]


def _amount(value: object) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"an amount is a number such as 1000 or 999.99, not {value!r}")
    try:
        amount = Decimal(str(value))
    except ArithmeticError:
        raise ValueError(f"not an amount: {value!r}") from None
    if not amount.is_finite() or amount < 0:
        raise ValueError(f"an amount is a number of 0 or more, not {value!r}")
    return amount


AmountValue = Annotated[Decimal, PlainValidator(_amount)]


class _Decider(_Strict):
    department: Code
    role: Code | None = None


class _Escalation(_Strict):
    escalate_to: _Decider


class _Step(_Strict):
    name: Name
    deciders: tuple[_Decider, ...] = Field(min_length=1, max_length=20)
    # How many of the deciders must approve; all of them when not set.
    approvals_needed: int | None = Field(default=None, ge=1)
    deadline: DeadlineText
    remind_at: tuple[float, ...] = ()
    at_deadline: _Escalation | Literal["expire"]

    @field_validator("remind_at")
    @classmethod
    def _shares(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if any(not 0 < share < 1 for share in value) or list(value) != sorted(set(value)):
            raise ValueError(f"reminders are shares of the deadline between 0 and 1, rising: {list(value)}")
        return value

    @model_validator(mode="after")
    def _needed(self) -> _Step:
        if self.approvals_needed is not None and self.approvals_needed > len(self.deciders):
            raise ValueError(
                f"approvals_needed is {self.approvals_needed}, "
                f"but the step has {len(self.deciders)} decider(s)"
            )
        return self


class _Range(_Strict):
    above: AmountValue | None = None
    up_to: AmountValue | None = None

    @model_validator(mode="after")
    def _ordered(self) -> _Range:
        if self.above is not None and self.up_to is not None and self.up_to <= self.above:
            raise ValueError(f"amount: up_to ({self.up_to}) must be more than above ({self.above})")
        return self


class _Rule(_Strict):
    name: Name
    kind: tuple[str, ...] = ()
    customer_tier: tuple[str, ...] = ()
    ticket_type: tuple[str, ...] = ()
    amount: _Range = _Range()
    steps: tuple[_Step, ...] = Field(min_length=1, max_length=20)


class _Values(_Strict):
    kind: tuple[Code, ...] = Field(min_length=1)
    customer_tier: tuple[Code, ...] = Field(min_length=1)
    ticket_type: tuple[Code, ...] = Field(min_length=1)


class _PolicyFile(_Strict):
    policy: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")]
    version: int = Field(ge=1)
    calendar: str
    currency: Annotated[str, Field(pattern=r"^[A-Z]{3}$")]
    # Digits of the currency's minor unit: a request's Money of minor_units 123456 is 1234.56.
    minor_unit_digits: int = Field(default=2, ge=0, le=4)
    values: _Values
    rules: tuple[_Rule, ...] = Field(min_length=1)


@dataclass(frozen=True)
class Decider:
    """Who may decide: a member of ``department`` (holding ``role`` in it, when set)."""

    department: str
    role: str = ""

    def __str__(self) -> str:
        return f"{self.department}/{self.role}" if self.role else self.department


@dataclass(frozen=True)
class StepSpec:
    """One step of a chain: ``needed`` approvals of its deciders complete it."""

    name: str
    deciders: tuple[Decider, ...]
    needed: int
    deadline: Duration
    remind_at: tuple[float, ...]
    # At the deadline: the backup decides the step alone (on a fresh deadline); None: the request expires.
    escalate_to: Decider | None

    @property
    def parallel(self) -> bool:
        return len(self.deciders) > 1


@dataclass(frozen=True)
class ApprovalRule:
    name: str
    matches_values: Mapping[str, frozenset[str]]  # by parameter; empty: every listed value
    above: Decimal | None
    up_to: Decimal | None
    steps: tuple[StepSpec, ...]

    def takes(self, values: Mapping[str, str]) -> bool:
        return all(not wanted or values[name] in wanted for name, wanted in self.matches_values.items())

    def takes_amount(self, amount: Decimal) -> bool:
        return (self.above is None or amount > self.above) and (self.up_to is None or amount <= self.up_to)


@dataclass(frozen=True)
class ApprovalPolicy:
    policy_id: str
    version: int
    calendar: BusinessCalendar
    currency: str
    minor_unit_digits: int
    values: Mapping[str, tuple[str, ...]]
    rules: tuple[ApprovalRule, ...]
    source: Path

    def amount_of(self, minor_units: int, currency: str) -> Decimal:
        """A request's amount in major units; refused in another currency than the policy's."""
        if minor_units < 0:
            raise InvalidArgument("amount.minor_units: an amount to approve is 0 or more")
        if currency and currency != self.currency:
            raise InvalidArgument(
                f"amount.currency: this policy decides amounts in {self.currency}, not {currency}"
            )
        return Decimal(minor_units).scaleb(-self.minor_unit_digits)

    def choose(self, values: Mapping[str, str], amount: Decimal) -> ApprovalRule:
        """The one rule for a request; a value the policy does not list is INVALID_ARGUMENT naming it."""
        for name in LISTED:
            listed = self.values[name]
            if values.get(name, "") not in listed:
                raise InvalidArgument(f"{name}: {values.get(name, '')!r} is not one of {', '.join(listed)}")
        [rule] = [rule for rule in self.rules if rule.takes(values) and rule.takes_amount(amount)]
        return rule  # exactly one: checked at load

    def rule(self, name: str) -> ApprovalRule:
        return next(rule for rule in self.rules if rule.name == name)


def load_policy(
    path: Path, calendars: Mapping[str, BusinessCalendar], departments: Iterable[str]
) -> ApprovalPolicy:
    """One policy file; ``departments``: the codes with an inbox topic (``center`` is always known)."""
    document = read(path)
    raw = validate(document, _PolicyFile)
    if raw.calendar not in calendars:
        known = ", ".join(sorted(calendars)) or "none"
        raise document.error(("calendar",), f"calendar {raw.calendar!r} is not loaded (known: {known})")
    values = {name: getattr(raw.values, name) for name in LISTED}
    for name, listed in values.items():
        if len(set(listed)) != len(listed):
            raise document.error(("values", name), f"values.{name} lists a value twice")
    known = {*departments, CENTER}
    rules = tuple(_rule(document, index, rule, values, known) for index, rule in enumerate(raw.rules))
    names = [rule.name for rule in rules]
    for index, name in enumerate(names):
        if name in names[:index]:
            raise document.error(("rules", index, "name"), f"rule name {name!r} is used twice")
    _check_coverage(document, rules, values)
    return ApprovalPolicy(
        raw.policy,
        raw.version,
        calendars[raw.calendar],
        raw.currency,
        raw.minor_unit_digits,
        values,
        rules,
        Path(path),
    )


def load_policies(
    directory: Path = DEFAULT_POLICY_DIR,
    calendars_dir: Path = DEFAULT_CALENDARS_DIR,
    departments: Iterable[str] | None = None,
) -> dict[tuple[str, int], ApprovalPolicy]:
    """Every version of every policy under ``directory``, by (policy, version); a pair defined twice,
    or a folder with none, is refused."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ConfigError(directory, None, "no such directory of approval policies")
    calendars = load_calendars(calendars_dir)
    if departments is None:
        from services.platform.topics import department_codes

        departments = department_codes()
    codes = list(departments)
    found: dict[tuple[str, int], ApprovalPolicy] = {}
    for path in sorted(directory.glob("*.yaml")):
        policy = load_policy(path, calendars, codes)
        key = (policy.policy_id, policy.version)
        if key in found:
            raise read(path).error(
                ("version",),
                f"policy {policy.policy_id} version {policy.version} is already defined in "
                f"{found[key].source}; a changed policy needs a new version",
            )
        found[key] = policy
    if not found:
        raise ConfigError(directory, None, "no approval policy (*.yaml) in the directory")
    return found


def _rule(
    document: Document,
    index: int,
    raw: _Rule,
    values: Mapping[str, tuple[str, ...]],
    departments: set[str],
) -> ApprovalRule:
    for name in LISTED:
        for position, value in enumerate(getattr(raw, name)):
            if value not in values[name]:
                raise document.error(
                    ("rules", index, name, position),
                    f"rules[{index}].{name}: {value!r} is not listed in values.{name}",
                )
    steps = []
    for number, step in enumerate(raw.steps):
        where = ("rules", index, "steps", number)
        escalation = step.at_deadline.escalate_to if isinstance(step.at_deadline, _Escalation) else None
        named = [(f"deciders[{i}]", d) for i, d in enumerate(step.deciders)]
        if escalation is not None:
            named.append(("at_deadline.escalate_to", escalation))
        for field_name, decider in named:
            if decider.department not in departments:
                raise document.error(
                    where,
                    f"rules[{index}].steps[{number}].{field_name}: department {decider.department!r} "
                    f"has no inbox topic (deploy/kafka/topics.toml [department_inboxes]) "
                    f"and is not {CENTER!r}",
                )
        if number and step.name in [s.name for s in raw.steps[:number]]:
            raise document.error((*where, "name"), f"step name {step.name!r} is used twice in the rule")
        steps.append(
            StepSpec(
                step.name,
                tuple(Decider(d.department, d.role or "") for d in step.deciders),
                step.approvals_needed or len(step.deciders),
                step.deadline,
                step.remind_at,
                Decider(escalation.department, escalation.role or "") if escalation else None,
            )
        )
    return ApprovalRule(
        raw.name,
        {name: frozenset(getattr(raw, name)) for name in LISTED},
        raw.amount.above,
        raw.amount.up_to,
        tuple(steps),
    )


def _check_coverage(
    document: Document, rules: Sequence[ApprovalRule], values: Mapping[str, tuple[str, ...]]
) -> None:
    """Every combination of listed values, over every amount from 0 up, is taken by exactly one rule.

    Per combination, the ranges of the rules that take it, in order of their lower bounds, must meet
    end to end from below 0 to no end: a range starting short of where the one before ended overlaps
    it, one starting past it leaves a gap.
    """
    for combination in itertools.product(*(values[name] for name in LISTED)):
        case = dict(zip(LISTED, combination, strict=True))
        what = ", ".join(f"{name} {value}" for name, value in case.items())
        taking = sorted(
            ((position, rule) for position, rule in enumerate(rules) if rule.takes(case)),
            key=lambda item: _low(item[1]),
        )
        reached: Decimal | None = _BELOW_ZERO  # amounts above it are not taken yet; None: all are
        previous = ""
        for position, rule in taking:
            if reached is None or _low(rule) < reached:
                raise document.error(
                    ("rules", position),
                    f"overlap: rules {previous!r} and {rule.name!r} both take {what}, "
                    f"amount {_describe(_low(rule), _lower(reached, rule.up_to))}",
                )
            if _low(rule) > reached:
                raise document.error(
                    ("rules",), f"gap: no rule takes {what}, amount {_describe(reached, _low(rule))}"
                )
            reached, previous = rule.up_to, rule.name
        if reached is not None:
            raise document.error(("rules",), f"gap: no rule takes {what}, amount {_describe(reached, None)}")


_BELOW_ZERO = Decimal(-1)  # the lower bound of a range without ``above``: it takes 0 (and no amount)


def _lower(first: Decimal | None, second: Decimal | None) -> Decimal | None:
    """The lower of two upper bounds, None being no bound."""
    bounds = [bound for bound in (first, second) if bound is not None]
    return min(bounds) if bounds else None


def _low(rule: ApprovalRule) -> Decimal:
    return _BELOW_ZERO if rule.above is None else rule.above


def _describe(above: Decimal, up_to: Decimal | None) -> str:
    if above < 0:
        return "any" if up_to is None else f"up to {up_to}"
    return f"above {above}" if up_to is None else f"above {above} up to {up_to}"
