"""Parsing deploy/kafka/topics.toml: the declared topics, department inbox expansion, clear refusals."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from services.platform.topics import TopicSpec, TopicSpecError, load_topic_specs, parse_topic_specs

CONTEXTS = ("contacts", "routing", "agents", "tickets", "approvals")


def _parse(text: str, **options) -> list[TopicSpec]:
    return parse_topic_specs(textwrap.dedent(text), "topics.toml", **options)


def _refusal(text: str) -> str:
    with pytest.raises(TopicSpecError) as refused:
        _parse(text)
    return str(refused.value)


def test_the_project_file_declares_every_topic_of_the_architecture() -> None:
    specs = {spec.name: spec for spec in load_topic_specs()}

    expected = {
        f"{context}.{kind}.v1" for context in CONTEXTS for kind in ("events", "commands", "snapshots")
    }
    expected |= {"workflow.public.v1", "deadletter.v1"}
    assert expected <= set(specs)
    assert {name for name in specs if name.startswith("dept.")} >= {
        "dept.finance.inbox.v1",
        "dept.legal.inbox.v1",
    }
    for context in CONTEXTS:
        events, commands = specs[f"{context}.events.v1"], specs[f"{context}.commands.v1"]
        assert events.config == {"cleanup.policy": "delete", "retention.ms": "-1"}
        assert commands.partitions == events.partitions
        snapshots = specs[f"{context}.snapshots.v1"]
        assert snapshots.config["cleanup.policy"] == "compact"
        assert int(snapshots.config["max.message.bytes"]) >= 16 * 1024 * 1024
    assert all(spec.replication_factor == 1 for spec in specs.values())


def test_a_topic_names_its_partitions_policy_retention_and_other_configs() -> None:
    [spec] = _parse(
        """
        [topics."orders.events.v1"]
        partitions = 4
        cleanup_policy = "delete"
        retention = "7d"
        config = { "max.message.bytes" = 2097152, "message.timestamp.type" = "CreateTime" }
        """
    )

    assert spec == TopicSpec(
        "orders.events.v1",
        4,
        1,
        {
            "cleanup.policy": "delete",
            "retention.ms": str(7 * 24 * 3600 * 1000),
            "max.message.bytes": "2097152",
            "message.timestamp.type": "CreateTime",
        },
    )


@pytest.mark.parametrize(
    ("retention", "ms"),
    [
        ("forever", "-1"),
        ("500ms", "500"),
        ("90s", "90000"),
        ("15m", "900000"),
        ("2h", "7200000"),
        ("1d", "86400000"),
    ],
)
def test_retention_is_forever_or_a_number_with_a_unit(retention: str, ms: str) -> None:
    [spec] = _parse(
        f"""
        [topics.t]
        partitions = 1
        cleanup_policy = "delete"
        retention = "{retention}"
        """
    )

    assert spec.config["retention.ms"] == ms


def test_department_inboxes_expand_to_one_topic_per_code() -> None:
    specs = _parse(
        """
        [department_inboxes]
        name = "dept.{code}.inbox.v1"
        codes = ["finance", "field_service"]
        partitions = 2
        cleanup_policy = "delete"
        retention = "30d"
        """
    )

    assert [(spec.name, spec.partitions, spec.config["retention.ms"]) for spec in specs] == [
        ("dept.finance.inbox.v1", 2, "2592000000"),
        ("dept.field_service.inbox.v1", 2, "2592000000"),
    ]


def test_the_replication_factor_comes_from_defaults_unless_overridden() -> None:
    text = """
        [defaults]
        replication_factor = 3

        [topics.t]
        partitions = 1
        cleanup_policy = "compact"
        """

    assert _parse(text)[0].replication_factor == 3
    assert _parse(text, replication_factor=1)[0].replication_factor == 1


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ('partition = 3\ncleanup_policy = "compact"', "unknown key(s) partition"),
        ('cleanup_policy = "compact"', "partitions is required"),
        ('partitions = 0\ncleanup_policy = "compact"', "partitions must be a positive integer, got 0"),
        ('partitions = "6"\ncleanup_policy = "compact"', "partitions must be a positive integer, got '6'"),
        (
            'partitions = 1\ncleanup_policy = "compcat"',
            'cleanup_policy must be "delete" or "compact", got \'compcat\'',
        ),
        ("partitions = 1", "cleanup_policy must be"),
        ('partitions = 1\ncleanup_policy = "delete"', 'cleanup_policy "delete" needs a retention'),
        ('partitions = 1\ncleanup_policy = "delete"\nretention = "7 days"', 'retention must be "forever" or'),
        (
            'partitions = 1\ncleanup_policy = "delete"\nretention = 604800000',
            'retention must be "forever" or',
        ),
        ('partitions = 1\ncleanup_policy = "compact"\nretention = "7d"', "compacted topic keeps the latest"),
        (
            'partitions = 1\ncleanup_policy = "delete"\nretention = "1d"\nconfig = { "retention.ms" = 5 }',
            "give retention instead of config 'retention.ms'",
        ),
        (
            'partitions = 1\ncleanup_policy = "compact"\nconfig = { "x" = [1] }',
            "config 'x': a config value is",
        ),
    ],
)
def test_a_bad_topic_entry_is_refused_naming_the_topic_and_the_problem(entry: str, message: str) -> None:
    refusal = _refusal(f'[topics."orders.events.v1"]\n{entry}\n')

    assert refusal.startswith("topics.toml: topic 'orders.events.v1': ")
    assert message in refusal


def test_an_illegal_topic_name_is_refused() -> None:
    refusal = _refusal('[topics."orders events"]\npartitions = 1\ncleanup_policy = "compact"\n')

    assert "topic 'orders events': a topic name is 1-249 of the characters" in refusal


def test_an_inbox_that_repeats_a_declared_topic_is_refused() -> None:
    refusal = _refusal(
        """
        [topics."dept.it.inbox.v1"]
        partitions = 1
        cleanup_policy = "compact"

        [department_inboxes]
        name = "dept.{code}.inbox.v1"
        codes = ["it"]
        partitions = 1
        cleanup_policy = "compact"
        """
    )

    assert refusal == "topics.toml: topic 'dept.it.inbox.v1' is declared twice"


def test_names_colliding_in_kafka_metrics_are_refused() -> None:
    refusal = _refusal(
        """
        [topics."a.b"]
        partitions = 1
        cleanup_policy = "compact"

        [topics."a_b"]
        partitions = 1
        cleanup_policy = "compact"
        """
    )

    assert refusal == "topics.toml: topic 'a_b' collides with 'a.b' ('.' and '_' are one)"


@pytest.mark.parametrize(
    ("inboxes", "message"),
    [
        ('name = "dept.inbox.v1"\ncodes = ["it"]', "name must be a pattern containing {code} once"),
        ('name = "dept.{code}.inbox.v1"\ncodes = []', "codes must be a non-empty list"),
        ('name = "dept.{code}.inbox.v1"\ncodes = ["IT"]', "department code 'IT' must be lower case"),
        ('name = "dept.{code}.inbox.v1"\ncodes = ["it"]\ncolour = "red"', "unknown key(s) colour"),
    ],
)
def test_a_bad_department_inbox_pattern_is_refused(inboxes: str, message: str) -> None:
    refusal = _refusal(f'[department_inboxes]\npartitions = 1\ncleanup_policy = "compact"\n{inboxes}\n')

    assert refusal.startswith("topics.toml: [department_inboxes]")
    assert message in refusal


def test_commands_and_events_of_a_context_must_have_the_same_partition_count() -> None:
    refusal = _refusal(
        """
        [topics."orders.events.v1"]
        partitions = 6
        cleanup_policy = "delete"
        retention = "forever"

        [topics."orders.commands.v1"]
        partitions = 3
        cleanup_policy = "delete"
        retention = "1d"
        """
    )

    assert refusal == (
        "topics.toml: orders.commands.v1 has 3 partitions but orders.events.v1 has 6; "
        "a context's commands and events must be partitioned alike"
    )


def test_unknown_sections_and_invalid_toml_are_refused() -> None:
    assert "top level: unknown key(s) topic" in _refusal('[topic."x"]\npartitions = 1\n')
    assert _refusal("[topics\n").startswith("topics.toml: not valid TOML: ")


def test_a_missing_file_is_refused_naming_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"

    with pytest.raises(TopicSpecError, match=f"{missing}: cannot read the topics file"):
        load_topic_specs(missing)
