"""The ACL file: the project's own grants match what each service's code reads and writes, a
department reaches only its inbox and the public topic, and a malformed file is refused by name."""

from __future__ import annotations

import pytest
from confluent_kafka.admin import AclOperation, AclPermissionType, ResourcePatternType, ResourceType

from services.agents import handlers as agents
from services.intake import handlers as intake
from services.kpi import handlers as kpi
from services.platform.acls import AclSpecError, Grant, binding, load_acl_specs, parse_acl_specs
from services.platform.envelope import DEADLETTER_TOPIC
from services.platform.process import writer_id
from services.platform.settings import Settings
from services.platform.topics import department_codes, inbox_topic, load_topic_specs
from services.routing import handlers as routing
from services.tickets import handlers as tickets
from services.tickets.assignment import MEMBERS_TOPIC
from services.tickets.publisher import PUBLIC_TOPIC

SPEC = load_acl_specs()
DECLARED = [spec.name for spec in load_topic_specs()]
# What each service's code writes (its log's topics and tables) and reacts to.
SERVICES = {
    "intake": ({intake.EVENTS_TOPIC, intake.SNAPSHOTS_TOPIC}, set(intake.REACTS_TO)),
    "routing": ({routing.EVENTS_TOPIC, routing.SNAPSHOTS_TOPIC, routing.SEATS_TOPIC}, set(routing.REACTS_TO)),
    "agents": ({agents.EVENTS_TOPIC, agents.SNAPSHOTS_TOPIC}, set(agents.REACTS_TO)),
    "kpi": (
        {kpi.CONTACTS_TOPIC, kpi.AGENTS_TOPIC, kpi.QUEUES_TOPIC, kpi.TICKETS_TOPIC, kpi.APPROVALS_TOPIC},
        set(kpi.REACTS_TO),
    ),
    "tickets": ({tickets.EVENTS_TOPIC, tickets.SNAPSHOTS_TOPIC, MEMBERS_TOPIC}, set(tickets.REACTS_TO)),
}


def test_the_tickets_publisher_writes_the_public_topic_and_every_inbox_and_reads_none() -> None:
    published = {PUBLIC_TOPIC, *map(inbox_topic, department_codes())}

    assert published <= SPEC["tickets"].topics("write")
    assert not published & SPEC["tickets"].topics("read")


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_a_service_may_read_and_write_what_its_code_does(name: str) -> None:
    principal = SPEC[name]
    writes, reacts_to = SERVICES[name]

    assert writes | {DEADLETTER_TOPIC} <= principal.topics("write")
    assert writes | reacts_to <= principal.topics("read")


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_a_service_writes_no_topic_of_another_context(name: str) -> None:
    others = set().union(*(SPEC[other].topics("write") for other in SERVICES if other != name))

    assert SPEC[name].topics("write") & others == {DEADLETTER_TOPIC}


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_a_services_writers_and_groups_are_its_own(name: str) -> None:
    grants = SPEC[name].grants
    writer = writer_id(Settings(instance_id="7"), name)

    assert any(g.resource == "transactional_id" and g.prefixed and writer.startswith(g.name) for g in grants)
    assert Grant("group", name, "read") in grants, "its reactions' consumer group is the context's name"
    assert Grant("group", f"{name}-", "read", prefixed=True) in grants, "its readers' groups: <writer>.replay"
    assert writer.startswith(f"{name}-")


def test_the_coming_services_have_principals_that_publish_to_departments() -> None:
    for name in ("tickets", "approvals"):
        writes = SPEC[name].topics("write")
        assert {f"{name}.events.v1", "workflow.public.v1", "dept.finance.inbox.v1"} <= writes


def test_every_department_reads_only_its_inbox_and_the_public_topic_with_its_own_groups() -> None:
    inboxes = sorted(name for name in DECLARED if name.startswith("dept."))
    departments = [p for p in SPEC.principals if p.kind == "department"]

    assert sorted(f"dept.{p.name.removeprefix('dept-')}.inbox.v1" for p in departments) == inboxes
    for principal in departments:
        code = principal.name.removeprefix("dept-")
        assert principal.grants == {
            Grant("topic", f"dept.{code}.inbox.v1", "read"),
            Grant("topic", "workflow.public.v1", "read"),
            Grant("group", principal.name, "read"),
            Grant("group", f"{principal.name}-", "read", prefixed=True),
        }


def test_a_grant_becomes_one_allow_binding_from_any_host() -> None:
    acl = binding("intake", Grant("transactional_id", "intake-", "write", prefixed=True))

    assert (acl.restype, acl.name, acl.resource_pattern_type, acl.principal, acl.host) == (
        ResourceType.TRANSACTIONAL_ID,
        "intake-",
        ResourcePatternType.PREFIXED,
        "User:intake",
        "*",
    )
    assert (acl.operation, acl.permission_type) == (AclOperation.WRITE, AclPermissionType.ALLOW)


def test_a_new_service_is_one_entry() -> None:
    spec = parse_acl_specs(
        '[every_service]\nwrites = ["deadletter.v1"]\n[services.billing]\nowns = "billing"\n'
        'reacts_to = ["contacts.events.v1"]\n',
        "acls.toml",
        [*DECLARED, "billing.events.v1", "billing.snapshots.v1"],
    )

    assert spec["billing"].grants == {
        Grant("topic", "billing.events.v1", "read"),
        Grant("topic", "billing.events.v1", "write"),
        Grant("topic", "billing.snapshots.v1", "read"),
        Grant("topic", "billing.snapshots.v1", "write"),
        Grant("topic", "contacts.events.v1", "read"),
        Grant("topic", "deadletter.v1", "write"),
        Grant("transactional_id", "billing-", "write", prefixed=True),
        Grant("group", "billing", "read"),
        Grant("group", "billing-", "read", prefixed=True),
    }


def test_code_in_a_services_writes_stands_for_every_department() -> None:
    spec = parse_acl_specs(
        '[services.tickets]\nowns = "tickets"\nwrites = ["dept.{code}.inbox.v1"]\n'
        '[departments]\nprincipal = "dept-{code}"\ncodes = ["it", "legal"]\n'
        'reads = ["dept.{code}.inbox.v1"]\n',
        "acls.toml",
        DECLARED,
    )

    assert spec["tickets"].topics("write") >= {"dept.it.inbox.v1", "dept.legal.inbox.v1"}
    assert spec["dept-legal"].topics("read") == {"dept.legal.inbox.v1"}


SERVICE = '[services.intake]\nowns = "contacts"\n'


@pytest.mark.parametrize(
    ("text", "refusal"),
    [
        (
            SERVICE + 'reacts_to = ["routing.event.v1"]\n',
            "topic 'routing.event.v1' is not declared in topics.toml",
        ),
        ('[services.intake]\nowns = "contact"\n', "no topic declared in topics.toml is named contact.*"),
        (SERVICE + 'colour = "red"\n', "service 'intake': unknown key(s) colour"),
        ('[services.admin]\nowns = "contacts"\n', "admin is the super user; it needs and gets no ACLs"),
        ('[services.Intake]\nowns = "contacts"\n', "a service name is lower case letters"),
        (SERVICE + '[services.other]\nowns = "contacts"\n', "is owned by both intake and other"),
        (SERVICE + 'writes = ["dept.{code}.inbox.v1"]\n', "but [departments] lists no codes"),
        ('retired = ["intake"]\n' + SERVICE, "principal 'intake' is both declared and retired"),
        (
            '[departments]\nprincipal = "dept"\ncodes = ["it"]\nreads = ["workflow.public.v1"]\n',
            "containing {code}",
        ),
        (
            '[departments]\nprincipal = "dept-{code}"\ncodes = ["it", "it"]\n'
            'reads = ["workflow.public.v1"]\n',
            "a department code is listed twice",
        ),
        (
            '[departments]\nprincipal = "dept-{code}"\ncodes = ["hr"]\nreads = ["dept.{code}.inbox.v1"]\n',
            "department 'hr': topic 'dept.hr.inbox.v1' is not declared",
        ),
        (
            '[services.dept]\nowns = "contacts"\n'
            '[departments]\nprincipal = "dept-{code}"\ncodes = ["it"]\nreads = ["workflow.public.v1"]\n',
            "dept's READ on group dept-* would also cover dept-it's group dept-it",
        ),
        ("colour = 1\n", "top level: unknown key(s) colour"),
        ("[services\n", "not valid TOML"),
    ],
)
def test_a_malformed_file_is_refused_naming_what_is_wrong(text: str, refusal: str) -> None:
    with pytest.raises(AclSpecError) as refused:
        parse_acl_specs(text, "acls.toml", DECLARED)

    assert refusal in str(refused.value)
    assert str(refused.value).startswith("acls.toml")
