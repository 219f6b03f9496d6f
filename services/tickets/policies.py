"""The tickets service's configuration: SLA policies, the dispatch catalogue and the ticket groups.

Each is a versioned YAML file under ``deploy/tickets/`` (see the files for the format), loaded
strictly: a file that does not parse, names an unknown calendar or department, or leaves a gap is
refused with the file, the line and the reason. Tickets record the policy, catalogue and calendar
versions they were timed by, so a later version changes only what comes after it.

SLA rules match in order, first hit wins, on a ticket's type, priority and category; every type and
priority must be matched by a rule that takes any category (no gaps), and no rule may be shadowed
whole by the ones before it (it could never match).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal

from callcenter.tickets.v1 import events_pb2 as ev
from pydantic import BaseModel, ConfigDict, Field, PlainValidator, field_validator

from services.platform.calendars import BusinessCalendar, Duration, load_calendars, parse_duration
from services.platform.settings import PROJECT_ROOT
from services.platform.yamlconfig import Document, read, validate

DEFAULT_CONFIG_DIR = PROJECT_ROOT / "deploy" / "tickets"
DEFAULT_CALENDARS_DIR = PROJECT_ROOT / "deploy" / "calendars"

TYPES = {
    "inquiry": ev.TICKET_TYPE_INQUIRY,
    "complaint": ev.TICKET_TYPE_COMPLAINT,
    "service_request": ev.TICKET_TYPE_SERVICE_REQUEST,
    "suggestion": ev.TICKET_TYPE_SUGGESTION,
    "follow_up": ev.TICKET_TYPE_FOLLOW_UP,
}
PRIORITIES = (1, 2, 3, 4, 5)
PAUSABLE = ("waiting_on_customer", "waiting_for_approval")

TicketTypeName = Literal["inquiry", "complaint", "service_request", "suggestion", "follow_up"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _duration(value: object) -> Duration:
    if isinstance(value, Duration):
        return value
    if not isinstance(value, str):
        raise ValueError(f"a duration is text such as 2h or 3wd, not {value!r}")
    return parse_duration(value)


DurationText = Annotated[Duration, PlainValidator(_duration)]


class DispatchTargets(_Strict):
    """A department's deadlines, each counted from the dispatch on the department's calendar."""

    accept: DurationText | None = None
    complete: DurationText | None = None
    # Past the due time, unfinished: a supervision notice after this, an escalation after that.
    supervise_after: DurationText | None = None
    escalate_after: DurationText | None = None


class _Rule(_Strict):
    name: str = Field(min_length=1, max_length=64)
    types: tuple[TicketTypeName, ...] = ()
    priorities: tuple[int, ...] = ()
    categories: tuple[str, ...] = ()
    first_response: DurationText
    resolution: DurationText
    dispatch: DispatchTargets = DispatchTargets()
    follow_up: bool = True

    @field_validator("priorities")
    @classmethod
    def _priorities(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        unknown = sorted(set(value) - set(PRIORITIES))
        if unknown:
            raise ValueError(f"priorities are 1 to 5, not {unknown}")
        return value


class _FollowUp(_Strict):
    target: DurationText
    group: str = Field(min_length=1, max_length=128)


class _Escalation(_Strict):
    group: str = Field(min_length=1, max_length=128)
    raise_priority: int = Field(default=1, ge=0, le=4)


class _PolicyFile(_Strict):
    policy: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")
    version: int = Field(ge=1)
    calendar: str
    warn_at: float = Field(default=0.8, gt=0, lt=1)
    pause_in: tuple[Literal["waiting_on_customer", "waiting_for_approval"], ...] = PAUSABLE
    reopen_within: DurationText
    confirm_within: DurationText
    follow_up: _FollowUp
    escalation: _Escalation
    dispatch_defaults: DispatchTargets
    rules: tuple[_Rule, ...] = Field(min_length=1)


@dataclass(frozen=True)
class SlaRule:
    name: str
    types: frozenset[int]
    priorities: frozenset[int]
    categories: frozenset[str]
    first_response: Duration
    resolution: Duration
    dispatch: DispatchTargets
    follow_up: bool

    def matches(self, ticket_type: int, priority: int, category: str) -> bool:
        return (
            (not self.types or ticket_type in self.types)
            and (not self.priorities or priority in self.priorities)
            and (not self.categories or category in self.categories)
        )


@dataclass(frozen=True)
class SlaPolicy:
    """Targets for a ticket's clocks, chosen by the first rule that matches it."""

    policy_id: str
    version: int
    calendar: BusinessCalendar
    warn_share: float
    pause_in: frozenset[str]
    reopen_within: Duration
    confirm_within: Duration
    follow_up_target: Duration
    follow_up_group: str
    escalation_group: str
    raise_priority: int
    dispatch_defaults: DispatchTargets
    rules: tuple[SlaRule, ...]

    def rule_for(self, ticket_type: int, priority: int, category: str) -> SlaRule:
        for rule in self.rules:
            if rule.matches(ticket_type, priority, category):
                return rule
        raise AssertionError("a loaded policy has no gaps")  # checked at load

    def dispatch_targets(self, rule: SlaRule, override: Duration | None) -> DispatchTargets:
        """The rule's dispatch targets over the defaults; a catalogue category may set ``complete``."""
        merged = {
            name: getattr(rule.dispatch, name) or getattr(self.dispatch_defaults, name)
            for name in DispatchTargets.model_fields
        }
        if override is not None:
            merged["complete"] = override
        return DispatchTargets(**merged)


def load_policy(path: Path, calendars: Mapping[str, BusinessCalendar]) -> SlaPolicy:
    document = read(path)
    raw = validate(document, _PolicyFile)
    calendar = _calendar(document, ("calendar",), raw.calendar, calendars)
    for name in DispatchTargets.model_fields:
        if getattr(raw.dispatch_defaults, name) is None:
            raise document.error(("dispatch_defaults",), f"dispatch_defaults must set {name}")
    rules = tuple(
        SlaRule(
            rule.name,
            frozenset(TYPES[name] for name in rule.types),
            frozenset(rule.priorities),
            frozenset(rule.categories),
            rule.first_response,
            rule.resolution,
            rule.dispatch,
            rule.follow_up,
        )
        for rule in raw.rules
    )
    _check_names_unique(document, [rule.name for rule in rules])
    _check_coverage(document, rules)
    return SlaPolicy(
        raw.policy,
        raw.version,
        calendar,
        raw.warn_at,
        frozenset(raw.pause_in),
        raw.reopen_within,
        raw.confirm_within,
        raw.follow_up.target,
        raw.follow_up.group,
        raw.escalation.group,
        raw.escalation.raise_priority,
        raw.dispatch_defaults,
        rules,
    )


def _check_names_unique(document: Document, names: Sequence[str]) -> None:
    seen: set[str] = set()
    for index, name in enumerate(names):
        if name in seen:
            raise document.error(("rules", index, "name"), f"rule name {name!r} is used twice")
        seen.add(name)


def _check_coverage(document: Document, rules: Sequence[SlaRule]) -> None:
    """No (type, priority) left without a rule for any category; no rule that can never match."""
    categories = sorted({category for rule in rules for category in rule.categories})
    # One category no rule names stands for every other category a ticket may carry.
    probes = [*categories, "\x00any other category"]
    for ticket_type, priority in itertools.product(TYPES.values(), PRIORITIES):
        for category in probes:
            if not any(rule.matches(ticket_type, priority, category) for rule in rules):
                type_name = ev.TicketType.Name(ticket_type).removeprefix("TICKET_TYPE_").lower()
                which = "any category" if category.startswith("\x00") else f"category {category!r}"
                raise document.error(
                    ("rules",),
                    f"gap: no rule matches a {type_name} ticket of priority {priority} in {which}; "
                    f"end the rules with one that matches every ticket",
                )
    for index, rule in enumerate(rules):
        cases = itertools.product(
            rule.types or TYPES.values(), rule.priorities or PRIORITIES, rule.categories or probes
        )
        if all(any(earlier.matches(*case) for earlier in rules[:index]) for case in cases):
            raise document.error(
                ("rules", index),
                f"rule {rule.name!r} can never match: the rules before it take every ticket it names",
            )


class _Department(_Strict):
    name: str = Field(min_length=1, max_length=256)
    calendar: str


class _Category(_Strict):
    lead: str
    assisting: tuple[str, ...] = ()
    # The completion target for this category, over the SLA rule's.
    complete: DurationText | None = None


class _Reviews(_Strict):
    # Who reviews a department's return, and its request for more time: the center's dispatch desk
    # (ReviewReturn, ReviewExtension), or the approvals service by its policy (kinds dispatch_return,
    # dispatch_extension), which then chooses who decides, by the length of an extension too.
    returns: Literal["center", "approvals"] = "center"
    extensions: Literal["center", "approvals"] = "center"


class _CatalogueFile(_Strict):
    catalogue: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")
    version: int = Field(ge=1)
    departments: dict[str, _Department] = Field(min_length=1)
    categories: dict[str, _Category] = Field(default_factory=dict)
    reviews: _Reviews = _Reviews()


@dataclass(frozen=True)
class Department:
    code: str
    name: str
    calendar: BusinessCalendar


@dataclass(frozen=True)
class CategoryRoute:
    category: str
    lead: str
    assisting: tuple[str, ...]
    complete: Duration | None


@dataclass(frozen=True)
class Catalogue:
    """Who is responsible for what: the departments and, per category, the lead and assisting ones."""

    catalogue_id: str
    version: int
    departments: Mapping[str, Department]
    categories: Mapping[str, CategoryRoute]
    # The dispatch reviews sent through the approvals service ("dispatch_return", "dispatch_extension").
    reviewed_by_approvals: frozenset[str] = frozenset()


def load_catalogue(
    path: Path, calendars: Mapping[str, BusinessCalendar], inbox_codes: Iterable[str]
) -> Catalogue:
    """``inbox_codes``: the departments with an inbox topic (topics.toml); no other can be dispatched to."""
    document = read(path)
    raw = validate(document, _CatalogueFile)
    inboxes = set(inbox_codes)
    departments = {}
    for code, entry in raw.departments.items():
        if code not in inboxes:
            raise document.error(
                ("departments", code),
                f"department {code!r} has no inbox topic: add it to deploy/kafka/topics.toml "
                f"[department_inboxes] and deploy/kafka/acls.toml [departments] codes",
            )
        calendar = _calendar(document, ("departments", code, "calendar"), entry.calendar, calendars)
        departments[code] = Department(code, entry.name, calendar)
    categories = {}
    for category, entry in raw.categories.items():
        named = [("lead", entry.lead)] + [(f"assisting[{i}]", code) for i, code in enumerate(entry.assisting)]
        for where, code in named:
            if code not in departments:
                raise document.error(
                    ("categories", category), f"{where} names {code!r}, which is not in departments"
                )
        if entry.lead in entry.assisting or len(set(entry.assisting)) != len(entry.assisting):
            raise document.error(("categories", category), "a department takes one part of a category")
        categories[category] = CategoryRoute(category, entry.lead, entry.assisting, entry.complete)
    by_approvals = frozenset(
        kind
        for kind, reviewer in (
            ("dispatch_return", raw.reviews.returns),
            ("dispatch_extension", raw.reviews.extensions),
        )
        if reviewer == "approvals"
    )
    return Catalogue(raw.catalogue, raw.version, departments, categories, by_approvals)


class _Group(_Strict):
    strategy: Literal["round_robin", "least_open"] = "round_robin"
    # Most open tickets one member holds; the group's next ticket waits for a member below it.
    cap: int = Field(default=20, ge=1, le=10_000)
    members: tuple[str, ...] = ()


class _GroupsFile(_Strict):
    version: int = Field(ge=1)
    groups: dict[str, _Group] = Field(min_length=1)


@dataclass(frozen=True)
class Group:
    group_id: str
    strategy: str
    cap: int
    members: tuple[str, ...]


def load_groups(path: Path) -> dict[str, Group]:
    document = read(path)
    raw = validate(document, _GroupsFile)
    return {
        group_id: Group(group_id, entry.strategy, entry.cap, entry.members)
        for group_id, entry in raw.groups.items()
    }


@dataclass(frozen=True)
class Rules:
    """Everything the tickets domain decides by that is configuration, as one value."""

    policy: SlaPolicy
    catalogue: Catalogue
    groups: Mapping[str, Group] = field(default_factory=dict)
    # Every calendar loaded, by id: a clock resumes on the calendar it started on.
    calendars: Mapping[str, BusinessCalendar] = field(default_factory=dict)

    def calendar_of(self, department: str) -> BusinessCalendar:
        return self.catalogue.departments[department].calendar


def load_rules(
    config_dir: Path = DEFAULT_CONFIG_DIR,
    calendars_dir: Path = DEFAULT_CALENDARS_DIR,
    inbox_codes: Iterable[str] | None = None,
) -> Rules:
    """The SLA policy, catalogue and groups under ``config_dir`` on the calendars of ``calendars_dir``."""
    calendars = load_calendars(calendars_dir)
    if inbox_codes is None:
        from services.platform.topics import department_codes

        inbox_codes = department_codes()
    policy = load_policy(config_dir / "sla-policy.yaml", calendars)
    catalogue = load_catalogue(config_dir / "dispatch-catalogue.yaml", calendars, inbox_codes)
    groups = load_groups(config_dir / "groups.yaml")
    for loc, group in (
        (("follow_up", "group"), policy.follow_up_group),
        (("escalation", "group"), policy.escalation_group),
    ):
        if group not in groups:
            document = read(config_dir / "sla-policy.yaml")
            raise document.error(loc, f"{'.'.join(loc)} {group!r} is not a group of groups.yaml")
    return Rules(policy, catalogue, groups, calendars)


def _calendar(
    document: Document,
    loc: tuple[str | int, ...],
    calendar_id: str,
    calendars: Mapping[str, BusinessCalendar],
) -> BusinessCalendar:
    try:
        return calendars[calendar_id]
    except KeyError:
        known = ", ".join(sorted(calendars)) or "none"
        raise document.error(loc, f"calendar {calendar_id!r} is not loaded (known: {known})") from None
