"""The tickets HTTP API on the real broker, over TLS as simple clients call it: a gateway opens a
ticket from a web form, the center dispatches it over gRPC, the lead department works its dispatch
over HTTP, and after a restart a repeated request changes nothing."""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request
from datetime import UTC, datetime
from typing import Any

from callcenter.tickets.v1 import service_pb2 as pb
from callcenter.tickets.v1 import service_pb2_grpc

from services.platform.http import bind, serve_http
from services.platform.identity import Role
from services.platform.settings import Settings
from services.tickets.bootstrap import bootstrap
from services.tickets.main import http_app
from tests.support.identity import token
from tests.support.live import LiveContext

# Monday 2 March 2026, 10:00 in Beijing: a working morning of the cn-gov calendar.
BASE = datetime(2026, 3, 2, 2, 0, tzinfo=UTC)


class LiveTicketsHttp(LiveContext):
    """The tickets service in this process on the session's broker, with its HTTP API as main serves it."""

    def __init__(self, kafka_broker: Any) -> None:
        super().__init__(kafka_broker, "tickets", bootstrap, service_pb2_grpc.TicketsServiceStub, BASE)

    def started(self) -> None:
        serve_http(
            http_app(self.process, self.settings),
            bind("127.0.0.1:0", "tickets"),
            self.process,
            self.settings.tls,
        )

    def call(self, method: str, path: str, bearer: str, body: dict | None = None) -> tuple[int, dict]:
        request = urllib.request.Request(
            f"https://127.0.0.1:{self.process.http_port}{path}",
            data=json.dumps(body).encode() if body is not None else None,
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {bearer}"},
            method=method,
        )
        trusted = ssl.create_default_context(cafile=str(Settings().tls.ca))
        try:
            with urllib.request.urlopen(request, timeout=30, context=trusted) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as refused:
            return refused.code, json.loads(refused.read())


def test_a_web_form_ticket_is_worked_by_its_department_over_http_across_a_restart(kafka_broker) -> None:
    live = LiveTicketsHttp(kafka_broker)
    gateway = token(Role.SERVICE, "gw-web")
    environment = token(Role.DEPARTMENT, "env-1", department="environment")
    finance = token(Role.DEPARTMENT, "fin-1", department="finance")
    run = live.run
    try:
        code, ticket = live.call(
            "POST",
            "/v1/tickets",
            gateway,
            {
                "request_id": f"form-{run}",
                "source": "web_form",
                "type": "complaint",
                "category": "environment.noise",
                "summary": f"Night-time construction noise ({run})",
                "description": "Drilling every night.",
                "contact": "+86 139 1234 5678",
            },
        )
        assert (code, ticket["status"], ticket["customer"]) == (201, "new", "**********5678")
        desk = live.stub(Role.AGENT, "agent-7")
        dispatched = desk.Dispatch(
            pb.DispatchRequest(
                request_id=f"dispatch-{run}", ticket_id=ticket["ticket_id"], department="environment"
            )
        )
        path = f"/v1/tickets/{ticket['ticket_id']}/dispatches/{dispatched.dispatch_id}"

        assert live.call("GET", path, finance)[0] == 403
        code, accepted = live.call("POST", f"{path}/accept", environment, {"request_id": f"accept-{run}"})
        assert (code, accepted["status"]) == (200, "accepted")
        code, refused = live.call("POST", f"{path}/accept", environment, {"request_id": f"accept-2-{run}"})
        assert (code, refused["error"]) == (
            409,
            f"dispatch {dispatched.dispatch_id} to environment is accepted; "
            f"only a dispatched one can be accepted",
        )

        live.restart()

        code, again = live.call("POST", f"{path}/accept", environment, {"request_id": f"accept-{run}"})
        assert (code, again) == (200, accepted)
        code, completed = live.call(
            "POST", f"{path}/complete", environment, {"request_id": f"complete-{run}", "result": "site fined"}
        )
        assert (code, completed["status"]) == (200, "completed")
        desk = live.stub(Role.AGENT, "agent-7")  # the restart renewed the channels
        viewed = desk.GetTicket(pb.GetTicketRequest(ticket_id=ticket["ticket_id"])).ticket
        [dispatch] = viewed.dispatches
        assert (dispatch.status, dispatch.result) == (
            pb.DispatchStatus.DISPATCH_STATUS_COMPLETED,
            "site fined",
        )
    finally:
        live.close()
