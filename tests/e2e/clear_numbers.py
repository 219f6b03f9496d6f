"""TEST ONLY: the e2e run's callers as Chinese telephony writes their numbers, and the scans proving that
none of those numbers is kept in clear anywhere the run wrote: every topic, the services' logs, every
KPI table.

A number is found when the last 8 digits of any caller number the run used appear in a run of digits
(with at most two separators, space, '-', '.', '/' or brackets, between two digits): that catches it
in E.164, national or any formatting, and its last 8 digits alone. Hexadecimal ids and digests (UUIDs,
HMACs, trace ids: 16 hex digits or more) are blanked first: their decimal stretches are random and
would match a tail by chance. The numbers are fictitious: Chinese mobile prefixes with random tails.
"""

from __future__ import annotations

import logging
import random
import re
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition
from confluent_kafka.admin import AdminClient
from simulator.scenario import Scenario, callers

from services.kpi.store import KpiStore

# How a Chinese trunk, a SIP gateway or a CTI writes a mobile number (its 11 national digits).
FORMS: tuple[Callable[[str], str], ...] = (
    lambda m: f"+86 {m[:3]} {m[3:7]} {m[7:]}",
    lambda m: f"0086{m}",
    lambda m: m,
    lambda m: f"+86-{m[:3]}-{m[3:7]}-{m[7:]}",
    lambda m: f"86{m}",
    lambda m: f"tel:+86-{m[:3]}-{m[3:7]}-{m[7:]}",
    lambda m: f'"Customer" <sip:{m}@trunk.example;user=phone>;tag=e2e',
)
# What telephony sends for a withheld number; every one is the one anonymous caller.
WITHHELD = (
    "anonymous",
    "Restricted",
    '"Anonymous" <sip:anonymous@anonymous.invalid>',
    "",
    "unavailable",
    "P",
)
MOBILE_PREFIXES = ("135", "136", "138", "139", "150", "158", "186", "188")


@dataclass(frozen=True)
class Line:
    """What telephony reports for one contact: the caller number as ``sent``, and whose number it is
    (the caller's mobile, E.164), None when it was withheld."""

    sent: str
    mobile: str | None


class Telephony:
    """The scenario's contacts as a Chinese trunk reports them. Each simulator customer becomes one
    mobile; each contact writes it in one of ``FORMS`` in turn, so a customer who calls again is
    mostly seen in another form; every fifth contact that will not ask for a callback is withheld."""

    def __init__(self, scenario: Scenario) -> None:
        self._plan = {caller.index: caller for caller in callers(scenario)}
        self._mobiles: dict[str, str] = {}
        rng = random.Random(f"{scenario.seed}/e2e-mobiles")
        for number in sorted({caller.number for caller in self._plan.values()}):
            national = rng.choice(MOBILE_PREFIXES) + str(rng.randrange(30_000_000, 100_000_000))
            self._mobiles[number] = national
        assert len(set(self._mobiles.values())) == len(self._mobiles), "two customers, one mobile"
        self.sent: dict[str, Line] = {}

    def line(self, contact_id: str) -> Line | None:
        """The contact's caller number as the trunk sends it; None for a contact not of the scenario."""
        _, marker, suffix = contact_id.rpartition("-c")
        caller = self._plan.get(int(suffix)) if marker and suffix.isdigit() else None
        if caller is None:
            return None
        index = caller.index
        if index % 5 == 2 and not caller.wants_callback:
            return Line(WITHHELD[(index // 5) % len(WITHHELD)], None)
        national = self._mobiles[caller.number]
        return Line(FORMS[index % len(FORMS)](national), f"+86{national}")

    def adapter(self, intake: Any) -> TelephonyAdapter:
        return TelephonyAdapter(intake, self)

    def mobiles(self) -> set[str]:
        """Every caller number the run sent (E.164)."""
        return {line.mobile for line in self.sent.values() if line.mobile}


class TelephonyAdapter:
    """An intake stub whose StartContact sends the contact's caller number as the trunk wrote it."""

    def __init__(self, intake: Any, telephony: Telephony) -> None:
        self._intake = intake
        self._telephony = telephony

    def __getattr__(self, name: str) -> Any:
        return getattr(self._intake, name)

    def StartContact(self, request: Any, *args: Any, **kwargs: Any) -> Any:
        line = self._telephony.line(request.contact_id)
        if line is None:
            return self._intake.StartContact(request, *args, **kwargs)
        self._telephony.sent[request.contact_id] = line
        sent = type(request)()
        sent.CopyFrom(request)
        sent.caller_number = line.sent
        return self._intake.StartContact(sent, *args, **kwargs)


class LogCapture(logging.Handler):
    """Every line the services log while attached: INFO and above as a service process writes them,
    and the services' DEBUG lines too."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        self.lines: list[str] = []
        self._levels: list[tuple[logging.Logger, int]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))

    def __enter__(self) -> LogCapture:
        root, services = logging.getLogger(), logging.getLogger("services")
        self._levels = [(root, root.level), (services, services.level)]
        root.setLevel(min(root.getEffectiveLevel(), logging.INFO))
        services.setLevel(logging.DEBUG)
        root.addHandler(self)
        return self

    def __exit__(self, *_: object) -> None:
        logging.getLogger().removeHandler(self)
        for logger, level in self._levels:
            logger.setLevel(level)


# Finding a number -------------------------------------------------------------------------------

# A UUID, or 16 hex digits or more with a letter among them (a digest, a trace or span id).
_HEX_IDS = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
    r"|(?=[0-9]*[a-fA-F])[0-9a-fA-F]{16,}"
)
_DIGIT_RUN = re.compile(r"[0-9](?:[ \-./()]{0,2}[0-9])*")


@dataclass
class Finder:
    """Finds the last 8 digits of any of ``mobiles`` (E.164) in text or bytes, however separated."""

    mobiles: Iterable[str]
    tails: frozenset[str] = field(init=False)

    def __post_init__(self) -> None:
        self.tails = frozenset(mobile[-8:] for mobile in self.mobiles)
        assert self.tails and all(len(tail) == 8 and tail.isdigit() for tail in self.tails)

    def find(self, data: str | bytes) -> list[str]:
        """The digit runs in ``data`` that hold a tail."""
        text = data.decode("latin-1") if isinstance(data, bytes) else data
        text = _HEX_IDS.sub(lambda match: " " * len(match.group()), text)
        found = []
        for run in _DIGIT_RUN.finditer(text):
            digits = "".join(ch for ch in run.group() if ch.isdigit())
            if any(digits[i : i + 8] in self.tails for i in range(len(digits) - 7)):
                found.append(run.group())
        return found


@dataclass
class Scan:
    """What one scan read, and where it found a number."""

    what: str
    units: Counter[str] = field(default_factory=Counter)  # records or rows read, by topic or table
    bytes_read: Counter[str] = field(default_factory=Counter)
    found: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (
            f"{self.what}: {sum(self.units.values())} read in {len(self.units)} places, "
            f"{sum(self.bytes_read.values())} bytes; "
            + ", ".join(f"{k}={v}" for k, v in sorted(self.units.items()))
        )


def scan_topics(config: Mapping[str, Any], finder: Finder, timeout_s: float = 180.0) -> Scan:
    """Every record of every partition of every topic on the broker (internal ones included), from
    the beginning, uncommitted and aborted transactional records included: key, value and headers."""
    scan = Scan("topics")
    metadata = AdminClient(dict(config)).list_topics(timeout=30)
    consumer = Consumer(
        {
            **config,
            "group.id": f"clear-number-scan-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "isolation.level": "read_uncommitted",
            "auto.offset.reset": "earliest",
        }
    )
    try:
        ends: dict[tuple[str, int], int] = {}
        for topic in metadata.topics.values():
            scan.units[topic.topic] += 0
            for partition in topic.partitions:
                low, high = consumer.get_watermark_offsets(TopicPartition(topic.topic, partition), timeout=30)
                if high > low:
                    ends[(topic.topic, partition)] = high
        consumer.assign([TopicPartition(topic, partition, OFFSET_BEGINNING) for topic, partition in ends])
        pending, deadline = set(ends), time.monotonic() + timeout_s
        while pending and time.monotonic() < deadline:
            message = consumer.poll(1.0)
            if message is None:
                continue
            where = (message.topic(), message.partition())
            if message.error():
                if message.error().code() == KafkaError._PARTITION_EOF:
                    pending.discard(where)
                    continue
                raise AssertionError(f"reading {where} for the scan: {message.error()}")
            parts = [message.key() or b"", message.value() or b""]
            parts += [name.encode() + b"=" + (value or b"") for name, value in message.headers() or []]
            scan.units[message.topic()] += 1
            scan.bytes_read[message.topic()] += sum(len(part) for part in parts)
            for part in parts:
                scan.found += [
                    f"{where[0]}[{where[1]}]@{message.offset()}: {hit}" for hit in finder.find(part)
                ]
            if message.offset() + 1 >= ends[where]:
                pending.discard(where)
        assert not pending, f"the scan did not reach the end of {sorted(pending)} in {timeout_s:.0f} s"
    finally:
        consumer.close()
    return scan


def scan_lines(lines: list[str], finder: Finder) -> Scan:
    scan = Scan("service logs")
    scan.units["lines"] = len(lines)
    for number, line in enumerate(lines):
        scan.bytes_read["lines"] += len(line.encode())
        scan.found += [f"log line {number} ({line[:80]!r}): {hit}" for hit in finder.find(line)]
    return scan


def scan_tables(store: KpiStore, finder: Finder) -> Scan:
    """Every row of every table of the store's database (views aside: they only read the tables),
    every column: text as text, numbers by their digits, a float only when it holds a whole number."""
    scan = Scan("KPI tables")
    tables = store.query(
        "SELECT name FROM system.tables WHERE database = {db:String} AND engine NOT IN ('View', 'LiveView')",
        {"db": store.database},
    )
    for table in (row["name"] for row in tables):
        scan.units[table] += 0
        for row in store.query(f"SELECT * FROM `{store.database}`.`{table}`"):
            scan.units[table] += 1
            for column, value in row.items():
                for text in _texts(value):
                    scan.bytes_read[table] += len(text)
                    scan.found += [f"{table}.{column}: {hit}" for hit in finder.find(text)]
    return scan


def _texts(value: Any) -> Iterator[str]:
    if isinstance(value, bytes | str):
        yield value.decode("latin-1") if isinstance(value, bytes) else value
    elif isinstance(value, bool):
        return
    elif isinstance(value, int):
        yield str(value)
    elif isinstance(value, float | Decimal):
        if value == value and abs(value) != float("inf") and value == int(value):
            yield str(int(value))
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield from _texts(key)
            yield from _texts(item)
    elif isinstance(value, list | tuple | set | frozenset):
        for item in value:
            yield from _texts(item)
