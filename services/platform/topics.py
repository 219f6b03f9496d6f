"""Declarative topics: ``deploy/kafka/topics.toml`` parsed into specs and applied idempotently to a cluster.

``python -m services.platform.topics ensure`` is what ``make topics`` calls.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewPartitions,
    NewTopic,
)

from services.platform.declared import reject_unknown, table
from services.platform.settings import PROJECT_ROOT, Settings

DEFAULT_TOPICS_FILE = PROJECT_ROOT / "deploy" / "kafka" / "topics.toml"

_TOPIC_NAME = re.compile(r"^[A-Za-z0-9._-]{1,249}$")
_DEPARTMENT_CODE = re.compile(r"^[a-z][a-z0-9_]*$")
INBOX_PATTERN = "dept.{code}.inbox.v1"
_INBOX = re.compile(r"^dept\.(?P<code>[a-z][a-z0-9_]*)\.inbox\.v1$")
_DURATION = re.compile(r"^(\d+)(ms|s|m|h|d)$")
_DURATION_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
_KEYED_TOPIC = re.compile(r"^(?P<context>[a-z0-9_]+)\.(?P<kind>events|commands)\.(?P<version>v\d+)$")
_TOPIC_KEYS = {"partitions", "cleanup_policy", "retention", "config", "replication_factor"}
_INBOX_KEYS = _TOPIC_KEYS | {"name", "codes"}
_TOP_LEVEL_KEYS = {"defaults", "topics", "department_inboxes"}
_DEFAULT_KEYS = {"replication_factor"}


class TopicSpecError(ValueError):
    """The topics file is malformed; the message names the file, the entry and what is wrong."""


@dataclass(frozen=True)
class TopicSpec:
    """One topic as it should exist: ``config`` holds every topic-level config that is managed."""

    name: str
    partitions: int
    replication_factor: int
    config: Mapping[str, str] = field(default_factory=dict)


@dataclass
class TopicChanges:
    """What one ``ensure_topics`` run did, and what it refused to do."""

    created: list[str] = field(default_factory=list)
    reconfigured: dict[str, dict[str, tuple[str | None, str]]] = field(default_factory=dict)
    repartitioned: dict[str, tuple[int, int]] = field(default_factory=dict)
    refused: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.created or self.reconfigured or self.repartitioned)

    def report(self) -> list[str]:
        lines = [f"created {name}" for name in self.created]
        for name, configs in self.reconfigured.items():
            settings = ", ".join(f"{key}: {old} -> {new}" for key, (old, new) in sorted(configs.items()))
            lines.append(f"reconfigured {name}: {settings}")
        lines += [f"repartitioned {name}: {old} -> {new}" for name, (old, new) in self.repartitioned.items()]
        lines += [f"left as is: {reason}" for reason in self.refused]
        return lines


def load_topic_specs(
    path: Path = DEFAULT_TOPICS_FILE, replication_factor: int | None = None
) -> list[TopicSpec]:
    """Read and validate a topics file; ``replication_factor`` overrides the file's for every topic."""
    try:
        text = path.read_text()
    except OSError as error:
        raise TopicSpecError(f"{path}: cannot read the topics file: {error.strerror}") from error
    return parse_topic_specs(text, str(path), replication_factor)


def parse_topic_specs(
    text: str, source: str = "<topics>", replication_factor: int | None = None
) -> list[TopicSpec]:
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise TopicSpecError(f"{source}: not valid TOML: {error}") from error
    reject_unknown(document, _TOP_LEVEL_KEYS, f"{source}: top level", TopicSpecError)

    defaults = table(document.get("defaults", {}), f"{source}: [defaults]", TopicSpecError)
    reject_unknown(defaults, _DEFAULT_KEYS, f"{source}: [defaults]", TopicSpecError)
    default_replication = _positive_int(
        defaults.get("replication_factor", 1), f"{source}: [defaults] replication_factor"
    )
    if replication_factor is not None:
        default_replication = _positive_int(replication_factor, "replication factor override")

    specs: list[TopicSpec] = []
    topics = table(document.get("topics", {}), f"{source}: [topics]", TopicSpecError)
    for name, entry in topics.items():
        where = f"{source}: topic {name!r}"
        _check_topic_name(name, where)
        entry = table(entry, where, TopicSpecError)
        reject_unknown(entry, _TOPIC_KEYS, where, TopicSpecError)
        specs.append(_spec(name, entry, where, default_replication, replication_factor))

    if "department_inboxes" in document:
        specs += _department_inboxes(
            document["department_inboxes"], source, default_replication, replication_factor
        )

    _check_unique(specs, source)
    _check_keyed_pairs(specs, source)
    return specs


def inbox_topic(department: str) -> str:
    """The topic a department reads its work from."""
    return INBOX_PATTERN.replace("{code}", department)


def department_codes(specs: Iterable[TopicSpec] | None = None) -> list[str]:
    """The departments with an inbox topic declared (in topics.toml by default), sorted."""
    declared = load_topic_specs() if specs is None else specs
    return sorted(match["code"] for spec in declared if (match := _INBOX.match(spec.name)))


def ensure_topics(
    admin_config: Mapping[str, Any], specs: Sequence[TopicSpec], timeout_s: float = 30.0
) -> TopicChanges:
    """Make the cluster match ``specs``: create missing topics, set differing configs, raise partition counts.

    Idempotent: a second run with the same specs changes nothing. Partition counts are never lowered and
    replication factors never changed; both are reported in ``refused``.
    """
    admin = AdminClient(dict(admin_config))
    changes = TopicChanges()
    existing = admin.list_topics(timeout=timeout_s).topics
    missing = [spec for spec in specs if spec.name not in existing]
    present = [spec for spec in specs if spec.name in existing]

    if missing:
        futures = admin.create_topics(
            [
                NewTopic(spec.name, spec.partitions, spec.replication_factor, config=dict(spec.config))
                for spec in missing
            ],
            request_timeout=timeout_s,
        )
        raced = []
        for spec in missing:
            try:
                futures[spec.name].result()
                changes.created.append(spec.name)
            except KafkaException as error:
                if error.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                    raise
                raced.append(spec)
        if raced:
            existing = admin.list_topics(timeout=timeout_s).topics
            present += raced

    if present:
        _reconcile_partitions(admin, present, existing, changes, timeout_s)
        _reconcile_configs(admin, present, changes, timeout_s)

    _await_leaders(admin, [*changes.created, *changes.repartitioned], specs, timeout_s)
    return changes


def _spec(
    name: str,
    entry: Mapping[str, Any],
    where: str,
    default_replication: int,
    replication_override: int | None,
) -> TopicSpec:
    if "partitions" not in entry:
        raise TopicSpecError(f"{where}: partitions is required")
    partitions = _positive_int(entry["partitions"], f"{where}: partitions")
    replication = default_replication
    if replication_override is None and "replication_factor" in entry:
        replication = _positive_int(entry["replication_factor"], f"{where}: replication_factor")

    config = {
        key: _config_value(value, f"{where}: config {key!r}")
        for key, value in table(entry.get("config", {}), f"{where}: config", TopicSpecError).items()
    }
    for managed, own_key in (("cleanup.policy", "cleanup_policy"), ("retention.ms", "retention")):
        if managed in config:
            raise TopicSpecError(f"{where}: give {own_key} instead of config {managed!r}")

    policy = entry.get("cleanup_policy")
    if policy not in ("delete", "compact"):
        raise TopicSpecError(f'{where}: cleanup_policy must be "delete" or "compact", got {policy!r}')
    config["cleanup.policy"] = policy
    if policy == "delete":
        if "retention" not in entry:
            raise TopicSpecError(
                f'{where}: cleanup_policy "delete" needs a retention ("forever" or e.g. "7d")'
            )
        config["retention.ms"] = _retention_ms(entry["retention"], f"{where}: retention")
    elif "retention" in entry:
        raise TopicSpecError(f"{where}: a compacted topic keeps the latest record per key; remove retention")
    return TopicSpec(name, partitions, replication, config)


def _department_inboxes(
    entry: Any, source: str, default_replication: int, replication_override: int | None
) -> list[TopicSpec]:
    where = f"{source}: [department_inboxes]"
    entry = table(entry, where, TopicSpecError)
    reject_unknown(entry, _INBOX_KEYS, where, TopicSpecError)
    pattern = entry.get("name")
    if not isinstance(pattern, str) or pattern.count("{code}") != 1:
        raise TopicSpecError(f"{where}: name must be a pattern containing {{code}} once, got {pattern!r}")
    codes = entry.get("codes")
    if not isinstance(codes, list) or not codes:
        raise TopicSpecError(f"{where}: codes must be a non-empty list of department codes")
    topic_entry = {key: value for key, value in entry.items() if key in _TOPIC_KEYS}
    specs = []
    for code in codes:
        if not isinstance(code, str) or not _DEPARTMENT_CODE.match(code):
            raise TopicSpecError(
                f"{where}: department code {code!r} must be lower case letters, digits and '_', "
                f"starting with a letter"
            )
        name = pattern.replace("{code}", code)
        topic_where = f"{where} topic {name!r}"
        _check_topic_name(name, topic_where)
        specs.append(_spec(name, topic_entry, topic_where, default_replication, replication_override))
    return specs


def _check_topic_name(name: str, where: str) -> None:
    if not _TOPIC_NAME.match(name) or name in (".", ".."):
        raise TopicSpecError(f"{where}: a topic name is 1-249 of the characters A-Z a-z 0-9 . _ -")


def _check_unique(specs: Iterable[TopicSpec], source: str) -> None:
    # Kafka's metric names turn '.' into '_', so names differing only there collide on the broker.
    seen: dict[str, str] = {}
    for spec in specs:
        collision_key = spec.name.replace(".", "_")
        if collision_key in seen:
            other = seen[collision_key]
            reason = (
                "is declared twice"
                if other == spec.name
                else f"collides with {other!r} ('.' and '_' are one)"
            )
            raise TopicSpecError(f"{source}: topic {spec.name!r} {reason}")
        seen[collision_key] = spec.name


def _check_keyed_pairs(specs: Iterable[TopicSpec], source: str) -> None:
    partitions: dict[tuple[str, str], dict[str, TopicSpec]] = {}
    for spec in specs:
        match = _KEYED_TOPIC.match(spec.name)
        if match:
            partitions.setdefault((match["context"], match["version"]), {})[match["kind"]] = spec
    for pair in partitions.values():
        events, commands = pair.get("events"), pair.get("commands")
        if events and commands and events.partitions != commands.partitions:
            raise TopicSpecError(
                f"{source}: {commands.name} has {commands.partitions} partitions but {events.name} has "
                f"{events.partitions}; a context's commands and events must be partitioned alike"
            )


def _positive_int(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise TopicSpecError(f"{where} must be a positive integer, got {value!r}")
    return value


def _retention_ms(value: Any, where: str) -> str:
    if value == "forever":
        return "-1"
    match = _DURATION.match(value) if isinstance(value, str) else None
    if match is None or int(match[1]) == 0:
        raise TopicSpecError(
            f'{where} must be "forever" or a positive number with a unit ms, s, m, h, d, got {value!r}'
        )
    return str(int(match[1]) * _DURATION_MS[match[2]])


def _config_value(value: Any, where: str) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float | str):
        return str(value)
    raise TopicSpecError(
        f"{where}: a config value is a string, number or boolean, got {type(value).__name__}"
    )


def _reconcile_partitions(
    admin: AdminClient,
    specs: Sequence[TopicSpec],
    existing: Mapping[str, Any],
    changes: TopicChanges,
    timeout_s: float,
) -> None:
    raise_to = []
    for spec in specs:
        partitions = existing[spec.name].partitions
        current = len(partitions)
        if current < spec.partitions:
            raise_to.append(NewPartitions(spec.name, spec.partitions))
            changes.repartitioned[spec.name] = (current, spec.partitions)
        elif current > spec.partitions:
            changes.refused.append(
                f"{spec.name} has {current} partitions, more than the {spec.partitions} declared "
                f"(partitions are never removed)"
            )
        replication = len(next(iter(partitions.values())).replicas) if partitions else 0
        if replication and replication != spec.replication_factor:
            changes.refused.append(
                f"{spec.name} has replication factor {replication}, not {spec.replication_factor} "
                f"(changing it needs a partition reassignment)"
            )
    if raise_to:
        for future in admin.create_partitions(raise_to, request_timeout=timeout_s).values():
            future.result()


def _reconcile_configs(
    admin: AdminClient, specs: Sequence[TopicSpec], changes: TopicChanges, timeout_s: float
) -> None:
    resources = [ConfigResource(ConfigResource.Type.TOPIC, spec.name) for spec in specs]
    described = admin.describe_configs(resources, request_timeout=timeout_s)
    to_alter = []
    for resource, spec in zip(resources, specs, strict=True):
        current = described[resource].result()
        differing = {
            key: (current[key].value if key in current else None, value)
            for key, value in spec.config.items()
            if key not in current or current[key].value != value
        }
        if differing:
            changes.reconfigured[spec.name] = differing
            to_alter.append(
                ConfigResource(
                    ConfigResource.Type.TOPIC,
                    spec.name,
                    incremental_configs=[
                        ConfigEntry(key, new, incremental_operation=AlterConfigOpType.SET)
                        for key, (_, new) in differing.items()
                    ],
                )
            )
    if to_alter:
        for future in admin.incremental_alter_configs(to_alter, request_timeout=timeout_s).values():
            future.result()


def _await_leaders(
    admin: AdminClient, names: Sequence[str], specs: Sequence[TopicSpec], timeout_s: float
) -> None:
    """Wait until new topics and partitions have leaders, so a producer right after this never misses them."""
    wanted = {spec.name: spec.partitions for spec in specs if spec.name in names}
    deadline = time.monotonic() + timeout_s
    while wanted:
        topics = admin.list_topics(timeout=max(0.1, deadline - time.monotonic())).topics
        for name, partitions in list(wanted.items()):
            metadata = topics.get(name)
            if (
                metadata is not None
                and metadata.error is None
                and len(metadata.partitions) >= partitions
                and all(p.leader >= 0 for p in metadata.partitions.values())
            ):
                del wanted[name]
        if not wanted:
            return
        if time.monotonic() >= deadline:
            raise TimeoutError(
                f"topics without partition leaders after {timeout_s:.0f} s: {', '.join(sorted(wanted))}"
            )
        time.sleep(0.05)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.platform.topics", description=__doc__)
    subcommands = parser.add_subparsers(dest="command", required=True)
    ensure = subcommands.add_parser("ensure", help="create or update the declared topics")
    ensure.add_argument("--file", type=Path, default=DEFAULT_TOPICS_FILE)
    ensure.add_argument("--replication-factor", type=int, default=None)
    arguments = parser.parse_args(argv)

    settings = Settings()
    servers = settings.kafka.bootstrap_servers
    try:
        specs = load_topic_specs(arguments.file, arguments.replication_factor)
    except TopicSpecError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    try:
        AdminClient({**settings.kafka.client_config(), "log_level": 0}).list_topics(timeout=5)
    except ValueError as error:  # no credentials (KafkaCredentialsMissing)
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KafkaException:
        print(
            f"error: no Kafka answers on {servers} (start the local one with `make kafka-up`)",
            file=sys.stderr,
        )
        return 1
    try:
        changes = ensure_topics(settings.kafka.client_config(), specs)
    except (KafkaException, TimeoutError) as error:
        print(f"error: applying topics to {servers} failed: {error}", file=sys.stderr)
        return 1
    for line in changes.report():
        print(line)
    verdict = "changed" if changes.changed else "already up to date"
    print(f"{len(specs)} topics on {servers}: {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
