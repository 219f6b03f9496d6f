"""A dry run of the next approval policy version on a seeded history, through the real services.

One broker of its own (as bench_tickets.py starts it), the tickets and approvals services in this
process, each as its own Kafka principal; the tickets catalogue sends the departments' extension
requests through approvals (``reviews: {extensions: approvals}``). A seeded history under the version
active at the first start (1): tickets asking for refunds, compensations and fee waivers of amounts
spread over the policy's ranges, and dispatches whose department asks for one to ten more days. Then
DryRunPolicy (as an admin, over gRPC) replays the period's requests from the event log against
version 2 and reports which would have got another chain: by kind, by the rule that chose the chain
and the one that would, with the amounts or extensions concerned. Nothing is activated.

    python load-tests/approvals_dry_run.py
    python load-tests/approvals_dry_run.py --requests 400 --extensions 60 --seed 11 --json out.json
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import shutil
import tempfile
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
from bench_tickets import own_broker
from callcenter.approvals.v1 import service_pb2 as apb
from callcenter.approvals.v1 import service_pb2_grpc as approvals_grpc
from callcenter.common.v1 import types_pb2
from callcenter.tickets.v1 import events_pb2 as ticket_events
from callcenter.tickets.v1 import service_pb2 as tpb
from callcenter.tickets.v1 import service_pb2_grpc as tickets_grpc
from google.protobuf.timestamp_pb2 import Timestamp
from rich.console import Console
from rich.table import Table
from simulator.callers import CallerChannel, local_issuer, local_settings

from services.approvals.main import start as start_approvals
from services.platform import broker
from services.platform.identity import Role
from services.platform.settings import BrokerSettings, GrpcSettings, HttpSettings, Settings, TicketsSettings
from services.tickets.main import start as start_tickets
from services.tickets.policies import DEFAULT_CONFIG_DIR

KINDS = ("refund", "compensation", "fee_waiver")
TIERS = ("standard", "gold", "platinum")
# Amounts in CNY, spread over the policy's ranges (version 1: up to 1000, up to 10000, above).
AMOUNT_BANDS = ((0.45, 10, 1_000), (0.35, 1_000, 10_000), (0.20, 10_000, 50_000))
CALL_TIMEOUT_S = 30.0


def token_of(role: Role, subject: str, **claims: Any) -> Callable[[str, Any], str]:
    token = local_issuer().for_role(role, subject, **claims)
    return lambda _method, _request: token


def settings_for(at: BrokerSettings, root: Path, run: str, name: str, **fields: Any) -> Settings:
    return Settings(
        service_name=name,
        instance_id=f"dry-run-{run}",
        kafka=broker.client_settings(at, name),
        grpc=GrpcSettings(address="127.0.0.1:0"),
        http=HttpSettings(address="127.0.0.1:0"),
        run_dir=root / "run" / name,
        **fields,
    )


def amount(rng: random.Random) -> int:
    """Minor units of a seeded amount, its band chosen by the bands' shares."""
    [(_, low, high)] = rng.choices(AMOUNT_BANDS, weights=[share for share, _, _ in AMOUNT_BANDS])
    return rng.randint(low * 100, high * 100)


def ask_for_money(desk: tickets_grpc.TicketsServiceStub, rng: random.Random) -> str:
    ticket = desk.CreateTicket(
        tpb.CreateTicketRequest(
            request_id=uuid.uuid4().hex,
            type=rng.choice((ticket_events.TICKET_TYPE_COMPLAINT, ticket_events.TICKET_TYPE_SERVICE_REQUEST)),
            priority=3,
            summary="Billed for a month without water",
            category="water.billing",
            customer=types_pb2.PartyReference(hash="ab" * 32, masked="*******0000"),
        ),
        timeout=CALL_TIMEOUT_S,
    ).ticket
    return desk.RequestApproval(
        tpb.RequestApprovalRequest(
            request_id=uuid.uuid4().hex,
            ticket_id=ticket.ticket_id,
            kind=rng.choice(KINDS),
            amount=types_pb2.Money(minor_units=amount(rng), currency="CNY"),
            justification="billed while the supply was cut",
            customer_tier=rng.choice(TIERS),
        ),
        timeout=CALL_TIMEOUT_S,
    ).approval_id


def ask_for_time(
    desk: tickets_grpc.TicketsServiceStub, housing: tickets_grpc.TicketsServiceStub, rng: random.Random
) -> str:
    ticket = desk.CreateTicket(
        tpb.CreateTicketRequest(
            request_id=uuid.uuid4().hex,
            type=ticket_events.TICKET_TYPE_COMPLAINT,
            priority=3,
            summary="Stairwell roof leaking",
            category="housing.property_management",
            customer=types_pb2.PartyReference(hash="cd" * 32, masked="*******1111"),
        ),
        timeout=CALL_TIMEOUT_S,
    ).ticket
    sent = desk.Dispatch(
        tpb.DispatchRequest(request_id=uuid.uuid4().hex, ticket_id=ticket.ticket_id), timeout=CALL_TIMEOUT_S
    )
    [dispatch] = [d for d in sent.ticket.dispatches if d.dispatch_id == sent.dispatch_id]
    wanted = Timestamp()
    wanted.FromDatetime(dispatch.due_at.ToDatetime(tzinfo=UTC) + timedelta(days=rng.randint(1, 10)))
    return housing.RequestExtension(
        tpb.RequestExtensionRequest(
            request_id=uuid.uuid4().hex,
            ticket_id=ticket.ticket_id,
            dispatch_id=sent.dispatch_id,
            requested_due_at=wanted,
            reason="the owners' committee has to agree to the repair",
        ),
        timeout=CALL_TIMEOUT_S,
    ).dispatch.review_approval_id


def wait_open(reader: approvals_grpc.ApprovalsServiceStub, approval_ids: list[str], seconds: float) -> None:
    """Until approvals opened every request (it reacts to the tickets' events)."""
    deadline, waiting = time.monotonic() + seconds, list(approval_ids)
    while waiting:
        try:
            reader.GetRequest(apb.GetRequestRequest(approval_id=waiting[-1]), timeout=CALL_TIMEOUT_S)
            waiting.pop()
        except grpc.RpcError as error:
            if error.code() != grpc.StatusCode.NOT_FOUND or time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def describe(change: apb.DryRunChange) -> str:
    if change.HasField("extension"):
        return f"{change.extension.ToTimedelta().total_seconds() / 3600:.0f} h"
    return f"{change.amount.minor_units / 100:,.2f} {change.amount.currency}"


def chain_of(change: apb.DryRunChange) -> str:
    return " → ".join(
        "+".join(f"{d.department}/{d.role}" if d.role else d.department for d in step.deciders)
        for step in change.new_chain
    )


def report(asked: dict[str, int], response: apb.DryRunPolicyResponse, version: int) -> Table:
    groups: dict[tuple[str, str, str, str], list[apb.DryRunChange]] = defaultdict(list)
    for change in response.changes:
        groups[(change.kind, change.rule, change.new_rule, chain_of(change))].append(change)
    table = Table(
        title=f"Dry run of version {version}: {response.replayed} past requests replayed "
        f"({', '.join(f'{n} {k}' for k, n in asked.items())}), {len(response.changes)} would change"
    )
    for column in (
        "kind",
        "chain chosen (v1 rule)",
        f"would be (v{version} rule)",
        "new chain",
        "requests",
        "range",
    ):
        table.add_column(column)
    for (kind, rule, new_rule, chain), changes in sorted(groups.items()):
        values = sorted(changes, key=lambda c: c.extension.seconds or c.amount.minor_units)
        table.add_row(
            kind, rule, new_rule, chain, str(len(changes)), f"{describe(values[0])} to {describe(values[-1])}"
        )
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200, help="tickets asking for money")
    parser.add_argument(
        "--extensions", type=int, default=40, help="dispatches whose department asks for time"
    )
    parser.add_argument("--version", type=int, default=2, help="the policy version tried")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--json", type=Path, help="also write the dry run's answer here, as JSON")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    console, rng, run = Console(width=200), random.Random(args.seed), uuid.uuid4().hex[:8]
    local_settings()
    root = Path(tempfile.mkdtemp(prefix="approvals-dry-run-"))
    config = root / "tickets"
    shutil.copytree(DEFAULT_CONFIG_DIR, config)
    catalogue = config / "dispatch-catalogue.yaml"
    catalogue.write_text(catalogue.read_text().replace("extensions: center}", "extensions: approvals}"))
    try:
        with own_broker(root) as at:
            tickets = start_tickets(
                settings_for(at, root, run, "tickets", tickets=TicketsSettings(config_dir=config))
            )
            approvals = start_approvals(settings_for(at, root, run, "approvals"))
            try:
                desk = tickets_grpc.TicketsServiceStub(
                    CallerChannel(f"127.0.0.1:{tickets.server.port}", token_of(Role.AGENT, "agent-7"))
                )
                housing = tickets_grpc.TicketsServiceStub(
                    CallerChannel(
                        f"127.0.0.1:{tickets.server.port}",
                        token_of(Role.DEPARTMENT, "housing-clerk", department="housing"),
                    )
                )
                admin = approvals_grpc.ApprovalsServiceStub(
                    CallerChannel(f"127.0.0.1:{approvals.server.port}", token_of(Role.ADMIN, "admin-1"))
                )
                supervisor = approvals_grpc.ApprovalsServiceStub(
                    CallerChannel(f"127.0.0.1:{approvals.server.port}", token_of(Role.SUPERVISOR, "sup-1"))
                )
                began = datetime.now(UTC)
                money = [ask_for_money(desk, rng) for _ in range(args.requests)]
                time_asked = [ask_for_time(desk, housing, rng) for _ in range(args.extensions)]
                wait_open(supervisor, money + time_asked, 120.0)
                since, until = Timestamp(), Timestamp()
                since.FromDatetime(began - timedelta(minutes=1))
                until.FromDatetime(datetime.now(UTC) + timedelta(minutes=1))
                response = admin.DryRunPolicy(
                    apb.DryRunPolicyRequest(version=args.version, since=since, until=until),
                    timeout=CALL_TIMEOUT_S,
                )
                active = admin.GetPolicy(apb.GetPolicyRequest(), timeout=CALL_TIMEOUT_S)
            finally:
                approvals.close(10)
                tickets.close(10)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    console.print(report({"money": args.requests, "extensions": args.extensions}, response, args.version))
    console.print(f"active version after the dry run: {active.active_version} (nothing activated)")
    if args.json:
        from google.protobuf.json_format import MessageToDict

        args.json.write_text(json.dumps(MessageToDict(response), indent=2))


if __name__ == "__main__":
    main()
