"""The RoutingService gRPC servicer: requests become calls on the service, states become messages."""

from __future__ import annotations

from datetime import timedelta

from callcenter.routing.v1 import service_pb2 as pb
from callcenter.routing.v1 import service_pb2_grpc
from google.protobuf.duration_pb2 import Duration

from services.platform.requests import Request
from services.routing.handlers import RoutingService

ESTIMATE_METHOD = "rolling mean interval of the queue's last 50 answers x position"


class RoutingServicer(service_pb2_grpc.RoutingServiceServicer):
    def __init__(self, routing: RoutingService) -> None:
        self._routing = routing

    def UpsertQueue(self, request: pb.UpsertQueueRequest, context) -> pb.UpsertQueueResponse:
        loaded = self._routing.upsert_queue(
            Request.of(request, context), request.config, request.expected_version
        )
        return pb.UpsertQueueResponse(config=loaded.state.config, version=loaded.version)

    def GetQueue(self, request: pb.GetQueueRequest, context) -> pb.GetQueueResponse:
        loaded = self._routing.queue(request.queue_id)
        return pb.GetQueueResponse(config=loaded.state.config, version=loaded.version)

    def ListQueues(self, request: pb.ListQueuesRequest, context) -> pb.ListQueuesResponse:
        return pb.ListQueuesResponse(queues=[queue.config for queue in self._routing.queues()])

    def GetQueueStatus(self, request: pb.GetQueueStatusRequest, context) -> pb.GetQueueStatusResponse:
        status = self._routing.status(request.queue_id)
        message = pb.QueueStatus(
            queue_id=status.queue_id,
            waiting=status.waiting,
            ringing=status.ringing,
            longest_wait=_duration(status.longest_wait),
            agents_logged_in=status.agents_logged_in,
            agents_ready=status.agents_ready,
            callbacks_pending=status.callbacks_pending,
        )
        if status.estimated_wait is not None:
            message.estimated_wait.CopyFrom(_duration(status.estimated_wait))
        return pb.GetQueueStatusResponse(status=message)

    def EstimateWait(self, request: pb.EstimateWaitRequest, context) -> pb.EstimateWaitResponse:
        position, estimate = self._routing.estimate(request.queue_id, request.contact_id)
        if estimate is None:
            return pb.EstimateWaitResponse(position=position, method="none: no answers yet")
        return pb.EstimateWaitResponse(
            position=position, estimated_wait=_duration(estimate), method=ESTIMATE_METHOD
        )


def _duration(value: timedelta) -> Duration:
    message = Duration()
    message.FromTimedelta(value)
    return message
