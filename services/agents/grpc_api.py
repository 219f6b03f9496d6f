"""The AgentsService gRPC servicer: requests become commands, agents become messages; nothing else."""

from __future__ import annotations

from collections.abc import Sequence

from callcenter.agents.v1 import service_pb2 as pb
from callcenter.agents.v1 import service_pb2_grpc
from callcenter.common.v1 import types_pb2

from services.agents import domain
from services.agents.domain import Actor, Agent
from services.agents.handlers import AgentsService
from services.platform.errors import InvalidArgument
from services.platform.requests import Request

State = domain.State


class AgentsServicer(service_pb2_grpc.AgentsServiceServicer):
    def __init__(self, agents: AgentsService) -> None:
        self._agents = agents

    def Login(self, request: pb.LoginRequest, context) -> pb.LoginResponse:
        command = domain.Login(
            agent_id=request.agent_id,
            display_name=request.display_name,
            skills=_skills(request.skills),
            skill_groups=list(request.skill_groups),
            chat_capacity=request.chat_capacity,
            ready=request.ready,
            now=self._agents.now(),
            seat=request.seat,
            team_id=request.team_id,
        )
        return pb.LoginResponse(agent=self._run(request, context, command))

    def SetReady(self, request: pb.SetReadyRequest, context) -> pb.SetReadyResponse:
        command = domain.SetReady(request.agent_id, self._agents.now())
        return pb.SetReadyResponse(agent=self._run(request, context, command))

    def SetNotReady(self, request: pb.SetNotReadyRequest, context) -> pb.SetNotReadyResponse:
        command = domain.SetNotReady(
            request.agent_id, request.reason, self._agents.now(), request.reason_detail
        )
        return pb.SetNotReadyResponse(agent=self._run(request, context, command))

    def Logout(self, request: pb.LogoutRequest, context) -> pb.LogoutResponse:
        command = domain.Logout(request.agent_id, self._agents.now())
        return pb.LogoutResponse(agent=self._run(request, context, command))

    def AcceptOffer(self, request: pb.AcceptOfferRequest, context) -> pb.AcceptOfferResponse:
        command = domain.AcceptOffer(request.agent_id, request.offer_id, self._agents.now())
        return pb.AcceptOfferResponse(agent=self._run(request, context, command))

    def RejectOffer(self, request: pb.RejectOfferRequest, context) -> pb.RejectOfferResponse:
        command = domain.RejectOffer(request.agent_id, request.offer_id, self._agents.now(), request.reason)
        return pb.RejectOfferResponse(agent=self._run(request, context, command))

    def CompleteWrapUp(self, request: pb.CompleteWrapUpRequest, context) -> pb.CompleteWrapUpResponse:
        command = domain.CompleteWrapUp(
            agent_id=request.agent_id,
            contact_id=request.contact_id,
            disposition_code=request.disposition_code,
            now=self._agents.now(),
            resolved=request.resolved,
            ticket=request.ticket if request.HasField("ticket") else None,
        )
        return pb.CompleteWrapUpResponse(agent=self._run(request, context, command))

    def UpdateSkills(self, request: pb.UpdateSkillsRequest, context) -> pb.UpdateSkillsResponse:
        command = domain.UpdateSkills(
            request.agent_id, _skills(request.skills), list(request.skill_groups), request.chat_capacity
        )
        return pb.UpdateSkillsResponse(agent=self._run(request, context, command))

    def ForceState(self, request: pb.ForceStateRequest, context) -> pb.ForceStateResponse:
        now = self._agents.now()
        match request.state:
            case State.AGENT_STATE_READY:
                command: domain.Command = domain.SetReady(request.agent_id, now, by=Actor.SUPERVISOR)
            case State.AGENT_STATE_NOT_READY:
                command = domain.SetNotReady(
                    request.agent_id, request.reason, now, request.reason_detail, by=Actor.SUPERVISOR
                )
            case State.AGENT_STATE_LOGGED_OUT:
                command = domain.Logout(request.agent_id, now, by=Actor.SUPERVISOR)
            case _:
                raise InvalidArgument(
                    f"a supervisor can force ready, not ready or logged out, not {State.Name(request.state)}"
                )
        return pb.ForceStateResponse(agent=self._run(request, context, command))

    def _run(self, request, context, command: domain.Command) -> pb.Agent:
        return _message(self._agents.execute(Request.of(request, context), command))

    def GetAgent(self, request: pb.GetAgentRequest, context) -> pb.GetAgentResponse:
        return pb.GetAgentResponse(agent=_message(self._agents.get(request.agent_id)))

    def ListAgents(self, request: pb.ListAgentsRequest, context) -> pb.ListAgentsResponse:
        agents = [
            agent
            for agent in self._agents.list()
            if (not request.skill_group or request.skill_group in agent.skill_groups)
            and (not request.state or request.state == agent.state)
        ]
        return pb.ListAgentsResponse(
            agents=[_message(agent) for agent in sorted(agents, key=lambda a: a.agent_id)]
        )


def _skills(skills: Sequence[types_pb2.SkillLevel]) -> list[tuple[str, int]]:
    return [(skill.skill, skill.proficiency) for skill in skills]


def _message(agent: Agent) -> pb.Agent:
    message = pb.Agent(
        agent_id=agent.agent_id,
        display_name=agent.display_name,
        state=agent.state,
        reason=agent.reason,
        skills=[types_pb2.SkillLevel(skill=s, proficiency=p) for s, p in agent.skills],
        skill_groups=list(agent.skill_groups),
        chat_capacity=agent.chat_capacity,
        contact_ids=sorted(agent.contacts),
        offered_contact_id=agent.offer.contact_id if agent.offer else "",
    )
    if agent.state_since is not None:
        message.state_since.FromDatetime(agent.state_since)
    if agent.offer is not None:
        message.offer_id = agent.offer.offer_id
        message.offered_queue_id = agent.offer.queue_id
        message.ring_deadline.FromDatetime(agent.offer.ring_deadline)
    if agent.wrap_up is not None:
        message.wrap_up_contact_id = agent.wrap_up.contact_id
        if agent.wrap_up.deadline is not None:
            message.wrap_up_deadline.FromDatetime(agent.wrap_up.deadline)
    return message
