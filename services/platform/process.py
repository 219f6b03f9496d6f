"""One service process: a context wired once by its ``bootstrap``, then served until it is told to stop.

Each context's ``bootstrap(settings, adapters)`` builds its store, service layer, servicers,
reactions and timers over the adapters it is given: Kafka (``kafka_adapters``) in ``main.py``,
the in-memory fakes in ``tests/support``. ``serve_context`` then runs it as a process: it claims
the writer id on this machine, binds the gRPC port (refusing at once if either is taken, naming
who holds it), rebuilds the state while health says NOT_SERVING, and only then serves, reacts and
fires timers. A writer fenced by another instance stops the process, so that its supervisor can
start it again; ``run_main`` turns that into exit code 75.
"""

from __future__ import annotations

import contextlib
import faulthandler
import fcntl
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import IO, Any, Generic, NoReturn, TypeVar

from callcenter.platform.v1 import service_pb2 as operations_pb
from callcenter.platform.v1 import service_pb2_grpc as operations_grpc

from services.platform.access import AccessInterceptor
from services.platform.consumer import BatchHandler, ConsumerRunner, Handler, Source
from services.platform.envelope import Actor, EventRegistry
from services.platform.errors import WriterFenced
from services.platform.eventstore import AggregateKind, EventLog, EventStore
from services.platform.failpoints import Failpoint
from services.platform.grpc_server import (
    PortTaken,
    RunningServer,
    ServiceRegistration,
    create_server,
    stop_on_signals,
)
from services.platform.health import Health
from services.platform.identity import Role, TokenVerifier, server_credentials
from services.platform.kafka import KafkaEventLog, KafkaSource
from services.platform.logs import setup_logging
from services.platform.preflight import KafkaUnreachable, require_kafka
from services.platform.quarantine import OperationsServicer
from services.platform.settings import Settings
from services.platform.telemetry import server_interceptors, setup_telemetry
from services.platform.timers import DeadlineScheduler

T = TypeVar("T")

EXIT_FENCED = 75  # EX_TEMPFAIL: another instance took over; a supervisor may start this one again
EXIT_BROKEN = 70  # EX_SOFTWARE: the writer stopped by a bug; a supervisor starts the service again
EXIT_REFUSED = 1
EXIT_STUCK = 71  # its stop outlasted the grace period: ended hard, every thread's stack in the log
# What a stop may take beyond the grace period (telemetry's flush, the logs) before it is ended hard.
STOP_MARGIN_S = 5.0

log = logging.getLogger(__name__)


def wall_clock() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Adapters:
    """The outside world a context is wired to: Kafka (``kafka_adapters``), or the fakes of tests.

    ``log(events topic, snapshots topic, writer id)`` and ``source(group id, topics, instance id)``.
    """

    log: Callable[[str | None, str | None, str], EventLog]
    source: Callable[[str, Sequence[str], str], Source]
    clock: Callable[[], datetime] = wall_clock


def kafka_adapters(settings: Settings) -> Adapters:
    failpoint = Failpoint.parse(settings.failpoint)
    return Adapters(
        log=lambda topic, snapshots, writer: KafkaEventLog(
            settings.kafka, topic, snapshots, writer, failpoint
        ),
        source=lambda group, topics, instance: KafkaSource(settings.kafka, group, topics, instance),
    )


@dataclass
class Context(Generic[T]):
    """A bounded context as its bootstrap wired it: ``service`` is its service layer."""

    name: str
    store: EventStore
    service: T
    servicers: list[ServiceRegistration] = field(default_factory=list)
    runners: list[ConsumerRunner] = field(default_factory=list)
    schedulers: list[DeadlineScheduler] = field(default_factory=list)
    # Other loops to run once the state is rebuilt, by name (the KPI service's live gauges).
    background: list[tuple[str, Callable[[threading.Event], None]]] = field(default_factory=list)
    # Other things to close after the store (the KPI store), in order.
    closers: list[Callable[[], None]] = field(default_factory=list)

    @property
    def health(self) -> Health:
        return self.store.health


def writer_id(settings: Settings, context: str) -> str:
    return f"{context}-{settings.instance_id}"


def open_store(
    settings: Settings,
    adapters: Adapters,
    context: str,
    topics: tuple[str, str] | None,
    registry: EventRegistry,
    kinds: Sequence[AggregateKind[Any]],
    *,
    forget_closed: bool = False,
) -> EventStore:
    """A context's store over its (events, snapshots) topics, written as ``<context>-<instance id>``.

    ``topics`` None for a context that keeps only tables (changelogs) and appends no events of its own.
    ``forget_closed`` for contexts with an aggregate per contact, whose closed ones must not pile up.
    """
    events_topic, snapshots_topic = topics or (None, None)
    return EventStore(
        adapters.log(events_topic, snapshots_topic, writer_id(settings, context)),
        registry,
        kinds,
        clock=adapters.clock,
        snapshot_every=settings.store.snapshot_every if topics else 0,
        forget_closed_after=settings.store.forget_closed_after if forget_closed else None,
        health=Health(context),
        max_queued_units=settings.store.max_queued_units,
        actor=Actor(writer_id(settings, context), (Role.SERVICE.value,)),
    )


def reactions(
    settings: Settings,
    adapters: Adapters,
    context: str,
    topics: Sequence[str],
    store: EventStore,
    handler: Handler,
    after_batch: BatchHandler | None = None,
    *,
    group: str | None = None,
) -> ConsumerRunner:
    """The context's consumer-group member over other contexts' topics, exactly once through its store.

    A static member (its instance id is the writer id), so a restarted instance takes its partitions
    back at once. ``group`` names another consumer group of the context ("<context>-<purpose>"), for
    a second reaction that must keep its own offsets (a publisher of the context's own events).
    """
    group = group or context
    source = adapters.source(group, topics, writer_id(settings, context))
    return ConsumerRunner(group, source, store, store.registry, handler, after_batch=after_batch)


def registration(
    grpc_module: ModuleType, service_module: ModuleType, servicer: object
) -> ServiceRegistration:
    """The registration of a generated ``*_pb2_grpc`` module's one service."""
    [service] = service_module.DESCRIPTOR.services_by_name.values()
    return ServiceRegistration(
        getattr(grpc_module, f"add_{service.name}Servicer_to_server"), servicer, service.full_name
    )


class StartRefused(Exception):
    """The process cannot start: the message says what is in the way and how to clear it."""


@dataclass
class ServiceProcess(Generic[T]):
    """A started service: ``context`` as its bootstrap wired it, served by ``server``."""

    context: Context[T]
    server: RunningServer
    stop: threading.Event
    claim: WriterClaim | None = None
    threads: list[threading.Thread] = field(default_factory=list)
    # Other things to stop before the store closes (an HTTP server), in order.
    closers: list[Callable[[], None]] = field(default_factory=list)
    http_port: int | None = None
    fenced: WriterFenced | None = None
    broken: Exception | None = None

    @property
    def name(self) -> str:
        return self.context.name

    @property
    def store(self) -> EventStore:
        return self.context.store

    @property
    def service(self) -> T:
        return self.context.service

    def run_in_background(self, name: str, target: Callable[[threading.Event], None]) -> None:
        def run() -> None:
            try:
                target(self.stop)
            except WriterFenced as fenced:
                self._fenced(fenced)
            except Exception as error:
                log.exception("%s: %s stopped by an error; stopping the service", self.name, name)
                self.broken = error
                self.stop.set()

        thread = threading.Thread(target=run, name=f"{self.name}-{name}", daemon=True)
        thread.start()
        self.threads.append(thread)

    def _fenced(self, fenced: WriterFenced) -> None:
        if self.fenced is None:
            self.fenced = fenced
            log.error("%s stops: %s", self.name, fenced)
        self.stop.set()

    def _writer_stopped(self, error: Exception) -> None:
        self.broken = error
        log.error("%s stops: its writer stopped by an error (%s)", self.name, type(error).__name__)
        self.stop.set()

    def close(self, grace_s: float) -> None:
        """Stop taking requests, let in-flight ones finish, stop the threads, then the store's writer.

        Bounded: each step gets what is left of ``grace_s`` (less a second for the process to end),
        so a stop never outlasts its grace.
        """
        deadline = time.monotonic() + max(0.5, grace_s - 1.0)
        self.stop.set()
        self.server.stop(grace_s / 2)
        for closer in self.closers:
            closer()
        for thread in self.threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        self.store.close(max(0.1, deadline - time.monotonic()))
        for closer in self.context.closers:
            closer()
        if self.claim is not None:
            self.claim.release()


def serve_context(
    settings: Settings, context: Context[T], stop: threading.Event | None = None
) -> ServiceProcess[T]:
    """Run a wired context as this process's service: claim, bind, rebuild, then serve and react."""
    stop = stop or threading.Event()
    claim = WriterClaim.take(settings, writer_id(settings, context.name))
    ready = threading.Event()
    operations = registration(operations_grpc, operations_pb, OperationsServicer(context.store))
    try:
        credentials = server_credentials(settings.tls)
        verifier = TokenVerifier(settings.auth)
    except (FileNotFoundError, ValueError) as missing:
        claim.release()
        raise StartRefused(f"{context.name} cannot serve: {missing}") from None
    try:
        server = create_server(
            settings.grpc.address,
            [*context.servicers, operations],
            credentials=credentials,
            access=AccessInterceptor(verifier),
            max_workers=settings.grpc.max_workers,
            max_concurrent_rpcs=settings.grpc.max_concurrent_rpcs,
            interceptors=server_interceptors(),
            health=context.health,
            ready=ready,
        )
    except PortTaken as taken:
        claim.release()
        raise StartRefused(f"{context.name} cannot serve: {taken}{_holder(settings, str(taken))}") from None
    claim.record(grpc=f"127.0.0.1:{server.port}" if settings.grpc.address.startswith("127.") else "")
    process = ServiceProcess(context, server, stop, claim)
    context.store.on_fenced(process._fenced)
    context.store.on_writer_stopped(process._writer_stopped)
    try:
        context.store.start()
    except BaseException:
        server.stop(0)
        claim.release()
        raise
    ready.set()
    for runner in context.runners:
        process.run_in_background(runner.name, runner.run)
    for scheduler in context.schedulers:
        process.run_in_background("timers", scheduler.run)
    for name, target in context.background:
        process.run_in_background(name, target)
    return process


Start = Callable[[Settings, threading.Event], ServiceProcess]


def run_main(name: str, start: Start) -> NoReturn:
    """A service's ``main``: check the addresses and the broker, start, serve until told to stop, and end.

    The process ends with 1 when it cannot start, naming why; 75 when another instance fenced it; 70
    when its writer or a background thread stopped by an error; 71 when its stop outlasted the grace
    period (every thread's stack is logged first); 0 after a clean stop. It ends at once after its own
    stop, without the interpreter's finalisation (where a native client's destructor could block).
    """
    code = _serve_main(name, start)
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _serve_main(name: str, start: Start) -> int:
    stop = stop_on_signals()
    # `kill -USR1 <pid>` writes every thread's stack to the log: what a stuck service is waiting for.
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    settings = Settings()
    if "service_name" not in settings.model_fields_set:
        # The service's name is its Kafka principal: without it, it would connect as the tooling's admin.
        settings = Settings(service_name=name)
    setup_logging(name, as_json=settings.environment == "cluster")
    service_log = logging.getLogger(f"services.{name}")
    try:
        settings.require_cluster_addresses()
        require_kafka(settings.kafka)
    except (ValueError, KafkaUnreachable) as error:
        service_log.error("%s cannot start: %s", name, error)
        return EXIT_REFUSED
    telemetry = setup_telemetry(settings.telemetry, name, settings.instance_id)
    try:
        process = start(settings, stop)
    except StartRefused as refused:
        service_log.error("%s", refused)
        telemetry.shutdown()
        return EXIT_REFUSED
    service_log.info("%s serving on %s (port %d)", name, settings.grpc.address, process.server.port)
    try:
        stop.wait()
    finally:
        service_log.info("%s stopping", name)
        _end_hard_after(settings.grpc.grace_period_s + STOP_MARGIN_S, service_log)
        process.close(settings.grpc.grace_period_s)
        telemetry.shutdown()
    if process.fenced is not None:
        service_log.error("%s stopped: its writer was fenced; a fresh start replays what others wrote", name)
        return EXIT_FENCED
    if process.broken is not None:
        service_log.error("%s stopped by an error: %s", name, process.broken)
        return EXIT_BROKEN
    service_log.info("%s stopped", name)
    return 0


def _end_hard_after(seconds: float, service_log: logging.Logger) -> None:
    """A stop that outlasts ``seconds`` ends the process anyway, after logging every thread's stack."""

    def watch() -> None:
        time.sleep(seconds)
        service_log.error(
            "the stop took more than %.0f s; ending the process, every thread's stack follows", seconds
        )
        faulthandler.dump_traceback(all_threads=True)
        os._exit(EXIT_STUCK)

    threading.Thread(target=watch, name="stop-watchdog", daemon=True).start()


class WriterClaim:
    """This machine's lock on a writer id (``.data/run/<writer id>.lock``), held while the process lives.

    Two processes of one context with the same instance id would fence each other's writes; the
    second start is refused at once instead, naming the first (its pid, ports and start time).
    """

    def __init__(self, path: Path, handle: IO[str], writer: str) -> None:
        self.path = path
        self._handle = handle
        self._writer = writer
        self._facts: dict[str, Any] = {}

    @classmethod
    def take(cls, settings: Settings, writer: str) -> WriterClaim:
        settings.run_dir.mkdir(parents=True, exist_ok=True)
        path = settings.run_dir / f"{writer}.lock"
        handle = path.open("a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip()
            handle.close()
            raise StartRefused(
                f"{writer} is already running on this machine ({_describe(holder)}); stop it first "
                f"(Ctrl-C in its terminal, or kill its pid), or start this one with another CC_INSTANCE_ID"
            ) from None
        claim = cls(path, handle, writer)
        claim.record(pid=os.getpid(), started=datetime.now(UTC).isoformat(timespec="seconds"))
        return claim

    def record(self, **facts: Any) -> None:
        self._facts.update({k: v for k, v in facts.items() if v})
        self._handle.seek(0)
        self._handle.truncate()
        self._handle.write(json.dumps({"writer": self._writer, **self._facts}))
        self._handle.flush()

    def release(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            self._handle.seek(0)
            self._handle.truncate()
            fcntl.flock(self._handle, fcntl.LOCK_UN)
            self._handle.close()


def _describe(holder: str) -> str:
    try:
        facts = json.loads(holder)
    except ValueError:
        return "its lock file says nothing more"
    parts = [f"pid {facts['pid']}"] if "pid" in facts else []
    parts += [f"gRPC on {facts['grpc']}"] if facts.get("grpc") else []
    parts += [f"since {facts['started']}"] if "started" in facts else []
    return ", ".join(parts) or "no details"


def _holder(settings: Settings, taken: str) -> str:
    """Who of ours holds a taken address, from the claims on this machine ("" when none of ours does)."""
    for path in sorted(settings.run_dir.glob("*.lock")) if settings.run_dir.exists() else ():
        with contextlib.suppress(OSError, ValueError):
            facts = json.loads(path.read_text() or "{}")
            if facts.get("grpc") and facts["grpc"] in taken:
                return f" ({facts['writer']} holds it: {_describe(path.read_text())}); stop it first"
    return " (by a process that is not one of ours); free the port or set CC_GRPC__ADDRESS"
