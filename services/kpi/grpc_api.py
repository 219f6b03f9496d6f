"""The KpiService gRPC servicer: requests become queries, rows become messages; nothing else."""

from __future__ import annotations

from datetime import timedelta

from callcenter.kpi.v1 import service_pb2 as pb
from callcenter.kpi.v1 import service_pb2_grpc
from google.protobuf.duration_pb2 import Duration

from services.kpi.service import KpiService, Staffing
from services.platform.errors import InvalidArgument

_SCOPES = {
    pb.SCOPE_QUEUE: "queue",
    pb.SCOPE_SKILL_GROUP: "skill_group",
    pb.SCOPE_AGENT: "agent",
    pb.SCOPE_CHANNEL: "channel",
}
_GRAINS = {
    pb.INTERVAL_MINUTE: 60,
    pb.INTERVAL_FIFTEEN_MINUTES: 900,
    pb.INTERVAL_HOUR: 3600,
    pb.INTERVAL_DAY: 86400,
}


class KpiServicer(service_pb2_grpc.KpiServiceServicer):
    def __init__(self, kpis: KpiService) -> None:
        self._kpis = kpis

    def QueryKpis(self, request: pb.QueryKpisRequest, context) -> pb.QueryKpisResponse:
        scope = _SCOPES.get(request.scope)
        if scope is None:
            raise InvalidArgument(
                f"scope {pb.Scope.Name(request.scope)} is not served: use queue, skill group, agent, channel"
            )
        now = self._kpis.now()
        if request.interval == pb.INTERVAL_TODAY:
            since = now.replace(hour=0, minute=0, second=0, microsecond=0)
            until, grain = now, 86400
        else:
            grain = _GRAINS.get(request.interval, 900)
            if not request.HasField("from"):
                raise InvalidArgument("'from' is required unless the interval is today")
            since = getattr(request, "from").ToDatetime(tzinfo=now.tzinfo)
            until = request.to.ToDatetime(tzinfo=now.tzinfo) if request.HasField("to") else now
        rows = self._kpis.query(scope, grain, since, until, list(request.keys))
        wanted = set(request.kpis)
        response = pb.QueryKpisResponse()
        for row in rows:
            out = response.rows.add(key=row["key"])
            out.bucket_start.FromDatetime(row["interval_start"])
            for name, value in row.items():
                if (
                    isinstance(value, int | float)
                    and not isinstance(value, bool)
                    and (not wanted or name in wanted)
                ):
                    out.values[name] = float(value)
        return response

    def Wallboard(self, request: pb.WallboardRequest, context) -> pb.WallboardResponse:
        response = pb.WallboardResponse()
        response.measured_at.FromDatetime(self._kpis.now())
        for queue in self._kpis.wallboard(list(request.queue_ids)):
            gauges = queue.gauges
            out = response.queues.add(
                queue_id=gauges.queue_id,
                waiting=gauges.contacts_waiting,
                offered_today=queue.offered_today,
                abandoned_today=queue.abandoned_today,
                service_level_today=queue.service_level_today or 0.0,
            )
            out.longest_wait.FromTimedelta(timedelta(seconds=gauges.longest_wait_s))
            out.estimated_wait.FromTimedelta(timedelta(seconds=gauges.estimated_wait_s))
            for state, count in gauges.agents.items():
                out.agents_by_state[state] = count
        return response

    def StaffingAdvice(self, request: pb.StaffingAdviceRequest, context) -> pb.StaffingAdviceResponse:
        aht = request.average_handle_time.ToTimedelta().total_seconds()
        advice = self._kpis.staffing(request.queue_id, request.arrival_rate_per_hour, aht)
        return pb.StaffingAdviceResponse(advice=[_advice(item) for item in advice])


def _advice(item: Staffing) -> pb.StaffingAdvice:
    message = pb.StaffingAdvice(
        queue_id=item.queue_id,
        arrival_rate_per_hour=item.arrivals_per_hour,
        target_service_level=item.target_service_level,
        agents_needed=item.advice.agents,
        predicted_service_level=item.advice.service_level,
        predicted_occupancy=item.advice.occupancy,
        agents_logged_in=item.agents_logged_in,
    )
    message.average_handle_time.CopyFrom(_duration(item.aht_s))
    message.target_answer_time.CopyFrom(_duration(item.sl_threshold_s))
    message.predicted_asa.CopyFrom(_duration(item.advice.asa_s))
    return message


def _duration(seconds: float) -> Duration:
    duration = Duration()
    duration.FromTimedelta(timedelta(seconds=seconds))
    return duration
