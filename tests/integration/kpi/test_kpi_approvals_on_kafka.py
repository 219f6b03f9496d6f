"""The KPI service beside the approvals service on the real broker, each as its own Kafka principal:
requests decided over gRPC (approved through the team lead, rejected by finance, one waiting on the
requester for information) become approval step facts and the turnaround per department, kind and
step in kpi_approval_steps."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from callcenter.approvals.v1 import events_pb2 as ev
from callcenter.approvals.v1 import service_pb2 as pb
from callcenter.approvals.v1 import service_pb2_grpc
from callcenter.common.v1 import types_pb2

from services.approvals.bootstrap import bootstrap
from services.kpi import main as kpi_main
from services.kpi.store import open_kpi_store
from services.platform.identity import Role
from services.platform.settings import ClickHouseSettings, GrpcSettings, Settings
from tests.support.live import LiveContext
from tests.support.polling import eventually

# Monday 14 September 2026, 10:00 in Beijing: a working morning of the policy's calendar, apart from
# the days the other approvals tests run on. Their requests still open on the shared broker may
# escalate when this service's clock starts here (a backup's stint opens now): this test asks for
# compensations, a kind they never ask for, so the view's rows of that kind are this test's alone.
BASE = datetime(2026, 9, 14, 2, 0, tzinfo=UTC)
APPROVE, REJECT, INFO = ev.DECISION_APPROVE, ev.DECISION_REJECT, ev.DECISION_REQUEST_INFO
SMALL, MEDIUM = 80_000, 500_000  # 800 CNY: the team lead alone; 5,000 CNY: the team lead, then finance


class Approvals(LiveContext):
    def __init__(self, kafka_broker: Any) -> None:
        super().__init__(kafka_broker, "approvals", bootstrap, service_pb2_grpc.ApprovalsServiceStub, BASE)

    def started(self) -> None:
        self.process.service.activate_first()  # as main does

    def request(self, amount: int) -> pb.ApprovalView:
        return (
            self.stub(Role.SERVICE, "tickets")
            .RequestApproval(
                pb.RequestApprovalRequest(
                    request_id=uuid.uuid4().hex,
                    ticket_id=f"t-{self.run}",
                    kind="compensation",
                    amount=types_pb2.Money(minor_units=amount, currency="CNY"),
                    justification="a goodwill compensation",
                    ticket_type="complaint",
                )
            )
            .approval
        )

    def decide(self, stub: Any, approval: pb.ApprovalView, step: int, decision: int) -> pb.ApprovalView:
        request = pb.DecideRequest(
            request_id=uuid.uuid4().hex,
            approval_id=approval.approval_id,
            step_index=step,
            decision=decision,
            comment="checked",
        )
        return stub.Decide(request).approval

    def lead(self) -> Any:
        return self.stub(Role.AGENT, "lead-1", titles=["team_lead"])

    def finance(self) -> Any:
        return self.stub(Role.DEPARTMENT, "finance-1", department="finance", titles=[])


class Kpi:
    """The KPI service in this process on the session's broker, over a fresh database."""

    def __init__(self, kafka_broker: Any, data_dir: Any) -> None:
        run = uuid.uuid4().hex[:6]
        self.clickhouse = ClickHouseSettings(data_dir=data_dir, database=f"kpi_approvals_{run}")
        self.process = kpi_main.start(
            Settings(
                kafka=kafka_broker.kafka_as("kpi"),
                grpc=GrpcSettings(address="127.0.0.1:0"),
                clickhouse=self.clickhouse,
                instance_id=f"kpi-ap-{run}",
            )
        )
        self.store = open_kpi_store(self.clickhouse)

    def close(self) -> None:
        self.process.close(5)
        self.store.command(f"DROP DATABASE IF EXISTS `{self.clickhouse.database}`")
        self.store.close()

    def stints(self, *approval_ids: str) -> list[dict[str, Any]]:
        return self.store.query(
            "SELECT request_id, step, stint, department, kind, rule, outcome, within_deadline, "
            "info_requests, paused_since IS NOT NULL AS paused "
            "FROM approval_step_facts FINAL WHERE request_id IN {ids:Array(String)} "
            "ORDER BY request_id, step, stint",
            {"ids": list(approval_ids)},
        )


@pytest.fixture
def approvals(kafka_broker: Any) -> Iterator[Approvals]:
    service = Approvals(kafka_broker)
    yield service
    service.close()


@pytest.fixture
def kpi(kafka_broker: Any, embedded_clickhouse_dir: Any) -> Iterator[Kpi]:
    service = Kpi(kafka_broker, embedded_clickhouse_dir)
    yield service
    service.close()


def test_approvals_decided_over_grpc_become_step_facts_and_the_turnaround_per_department_and_step(
    approvals: Approvals, kpi: Kpi
) -> None:
    rejected = approvals.request(MEDIUM)
    approvals.decide(approvals.lead(), rejected, 0, APPROVE)
    assert approvals.decide(approvals.finance(), rejected, 1, REJECT).status == pb.APPROVAL_STATUS_REJECTED
    granted = approvals.request(SMALL)
    assert approvals.decide(approvals.lead(), granted, 0, APPROVE).status == pb.APPROVAL_STATUS_GRANTED
    waiting = approvals.request(MEDIUM)
    approvals.decide(approvals.lead(), waiting, 0, INFO)
    ids = [rejected.approval_id, granted.approval_id, waiting.approval_id]

    facts = eventually(
        lambda: kpi.stints(*ids),
        lambda rows: len(rows) == 4 and all(row["outcome"] or row["paused"] for row in rows),
        "every stint folded",
    )

    by_request = {(row["request_id"], row["step"], row["stint"]): row for row in facts}
    assert {key: (row["department"], row["rule"], row["outcome"]) for key, row in by_request.items()} == {
        (rejected.approval_id, 0, 0): ("center", "refund-medium", "approved"),
        (rejected.approval_id, 1, 0): ("finance", "refund-medium", "rejected"),
        (granted.approval_id, 0, 0): ("center", "refund-small", "approved"),
        (waiting.approval_id, 0, 0): ("center", "refund-medium", ""),
    }
    assert by_request[(waiting.approval_id, 0, 0)]["info_requests"] == 1
    rows = kpi.store.query(
        "SELECT department, kind, step, steps, open_steps, decided, approved, rejected, escalated, "
        "expired, withdrawn, decided_within_deadline, within_deadline_rate, approval_rate, info_requests "
        "FROM kpi_approval_steps(from = {f:DateTime64(3, 'UTC')}, to = {t:DateTime64(3, 'UTC')}) "
        "WHERE kind = 'compensation' ORDER BY department, kind, step",
        {"f": BASE, "t": BASE + timedelta(days=1)},
    )
    assert rows == [
        {
            "department": "center",
            "kind": "compensation",
            "step": 0,
            "steps": 3,
            "open_steps": 1,
            "decided": 2,
            "approved": 2,
            "rejected": 0,
            "escalated": 0,
            "expired": 0,
            "withdrawn": 0,
            "decided_within_deadline": 2,
            "within_deadline_rate": 1.0,
            "approval_rate": 1.0,
            "info_requests": 1,
        },
        {
            "department": "finance",
            "kind": "compensation",
            "step": 1,
            "steps": 1,
            "open_steps": 0,
            "decided": 1,
            "approved": 0,
            "rejected": 1,
            "escalated": 0,
            "expired": 0,
            "withdrawn": 0,
            "decided_within_deadline": 1,
            "within_deadline_rate": 1.0,
            "approval_rate": 0.0,
            "info_requests": 0,
        },
    ]
