"""The Kafka log bounds every call itself, even one librdkafka fails to bound: a producer stuck in
send_offsets_to_transaction (librdkafka #5456) is given up, and the next commit goes on with a new one.

The librdkafka producer is replaced by a scripted one here: the stuck call cannot be produced on demand
against a real broker (it needs the group coordinator to vanish at one moment)."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from services.platform import kafka
from services.platform.eventstore import ConsumedOffsets, LogWriteFailed
from services.platform.settings import KafkaSettings


class ScriptedProducer:
    """Answers every call at once, except send_offsets_to_transaction while ``stuck`` is unset."""

    made: list[ScriptedProducer] = []
    stuck = threading.Event()

    def __init__(self, _config: dict[str, Any]) -> None:
        self.calls: list[str] = []
        ScriptedProducer.made.append(self)

    def init_transactions(self, _timeout: float) -> None:
        self.calls.append("init")

    def begin_transaction(self) -> None:
        self.calls.append("begin")

    def flush(self, _timeout: float) -> int:
        return 0

    def send_offsets_to_transaction(self, _offsets: Any, _metadata: Any, _timeout: float) -> None:
        self.calls.append("offsets")
        if len(ScriptedProducer.made) == 1:
            ScriptedProducer.stuck.wait(30)

    def commit_transaction(self, _timeout: float) -> None:
        self.calls.append("commit")

    def abort_transaction(self, _timeout: float) -> None:
        self.calls.append("abort")

    def poll(self, _timeout: float) -> int:
        return 0

    def purge(self) -> None:
        pass


@pytest.fixture
def log(monkeypatch: pytest.MonkeyPatch) -> kafka.KafkaEventLog:
    ScriptedProducer.made.clear()
    ScriptedProducer.stuck.clear()
    monkeypatch.setattr(kafka, "Producer", ScriptedProducer)
    settings = KafkaSettings(
        bootstrap_servers="127.0.0.1:9",
        security_protocol="PLAINTEXT",
        call_timeout_s=0.2,
        offsets_timeout_s=0.2,
    )
    event_log = kafka.KafkaEventLog(settings, "tally.events", None, "tally-writer")
    yield event_log
    ScriptedProducer.stuck.set()
    event_log.close()


def test_a_producer_stuck_sending_offsets_is_given_up_and_the_next_commit_uses_a_new_one(
    log: kafka.KafkaEventLog,
) -> None:
    consumed = [ConsumedOffsets({("upstream", 0): 7}, group_metadata=object())]

    with pytest.raises(LogWriteFailed, match="sending its offsets did not return in time"):
        log.commit([], consumed)

    assert log.commit([], consumed) == []
    stuck = [t for t in threading.enumerate() if t.name == "tally-writer-offsets" and t.is_alive()]
    assert stuck and all(t.daemon for t in stuck), "a call that never returns cannot hold up the exit"
    first, second = ScriptedProducer.made
    assert first.calls == ["init", "begin", "offsets"], "the stuck producer is left alone"
    assert second.calls == ["init", "begin", "offsets", "commit"]
