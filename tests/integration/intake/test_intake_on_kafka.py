"""The intake service as it runs: real broker, real gRPC and HTTP, a restart, and routing's refusals."""

from __future__ import annotations

import json
import socket
import ssl
import threading
import urllib.request
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TypeVar

import pytest
from callcenter.common.v1 import types_pb2
from callcenter.intake.v1 import events_pb2 as ev
from callcenter.intake.v1 import service_pb2 as pb
from callcenter.intake.v1 import service_pb2_grpc
from callcenter.routing.v1 import events_pb2 as routing_ev
from confluent_kafka import Producer

from services.intake.handlers import EVENTS_TOPIC, registry
from services.intake.main import IntakeProcess, start
from services.platform.envelope import Cause, Envelope, decode, encode, make_envelope
from services.platform.kafka import KafkaEventLog
from services.platform.process import StartRefused
from services.platform.settings import GrpcSettings, HttpSettings, Settings
from tests.support.identity import CallerChannel, token

T = TypeVar("T")
STAGE = pb.ContactStage
NUMBER = "+44 20 7946 0958"


def _settings(kafka_broker, run: str) -> Settings:
    return Settings(
        service_name="intake",
        kafka=kafka_broker.kafka_as("intake"),
        grpc=GrpcSettings(address="127.0.0.1:0"),
        http=HttpSettings(address="127.0.0.1:0"),
        instance_id=f"intake-test-{run}",
    )


def _publish(kafka_broker, topic: str, aggregate_id: str, payload) -> None:
    envelope = make_envelope(
        payload,
        registry=registry(),
        aggregate_type="QueueEntry",
        aggregate_id=aggregate_id,
        aggregate_version=1,
        occurred_at=datetime.now(UTC),
        cause=Cause.request(uuid.uuid4().hex),
    )
    key, value, headers = encode(envelope)
    producer = Producer({**kafka_broker.client_config(), "enable.idempotence": True})
    producer.produce(topic, value, key, headers=headers)
    assert producer.flush(30) == 0


def _eventually(read: Callable[[], T], holds: Callable[[T], bool]) -> T:
    """Poll until the condition holds; the bound only ends a broken run."""
    pause = threading.Event()
    for _ in range(600):
        value = read()
        if holds(value):
            return value
        pause.wait(0.05)
    raise AssertionError(f"never reached; last seen {value}")


def _stub(process: IntakeProcess) -> service_pb2_grpc.IntakeServiceStub:
    return service_pb2_grpc.IntakeServiceStub(CallerChannel(f"127.0.0.1:{process.server.port}"))


def _http(process: IntakeProcess, method: str, path: str, body: dict | None = None) -> dict:
    """A gateway's call: HTTPS trusting the session's CA, with a telephony token."""
    request = urllib.request.Request(
        f"https://127.0.0.1:{process.http_port}{path}",
        data=json.dumps(body).encode() if body is not None else None,
        headers={
            "Content-Type": "application/json",
            "Authorization": f"Bearer {token('telephony', 'gw-web')}",
        },
        method=method,
    )
    trusted = ssl.create_default_context(cafile=str(Settings().tls.ca))
    with urllib.request.urlopen(request, timeout=10, context=trusted) as response:
        return json.loads(response.read())


def _events(kafka_broker, contact_id: str) -> list[Envelope]:
    reader = KafkaEventLog(kafka_broker.kafka, EVENTS_TOPIC, EVENTS_TOPIC, f"reader-{uuid.uuid4().hex[:6]}")
    return [decode(r.value, r.headers, registry()) for r in reader.replay({}) if r.key == contact_id.encode()]


def test_contacts_survive_a_restart_and_routings_refusal_ends_one(kafka_broker) -> None:
    run = uuid.uuid4().hex[:8]
    call_id = f"call-{run}"
    process = start(_settings(kafka_broker, run))
    stub = _stub(process)
    try:
        stub.StartContact(
            pb.StartContactRequest(
                request_id=f"start-{run}",
                contact_id=call_id,
                channel=types_pb2.Channel.CHANNEL_VOICE,
                caller_number=NUMBER,
                dialed_number="100",
            )
        )
        stub.RecordIvrSelection(
            pb.RecordIvrSelectionRequest(
                request_id=f"ivr-{run}", contact_id=call_id, menu="main", selection="2", queue_id="billing"
            )
        )
        answered = stub.ReportAnswered(
            pb.ReportAnsweredRequest(request_id=f"answer-{run}", contact_id=call_id, agent_id="a-1")
        ).contact
        assert answered.stage == STAGE.CONTACT_STAGE_TALKING
        chat = _http(
            process,
            "POST",
            "/v1/contacts",
            {
                "request_id": f"chat-{run}",
                "channel": "chat",
                "from": "jane@example.org",
                "queue_id": "support",
            },
        )
        assert (chat["stage"], chat["caller"]) == ("queued", "j***@***.org")
        plain = urllib.request.Request(
            f"http://127.0.0.1:{process.http_port}/v1/contacts/{chat['contact_id']}"
        )
        with pytest.raises(OSError):  # the port speaks TLS only: a plain request gets no answer
            urllib.request.urlopen(plain, timeout=10)
    finally:
        process.close(1)

    restarted = start(_settings(kafka_broker, run))
    stub = _stub(restarted)
    try:
        rebuilt = stub.GetContact(pb.GetContactRequest(contact_id=call_id)).contact
        assert (rebuilt.stage, rebuilt.agent_id, list(rebuilt.ivr_path)) == (
            STAGE.CONTACT_STAGE_TALKING,
            "a-1",
            ["main:2"],
        )
        assert rebuilt.version == answered.version
        again = stub.ReportAnswered(
            pb.ReportAnsweredRequest(request_id=f"answer-{run}", contact_id=call_id, agent_id="a-1")
        ).contact
        assert again.version == answered.version, "a report repeated after the restart changes nothing"
        assert _http(restarted, "GET", f"/v1/contacts/{chat['contact_id']}") == chat

        _publish(
            kafka_broker,
            "routing.events.v1",
            chat["contact_id"],
            routing_ev.QueueJoinRefused(
                contact_id=chat["contact_id"],
                queue_id="support",
                reason="queue support is closed",
                outcome=routing_ev.FallbackOutcome.FALLBACK_OUTCOME_DISCONNECT,
            ),
        )

        ended = _eventually(
            lambda: _http(restarted, "GET", f"/v1/contacts/{chat['contact_id']}"),
            lambda contact: contact["stage"] == "ended",
        )
        assert ended["ended_at"] is not None
    finally:
        restarted.close(1)

    [end] = [e.payload for e in _events(kafka_broker, chat["contact_id"]) if e.event_type == "ContactEnded"]
    assert (end.reason, end.detail) == (
        ev.ContactEndReason.CONTACT_END_REASON_SYSTEM,
        "queue support is closed",
    )
    recorded = b"".join(e.payload.SerializeToString() for e in _events(kafka_broker, call_id))
    assert b"79460958" not in recorded and b"7946 0958" not in recorded, "no caller number in clear"


def test_the_service_does_not_start_when_its_http_port_is_taken(kafka_broker) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        settings = _settings(kafka_broker, uuid.uuid4().hex[:8])
        settings.http = HttpSettings(address=address)

        with pytest.raises(StartRefused, match=f"intake's HTTP API cannot serve on {address}"):
            start(settings)
