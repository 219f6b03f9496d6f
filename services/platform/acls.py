"""Declarative access: ``deploy/kafka/acls.toml`` parsed into principals and grants, applied idempotently.

``python -m services.platform.acls ensure`` is what ``make kafka-up`` calls after the topics: it creates
the SCRAM users that are missing (locally with a password of their own, ``services.platform.credentials``),
sets again a user whose stored credential no longer takes its password file, grants what the file
derives and revokes what it no longer grants, for its own principals only. ``show`` prints the grants.

A service entry is one prefix of owned topics plus the topics it reacts to; everything else a service
needs (its transactional ids, its consumer groups, the dead-letter topic) is derived, so a new service
is one entry. Every topic named must be declared in ``topics.toml``: a typo fails, never grants.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
import tomllib
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import (
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    AdminClient,
    ResourcePatternType,
    ResourceType,
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialDeletion,
    UserScramCredentialUpsertion,
)

from services.platform.credentials import ensure_password, read_password
from services.platform.declared import reject_unknown, table
from services.platform.settings import ADMIN_PRINCIPAL, Settings
from services.platform.topics import DEFAULT_TOPICS_FILE, TopicSpecError, load_topic_specs

DEFAULT_ACLS_FILE = DEFAULT_TOPICS_FILE.with_name("acls.toml")
SCRAM_ITERATIONS = 8192
CODE = "{code}"

Resource = Literal["topic", "group", "transactional_id"]
Operation = Literal["read", "write"]

_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_TOP_LEVEL_KEYS = {"retired", "every_service", "services", "departments"}
_EVERY_SERVICE_KEYS = {"writes"}
_SERVICE_KEYS = {"owns", "reacts_to", "writes"}
_DEPARTMENT_KEYS = {"principal", "codes", "reads"}
_RESOURCE_TYPES: dict[str, ResourceType] = {
    "topic": ResourceType.TOPIC,
    "group": ResourceType.GROUP,
    "transactional_id": ResourceType.TRANSACTIONAL_ID,
}
_OPERATIONS: dict[str, AclOperation] = {"read": AclOperation.READ, "write": AclOperation.WRITE}
_LOGIN_REFUSED = {KafkaError._AUTHENTICATION, KafkaError.SASL_AUTHENTICATION_FAILED}


class AclSpecError(ValueError):
    """The ACL file is malformed; the message names the file, the entry and what is wrong."""


@dataclass(frozen=True, order=True)
class Grant:
    """One ALLOW ACL of a principal, from any host: ``operation`` on a resource named ``name``, or
    (``prefixed``) on every resource whose name starts with it."""

    resource: Resource
    name: str
    operation: Operation
    prefixed: bool = False

    def describe(self) -> str:
        return f"{self.operation.upper()} on {self.resource} {self.name}{'*' if self.prefixed else ''}"


@dataclass(frozen=True)
class Principal:
    """A SCRAM user and everything it is granted."""

    name: str
    kind: Literal["service", "department"]
    grants: frozenset[Grant]

    @property
    def user(self) -> str:
        return f"User:{self.name}"

    def topics(self, operation: Operation) -> set[str]:
        return {g.name for g in self.grants if g.resource == "topic" and g.operation == operation}


@dataclass(frozen=True)
class AclSpec:
    """The principals of an ACL file, and those it retired."""

    principals: tuple[Principal, ...]
    retired: tuple[str, ...] = ()

    def __getitem__(self, name: str) -> Principal:
        for principal in self.principals:
            if principal.name == name:
                return principal
        raise KeyError(name)

    @property
    def managed(self) -> set[str]:
        """Every principal whose ACLs this file decides: its own and the retired ones."""
        return {p.name for p in self.principals} | set(self.retired)


@dataclass
class AclChanges:
    """What one ``ensure_access`` run did, and what it left alone."""

    users_created: list[str] = field(default_factory=list)
    users_updated: list[str] = field(default_factory=list)
    users_removed: list[str] = field(default_factory=list)
    granted: list[str] = field(default_factory=list)
    revoked: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(
            self.users_created or self.users_updated or self.users_removed or self.granted or self.revoked
        )

    def report(self) -> list[str]:
        return [
            *(f"created user {name}" for name in self.users_created),
            *(
                f"set the password of user {name} again (it no longer took its file)"
                for name in self.users_updated
            ),
            *(f"removed retired user {name}" for name in self.users_removed),
            *(f"granted {line}" for line in self.granted),
            *(f"revoked {line}" for line in self.revoked),
            *(f"left as is: {reason}" for reason in self.skipped),
        ]


# Reading the file ---------------------------------------------------------------------------------


def load_acl_specs(path: Path = DEFAULT_ACLS_FILE, topics_file: Path = DEFAULT_TOPICS_FILE) -> AclSpec:
    """Read and validate an ACL file against the topics that ``topics_file`` declares."""
    try:
        text = path.read_text()
    except OSError as error:
        raise AclSpecError(f"{path}: cannot read the ACL file: {error.strerror}") from error
    try:
        declared = [spec.name for spec in load_topic_specs(topics_file)]
    except TopicSpecError as error:
        raise AclSpecError(f"{path}: the topics it names are unknown: {error}") from error
    return parse_acl_specs(text, str(path), declared)


def parse_acl_specs(text: str, source: str, declared_topics: Collection[str]) -> AclSpec:
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise AclSpecError(f"{source}: not valid TOML: {error}") from error
    reject_unknown(document, _TOP_LEVEL_KEYS, f"{source}: top level", AclSpecError)
    declared = set(declared_topics)

    departments = table(document.get("departments", {}), f"{source}: [departments]", AclSpecError)
    reject_unknown(departments, _DEPARTMENT_KEYS, f"{source}: [departments]", AclSpecError)
    codes = _codes(departments, f"{source}: [departments]") if departments else []

    every = table(document.get("every_service", {}), f"{source}: [every_service]", AclSpecError)
    reject_unknown(every, _EVERY_SERVICE_KEYS, f"{source}: [every_service]", AclSpecError)
    shared_writes = _topics(every, "writes", f"{source}: [every_service]", declared, codes)

    principals = [
        _service(name, entry, f"{source}: service {name!r}", declared, codes, shared_writes)
        for name, entry in table(document.get("services", {}), f"{source}: [services]", AclSpecError).items()
    ]
    if departments:
        principals += _departments(departments, codes, f"{source}: [departments]", declared)

    retired = document.get("retired", [])
    if not isinstance(retired, list) or not all(isinstance(name, str) and name for name in retired):
        raise AclSpecError(f"{source}: retired must be a list of principal names")
    _check_principals(principals, retired, source)
    return AclSpec(tuple(principals), tuple(retired))


def _service(
    name: str,
    entry: Any,
    where: str,
    declared: set[str],
    codes: Sequence[str],
    shared_writes: Sequence[str],
) -> Principal:
    if not _NAME.match(name):
        raise AclSpecError(
            f"{where}: a service name is lower case letters, digits and '_', starting with a letter"
        )
    entry = table(entry, where, AclSpecError)
    reject_unknown(entry, _SERVICE_KEYS, where, AclSpecError)
    owns = entry.get("owns")
    if not isinstance(owns, str) or not _NAME.match(owns):
        raise AclSpecError(
            f'{where}: owns must be the prefix of its topics\' names (e.g. "contacts"), got {owns!r}'
        )
    owned = sorted(topic for topic in declared if topic.startswith(f"{owns}."))
    if not owned:
        raise AclSpecError(f"{where}: no topic declared in topics.toml is named {owns}.*")
    reads = _topics(entry, "reacts_to", where, declared, codes)
    writes = [*_topics(entry, "writes", where, declared, codes), *shared_writes]
    grants = {
        *(Grant("topic", topic, operation) for topic in owned for operation in ("read", "write")),
        *(Grant("topic", topic, "read") for topic in reads),
        *(Grant("topic", topic, "write") for topic in writes),
        # Its writers' transactional ids are "<context>-<instance id>" (services.platform.process).
        Grant("transactional_id", f"{name}-", "write", prefixed=True),
        *_own_groups(name),
    }
    return Principal(name, "service", frozenset(grants))


def _departments(
    entry: Mapping[str, Any], codes: Sequence[str], where: str, declared: set[str]
) -> list[Principal]:
    pattern = entry.get("principal")
    if not isinstance(pattern, str) or pattern.count(CODE) != 1:
        raise AclSpecError(f"{where}: principal must be a pattern containing {CODE} once, got {pattern!r}")
    reads = entry.get("reads")
    if not isinstance(reads, list) or not reads or not all(isinstance(topic, str) for topic in reads):
        raise AclSpecError(f"{where}: reads must be a non-empty list of topic names")
    principals = []
    for code in codes:
        name = pattern.replace(CODE, code)
        topics = [topic.replace(CODE, code) for topic in reads]
        for topic in topics:
            _check_declared(topic, f"{where} department {code!r}", declared)
        grants = {*(Grant("topic", topic, "read") for topic in topics), *_own_groups(name)}
        principals.append(Principal(name, "department", frozenset(grants)))
    return principals


def _own_groups(name: str) -> set[Grant]:
    # "<name>" is its consumer group; "<name>-*" its readers' (replay, resolve) and any others.
    return {Grant("group", name, "read"), Grant("group", f"{name}-", "read", prefixed=True)}


def _codes(entry: Mapping[str, Any], where: str) -> list[str]:
    codes = entry.get("codes")
    if not isinstance(codes, list) or not codes:
        raise AclSpecError(f"{where}: codes must be a non-empty list of department codes")
    for code in codes:
        if not isinstance(code, str) or not _NAME.match(code):
            raise AclSpecError(
                f"{where}: department code {code!r} must be lower case letters, digits and '_', "
                f"starting with a letter"
            )
    if len(set(codes)) != len(codes):
        raise AclSpecError(f"{where}: a department code is listed twice")
    return codes


def _topics(
    entry: Mapping[str, Any], key: str, where: str, declared: set[str], codes: Sequence[str]
) -> list[str]:
    """The topics of ``entry[key]``, a pattern with {code} standing for every department's code."""
    value = entry.get(key, [])
    if not isinstance(value, list) or not all(isinstance(topic, str) for topic in value):
        raise AclSpecError(f"{where}: {key} must be a list of topic names")
    topics = []
    for topic in value:
        if CODE in topic and not codes:
            raise AclSpecError(f"{where}: {key} names {topic!r}, but [departments] lists no codes")
        expanded = [topic.replace(CODE, code) for code in codes] if CODE in topic else [topic]
        for name in expanded:
            _check_declared(name, where, declared)
        topics += expanded
    return topics


def _check_declared(topic: str, where: str, declared: set[str]) -> None:
    if topic not in declared:
        raise AclSpecError(f"{where}: topic {topic!r} is not declared in topics.toml")


def _check_principals(principals: Sequence[Principal], retired: Sequence[str], source: str) -> None:
    names = [p.name for p in principals]
    for name in names:
        if name == ADMIN_PRINCIPAL:
            raise AclSpecError(f"{source}: {ADMIN_PRINCIPAL} is the super user; it needs and gets no ACLs")
        if names.count(name) > 1:
            raise AclSpecError(f"{source}: principal {name!r} is declared twice")
        if name in retired:
            raise AclSpecError(f"{source}: principal {name!r} is both declared and retired")
    # A principal's prefixed groups and transactional ids must not reach another's: "dept-" would.
    for principal in principals:
        for grant in principal.grants:
            if not grant.prefixed:
                continue
            for other in principals:
                if other is principal:
                    continue
                for theirs in other.grants:
                    if theirs.resource == grant.resource and theirs.name.startswith(grant.name):
                        raise AclSpecError(
                            f"{source}: {principal.name}'s {grant.describe()} would also cover "
                            f"{other.name}'s {theirs.resource} {theirs.name}; rename one of them"
                        )
    owners: dict[str, str] = {}
    for principal in principals:
        if principal.kind != "service":
            continue
        for topic in principal.topics("read") & principal.topics("write"):
            if topic in owners:
                raise AclSpecError(
                    f"{source}: topic {topic!r} is owned by both {owners[topic]} and {principal.name}"
                )
            owners[topic] = principal.name


# The cluster's side ---------------------------------------------------------------------------------

_Key = tuple[str, int, str, int, str, int, int]


def binding(principal: str, grant: Grant) -> AclBinding:
    """The Kafka ACL binding of one grant of ``principal`` (a user name)."""
    return AclBinding(
        _RESOURCE_TYPES[grant.resource],
        grant.name,
        ResourcePatternType.PREFIXED if grant.prefixed else ResourcePatternType.LITERAL,
        f"User:{principal}",
        "*",
        _OPERATIONS[grant.operation],
        AclPermissionType.ALLOW,
    )


def _key(acl: AclBinding) -> _Key:
    return (
        acl.principal,
        int(acl.restype.value),
        acl.name,
        int(acl.resource_pattern_type.value),
        acl.host,
        int(acl.operation.value),
        int(acl.permission_type.value),
    )


def _describe(acl: AclBinding) -> str:
    prefixed = "*" if acl.resource_pattern_type == ResourcePatternType.PREFIXED else ""
    permission = "" if acl.permission_type == AclPermissionType.ALLOW else f" ({acl.permission_type.name})"
    host = "" if acl.host == "*" else f" from {acl.host}"
    return (
        f"{acl.principal} {acl.operation.name} on {acl.restype.name.lower()} {acl.name}{prefixed}"
        f"{host}{permission}"
    )


def ensure_access(
    admin_config: Mapping[str, Any],
    spec: AclSpec,
    credentials_dir: Path,
    *,
    create_passwords: bool = True,
    timeout_s: float = 30.0,
) -> AclChanges:
    """Make the cluster's SCRAM users and ACLs match ``spec``: users first, then ACLs.

    ``admin_config`` is the admin's (a super user's) client configuration. Passwords are read from
    ``credentials_dir/<principal>.password``, created there when missing if ``create_passwords``.
    Idempotent: a second run changes nothing.
    """
    admin = AdminClient(dict(admin_config))
    changes = AclChanges()
    _ensure_users(admin, admin_config, spec, credentials_dir, create_passwords, changes, timeout_s)
    _ensure_acls(admin, spec, changes, timeout_s)
    return changes


def _ensure_users(
    admin: AdminClient,
    admin_config: Mapping[str, Any],
    spec: AclSpec,
    credentials_dir: Path,
    create_passwords: bool,
    changes: AclChanges,
    timeout_s: float,
) -> None:
    existing = _scram_users(admin, timeout_s)
    upserts: list[tuple[str, str]] = []
    for principal in spec.principals:
        path = credentials_dir / f"{principal.name}.password"
        if create_passwords:
            password, created = ensure_password(path)
        else:
            password, created = read_password(path), False
        if password is None:
            changes.skipped.append(f"user {principal.name}: no password file {path}")
            continue
        if principal.name not in existing:
            changes.users_created.append(principal.name)
        elif created or not _logs_in(admin_config, principal.name, password, timeout_s):
            changes.users_updated.append(principal.name)
        else:
            continue
        upserts.append((principal.name, password))
    if upserts:
        info = ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, SCRAM_ITERATIONS)
        alterations = [
            UserScramCredentialUpsertion(name, info, password.encode()) for name, password in upserts
        ]
        for future in admin.alter_user_scram_credentials(alterations, request_timeout=timeout_s).values():
            future.result()
        for name, password in upserts:
            # The credential reaches the broker through the metadata log: wait until it takes it.
            if not _logs_in(admin_config, name, password, timeout_s, retry_refusals=True):
                raise TimeoutError(
                    f"user {name} cannot log in {timeout_s:.0f} s after its credential was set"
                )
    retired = [name for name in spec.retired if name in existing]
    if retired:
        deletions = [UserScramCredentialDeletion(name, ScramMechanism.SCRAM_SHA_512) for name in retired]
        for future in admin.alter_user_scram_credentials(deletions, request_timeout=timeout_s).values():
            future.result()
        changes.users_removed += retired


def _scram_users(admin: AdminClient, timeout_s: float) -> set[str]:
    """The users with a SCRAM-SHA-512 credential."""
    try:
        described = admin.describe_user_scram_credentials(request_timeout=timeout_s).result()
    except KafkaException as error:
        if error.args[0].code() == KafkaError.RESOURCE_NOT_FOUND:
            return set()
        raise
    return {
        user
        for user, description in described.items()
        if any(info.mechanism == ScramMechanism.SCRAM_SHA_512 for info in description.scram_credential_infos)
    }


def _logs_in(
    admin_config: Mapping[str, Any], user: str, password: str, timeout_s: float, retry_refusals: bool = False
) -> bool:
    """Whether the broker takes ``user``'s password: False at its first refusal (or, with
    ``retry_refusals``, when it still refuses after ``timeout_s``)."""
    refused: list[KafkaError] = []
    client = AdminClient(
        {
            **admin_config,
            "sasl.username": user,
            "sasl.password": password,
            "client.id": f"acls-login-{user}",
            "error_cb": refused.append,
            "log_level": 0,
            "reconnect.backoff.ms": 50,
            "reconnect.backoff.max.ms": 200,
        }
    )
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            client.list_topics(timeout=0.5)
            return True
        except KafkaException:
            client.poll(0)  # serves error_cb
        if not retry_refusals and any(error.code() in _LOGIN_REFUSED for error in refused):
            return False
    if retry_refusals:
        return False
    raise TimeoutError(f"no answer to user {user}'s login within {timeout_s:.0f} s")


def _ensure_acls(admin: AdminClient, spec: AclSpec, changes: AclChanges, timeout_s: float) -> None:
    wanted = {
        _key(acl): acl
        for acl in (
            binding(principal.name, grant) for principal in spec.principals for grant in principal.grants
        )
    }
    managed = {f"User:{name}" for name in spec.managed}
    every = AclBindingFilter(
        ResourceType.ANY, None, ResourcePatternType.ANY, None, None, AclOperation.ANY, AclPermissionType.ANY
    )
    present = {
        _key(acl): acl
        for acl in admin.describe_acls(every, request_timeout=timeout_s).result()
        if acl.principal in managed
    }
    missing = [acl for key, acl in sorted(wanted.items()) if key not in present]
    unwanted = [acl for key, acl in sorted(present.items()) if key not in wanted]
    if missing:
        for future in admin.create_acls(missing, request_timeout=timeout_s).values():
            future.result()
        changes.granted += [_describe(acl) for acl in missing]
    if unwanted:
        filters = [
            AclBindingFilter(
                acl.restype,
                acl.name,
                acl.resource_pattern_type,
                acl.principal,
                acl.host,
                acl.operation,
                acl.permission_type,
            )
            for acl in unwanted
        ]
        for future in admin.delete_acls(filters, request_timeout=timeout_s).values():
            future.result()
        changes.revoked += [_describe(acl) for acl in unwanted]


def grants_table(spec: AclSpec) -> list[str]:
    """One line per principal and kind of grant, for ``show``."""
    lines = []
    for principal in spec.principals:
        by_kind: dict[str, list[str]] = {}
        for grant in sorted(principal.grants):
            label = f"{grant.operation} {grant.resource.replace('_', ' ')}s"
            by_kind.setdefault(label, []).append(grant.name + ("*" if grant.prefixed else ""))
        lines.append(f"{principal.user} ({principal.kind})")
        lines += [f"  {label}: {', '.join(names)}" for label, names in sorted(by_kind.items())]
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.platform.acls", description=__doc__)
    subcommands = parser.add_subparsers(dest="command", required=True)
    for name, what in (
        ("ensure", "create the users and apply the declared ACLs"),
        ("show", "print the grants"),
    ):
        command = subcommands.add_parser(name, help=what)
        command.add_argument("--file", type=Path, default=DEFAULT_ACLS_FILE)
        command.add_argument("--topics", type=Path, default=DEFAULT_TOPICS_FILE)
    arguments = parser.parse_args(argv)
    try:
        spec = load_acl_specs(arguments.file, arguments.topics)
    except AclSpecError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if arguments.command == "show":
        print("\n".join(grants_table(spec)))
        return 0

    settings = Settings()
    kafka = settings.kafka
    servers = kafka.bootstrap_servers
    if not kafka.uses_sasl:
        print(f"Kafka on {servers} is reached {kafka.security_protocol}: no users or ACLs to apply")
        return 0
    try:
        config = {**kafka.client_config(), "log_level": 0}
        AdminClient(config).list_topics(timeout=5)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KafkaException:
        print(
            f"error: no Kafka answers {kafka.sasl_username} on {servers} (start the local one with "
            f"`make kafka-up`)",
            file=sys.stderr,
        )
        return 1
    try:
        changes = ensure_access(
            config,
            spec,
            settings.broker.credentials_dir,
            create_passwords=settings.environment == "local",
        )
    except (KafkaException, TimeoutError) as error:
        print(f"error: applying ACLs to {servers} failed: {error}", file=sys.stderr)
        return 1
    for line in changes.report():
        print(line)
    verdict = "changed" if changes.changed else "already up to date"
    print(f"{len(spec.principals)} principals on {servers}: {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
