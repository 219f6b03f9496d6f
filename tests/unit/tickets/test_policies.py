"""The tickets configuration: the real files load, and each kind of mistake is refused at its line."""

from __future__ import annotations

import re
import shutil
import tomllib
from collections.abc import Callable
from pathlib import Path

import pytest
from callcenter.tickets.v1 import events_pb2 as ev

from services.platform.calendars import BusinessCalendar, load_calendars
from services.platform.settings import PROJECT_ROOT
from services.platform.topics import department_codes
from services.platform.yamlconfig import ConfigError
from services.tickets.policies import (
    DEFAULT_CALENDARS_DIR,
    DEFAULT_CONFIG_DIR,
    load_catalogue,
    load_groups,
    load_policy,
    load_rules,
)

POLICY, CATALOGUE, GROUPS = "sla-policy.yaml", "dispatch-catalogue.yaml", "groups.yaml"
DEFAULT_RULE = (
    "  - name: default\n    first_response: 4h\n    resolution: 3wd\n    dispatch: {complete: 3wd}\n"
)
DISPATCH_DEFAULTS = (
    "dispatch_defaults: {accept: 1wd, complete: 5wd, supervise_after: 1wd, escalate_after: 5wd}"
)


@pytest.fixture(scope="module")
def calendars() -> dict[str, BusinessCalendar]:
    return load_calendars(DEFAULT_CALENDARS_DIR)


def variant(directory: Path, name: str, old: str, new: str) -> Path:
    """The real ``deploy/tickets/<name>`` written into ``directory`` with its one ``old`` made ``new``."""
    text = (DEFAULT_CONFIG_DIR / name).read_text(encoding="utf-8")
    assert text.count(old) == 1, f"{old!r} is not in {name} exactly once"
    path = directory / name
    path.write_text(text.replace(old, new), encoding="utf-8")
    return path


def line_of(path: Path, fragment: str, occurrence: int = 1) -> int:
    """The 1-based line of the ``occurrence``-th line outside comments that contains ``fragment``."""
    lines = path.read_text(encoding="utf-8").splitlines()
    hits = [n for n, line in enumerate(lines, 1) if fragment in line and not line.lstrip().startswith("#")]
    return hits[occurrence - 1]


def refusal(load: Callable[[], object], path: Path) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        load()
    assert caught.value.path == path
    return caught.value


# The real configuration ---------------------------------------------------------------------------


def test_the_deployed_configuration_loads(calendars):
    rules = load_rules(DEFAULT_CONFIG_DIR, DEFAULT_CALENDARS_DIR, department_codes())
    assert [rule.name for rule in rules.policy.rules] == [
        "urgent",
        "high",
        "complaint",
        "service request",
        "suggestion",
        "default",
    ]
    assert rules.policy.calendar is rules.calendars["cn-gov"]
    assert {rules.policy.follow_up_group, rules.policy.escalation_group} <= set(rules.groups)
    assert load_policy(DEFAULT_CONFIG_DIR / POLICY, calendars).policy_id == "municipal-12345"


def test_every_department_of_the_catalogue_has_an_inbox_topic(rules):
    assert set(rules.catalogue.departments) <= set(department_codes())


def test_the_kafka_acls_grant_exactly_the_departments_with_an_inbox_topic():
    acls = tomllib.loads((PROJECT_ROOT / "deploy" / "kafka" / "acls.toml").read_text(encoding="utf-8"))
    assert sorted(acls["departments"]["codes"]) == department_codes()


@pytest.mark.parametrize(
    ("ticket_type", "priority", "expected"),
    [
        (ev.TICKET_TYPE_COMPLAINT, 5, "urgent"),
        (ev.TICKET_TYPE_COMPLAINT, 4, "high"),
        (ev.TICKET_TYPE_COMPLAINT, 3, "complaint"),
        (ev.TICKET_TYPE_SERVICE_REQUEST, 1, "service request"),
        (ev.TICKET_TYPE_SUGGESTION, 3, "suggestion"),
        (ev.TICKET_TYPE_SUGGESTION, 5, "urgent"),
        (ev.TICKET_TYPE_INQUIRY, 3, "default"),
        (ev.TICKET_TYPE_FOLLOW_UP, 1, "default"),
    ],
)
def test_the_first_rule_that_matches_a_ticket_gives_its_targets(rules, ticket_type, priority, expected):
    assert rules.policy.rule_for(ticket_type, priority, "environment.noise").name == expected


# SLA policy ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("old", "new", "at", "occurrence", "reason"),
    [
        pytest.param(
            DEFAULT_RULE,
            "",
            "rules:",
            1,
            r"^gap: no rule matches an? inquiry ticket of priority 1 in any category",
            id="gap-without-a-catch-all",
        ),
        pytest.param(
            DEFAULT_RULE,
            DEFAULT_RULE + "  - name: late\n    first_response: 1h\n    resolution: 1wd\n",
            "- name: late",
            1,
            r"^rule 'late' can never match",
            id="rule-after-the-catch-all",
        ),
        pytest.param(
            "  - name: complaint\n",
            "  - name: urgent complaint\n    types: [complaint]\n    priorities: [4, 5]\n"
            "    first_response: 1h\n    resolution: 1d\n  - name: complaint\n",
            "- name: urgent complaint",
            1,
            r"^rule 'urgent complaint' can never match: the rules before it take every ticket it names",
            id="rule-shadowed-by-earlier-ones",
        ),
        pytest.param(
            "\ncalendar: cn-gov\n",
            "\ncalendar: mars\n",
            "calendar: mars",
            1,
            r"^calendar 'mars' is not loaded \(known: cn-gov\)",
            id="unknown-calendar",
        ),
        pytest.param(
            "    resolution: 5wd\n",
            "    resolution: 3 days\n",
            "resolution: 3 days",
            1,
            r"^rules\[2\]\.resolution: not a duration: '3 days'",
            id="bad-duration",
        ),
        pytest.param(
            "    priorities: [5]\n",
            "    priorities: [6]\n",
            "priorities: [6]",
            1,
            r"^rules\[0\]\.priorities: priorities are 1 to 5, not \[6\]",
            id="priority-above-5",
        ),
        pytest.param(
            "    priorities: [4]\n",
            "    priorities: [0, 4]\n",
            "priorities: [0, 4]",
            1,
            r"^rules\[1\]\.priorities: priorities are 1 to 5, not \[0\]",
            id="priority-below-1",
        ),
        pytest.param(
            "    resolution: 2h\n",
            "    resolution: 2h\n    resolve_by: 2h\n",
            "resolve_by:",
            1,
            r"^rules\[0\]\.resolve_by: unknown key",
            id="unknown-key-in-a-rule",
        ),
        pytest.param(
            "\npause_in: [",
            "\npause_on: [",
            "pause_on:",
            1,
            r"^pause_on: unknown key",
            id="misspelt-top-level-key",
        ),
        pytest.param(
            "  - name: high\n",
            "  - name: urgent\n",
            "- name: urgent",
            2,
            r"^rule name 'urgent' is used twice",
            id="duplicate-rule-name",
        ),
        pytest.param(
            "\nwarn_at: 0.8\n",
            "\nwarn_at: 1\n",
            "warn_at: 1",
            1,
            r"^warn_at: Input should be less than 1",
            id="warn-at-1",
        ),
        pytest.param(
            "\nwarn_at: 0.8\n",
            "\nwarn_at: 1.5\n",
            "warn_at: 1.5",
            1,
            r"^warn_at: Input should be less than 1",
            id="warn-at-above-1",
        ),
        pytest.param(
            "\nwarn_at: 0.8\n",
            "\nwarn_at: 0\n",
            "warn_at: 0",
            1,
            r"^warn_at: Input should be greater than 0",
            id="warn-at-0",
        ),
    ],
)
def test_a_wrong_sla_policy_is_refused_at_the_line_at_fault(
    tmp_path, calendars, old, new, at, occurrence, reason
):
    path = variant(tmp_path, POLICY, old, new)
    error = refusal(lambda: load_policy(path, calendars), path)
    assert error.line == line_of(path, at, occurrence)
    assert re.search(reason, error.reason), error.reason


@pytest.mark.parametrize("target", ["accept", "complete", "supervise_after", "escalate_after"])
def test_dispatch_defaults_must_set_every_target(tmp_path, calendars, target):
    kept = ", ".join(
        part
        for part in DISPATCH_DEFAULTS.removeprefix("dispatch_defaults: {").removesuffix("}").split(", ")
        if not part.startswith(f"{target}:")
    )
    path = variant(tmp_path, POLICY, DISPATCH_DEFAULTS, f"dispatch_defaults: {{{kept}}}")
    error = refusal(lambda: load_policy(path, calendars), path)
    assert error.line == line_of(path, "dispatch_defaults:")
    assert error.reason == f"dispatch_defaults must set {target}"


def test_a_rule_shadowed_only_in_part_still_loads(tmp_path, calendars):
    path = variant(
        tmp_path,
        POLICY,
        "  - name: complaint\n",
        "  - name: serious complaint\n    types: [complaint]\n    priorities: [3, 4]\n"
        "    first_response: 2h\n    resolution: 3wd\n  - name: complaint\n",
    )
    policy = load_policy(path, calendars)
    assert policy.rule_for(ev.TICKET_TYPE_COMPLAINT, 4, "").name == "high"
    assert policy.rule_for(ev.TICKET_TYPE_COMPLAINT, 3, "").name == "serious complaint"
    assert policy.rule_for(ev.TICKET_TYPE_COMPLAINT, 2, "").name == "complaint"


# Dispatch catalogue -------------------------------------------------------------------------------

IT_DEPARTMENT = "  it: {name: IT Service Desk, calendar: cn-gov}\n"


@pytest.mark.parametrize(
    ("old", "new", "at", "reason"),
    [
        pytest.param(
            IT_DEPARTMENT,
            IT_DEPARTMENT + "  parks: {name: Parks and Gardens, calendar: cn-gov}\n",
            "parks:",
            r"^department 'parks' has no inbox topic: add it to deploy/kafka/topics\.toml",
            id="department-without-an-inbox-topic",
        ),
        pytest.param(
            "legal.dispute: {lead: legal}",
            "legal.dispute: {lead: courts}",
            "legal.dispute:",
            r"^lead names 'courts', which is not in departments",
            id="unknown-lead",
        ),
        pytest.param(
            "water.billing: {lead: water_supply, assisting: [finance]}",
            "water.billing: {lead: water_supply, assisting: [finance, tax_office]}",
            "water.billing:",
            r"^assisting\[1\] names 'tax_office', which is not in departments",
            id="unknown-assisting-department",
        ),
        pytest.param(
            "housing.repair: {lead: housing, assisting: [urban_management]",
            "housing.repair: {lead: housing, assisting: [urban_management, housing]",
            "housing.repair:",
            r"^a department takes one part of a category",
            id="lead-also-assisting",
        ),
        pytest.param(
            "housing.repair: {lead: housing, assisting: [urban_management]",
            "housing.repair: {lead: housing, assisting: [urban_management, urban_management]",
            "housing.repair:",
            r"^a department takes one part of a category",
            id="assisting-twice",
        ),
        pytest.param(
            IT_DEPARTMENT,
            "  it: {name: IT Service Desk, calendar: it-hours}\n",
            "it: {name",
            r"^calendar 'it-hours' is not loaded \(known: cn-gov\)",
            id="unknown-calendar",
        ),
    ],
)
def test_a_wrong_catalogue_is_refused_at_the_line_at_fault(tmp_path, calendars, old, new, at, reason):
    path = variant(tmp_path, CATALOGUE, old, new)
    error = refusal(lambda: load_catalogue(path, calendars, department_codes()), path)
    assert error.line == line_of(path, at)
    assert re.search(reason, error.reason), error.reason


def test_a_department_is_refused_when_its_inbox_topic_is_not_declared(tmp_path, calendars):
    path = DEFAULT_CONFIG_DIR / CATALOGUE
    inboxes = [code for code in department_codes() if code != "legal"]
    error = refusal(lambda: load_catalogue(path, calendars, inboxes), path)
    assert error.line == line_of(path, "legal: {name")
    assert error.reason.startswith("department 'legal' has no inbox topic")


# Groups -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("old", "new", "at", "reason"),
    [
        pytest.param(
            "back_office: {strategy: round_robin, cap: 20}",
            "back_office: {strategy: random, cap: 20}",
            "back_office:",
            r"^groups\.back_office\.strategy: Input should be 'round_robin' or 'least_open'",
            id="unknown-strategy",
        ),
        pytest.param(
            "second_line: {strategy: least_open, cap: 10}",
            "second_line: {strategy: least_open, cap: 0}",
            "second_line:",
            r"^groups\.second_line\.cap: Input should be greater than or equal to 1",
            id="cap-0",
        ),
    ],
)
def test_a_wrong_group_is_refused_at_its_line(tmp_path, old, new, at, reason):
    path = variant(tmp_path, GROUPS, old, new)
    error = refusal(lambda: load_groups(path), path)
    assert error.line == line_of(path, at)
    assert re.search(reason, error.reason), error.reason


# The three files together -------------------------------------------------------------------------

GROUP_REFERENCES = [
    pytest.param(
        "follow_up: {target: 3wd, group: follow_up}",
        "follow_up: {target: 3wd, group: callbacks}",
        "follow_up: {target",
        "follow_up.group 'callbacks' is not a group of groups.yaml",
        id="follow-up-group",
    ),
    pytest.param(
        "escalation: {group: second_line, raise_priority: 1}",
        "escalation: {group: third_line, raise_priority: 1}",
        "escalation: {group",
        "escalation.group 'third_line' is not a group of groups.yaml",
        id="escalation-group",
    ),
]


def config_dir_with(tmp_path: Path, old: str, new: str) -> Path:
    config_dir = tmp_path / "tickets"
    config_dir.mkdir()
    for name in (CATALOGUE, GROUPS):
        shutil.copy(DEFAULT_CONFIG_DIR / name, config_dir / name)
    variant(config_dir, POLICY, old, new)
    return config_dir


@pytest.mark.parametrize(("old", "new", "at", "reason"), GROUP_REFERENCES)
def test_the_policy_names_only_groups_of_groups_yaml(tmp_path, old, new, at, reason):
    config_dir = config_dir_with(tmp_path, old, new)
    path = config_dir / POLICY
    error = refusal(lambda: load_rules(config_dir, DEFAULT_CALENDARS_DIR, department_codes()), path)
    assert error.reason == reason


@pytest.mark.parametrize(("old", "new", "at", "reason"), GROUP_REFERENCES)
def test_a_policy_naming_an_unknown_group_is_refused_at_its_line(tmp_path, old, new, at, reason):
    config_dir = config_dir_with(tmp_path, old, new)
    path = config_dir / POLICY
    error = refusal(lambda: load_rules(config_dir, DEFAULT_CALENDARS_DIR, department_codes()), path)
    assert error.line == line_of(path, at)
