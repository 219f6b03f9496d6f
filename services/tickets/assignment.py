"""Automatic assignment within a ticket group: round robin or least open, a cap per member, oldest first.

A group's members are those groups.yaml lists and the logged-in agents whose skill groups include
the group's id (the ``Member`` table, kept from agents' events in the tickets' own changelog, so a
restart brings it back). ``choose`` is the pure decision; the ``Assigner`` keeps the view it
decides over (open tickets per agent, waiting tickets per group, each group's last pick) current
from the store's committed tickets, and gives waiting tickets to members with room, each as an
``Assign`` command through the write path with a request id derived from the ticket's version, so
the same wait is never answered twice.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from services.platform.codec import dataclass_codec
from services.platform.envelope import Envelope
from services.platform.errors import DomainError, Unavailable
from services.platform.eventstore import AggregateKind, EventStore
from services.platform.requests import Request
from services.tickets import domain
from services.tickets.domain import Ticket
from services.tickets.policies import Group

log = logging.getLogger(__name__)

MEMBER = "Member"
MEMBERS_TOPIC = "tickets.members.v1"


@dataclass(frozen=True)
class Member:
    """An agent as ticket groups see it: logged in or not, and its skill groups."""

    agent_id: str
    logged_in: bool = False
    skill_groups: tuple[str, ...] = ()


def member_after(member: Member, envelope: Envelope) -> Member:
    """The member after one of agents' events (the same agent if the event says nothing of it)."""
    event = envelope.payload
    match envelope.event_type:
        case "AgentLoggedIn":
            return replace(member, logged_in=True, skill_groups=tuple(event.skill_groups))
        case "AgentSkillsChanged":
            return replace(member, skill_groups=tuple(event.skill_groups))
        case "AgentLoggedOut":
            return replace(member, logged_in=False)
    return member


def choose(group: Group, members: Sequence[str], open_counts: Mapping[str, int], last: str) -> str | None:
    """The member to give the group's next ticket to, or None while every member is at the cap."""
    roster = sorted(set(members))
    room = [m for m in roster if open_counts.get(m, 0) < group.cap]
    if not room:
        return None
    if group.strategy == "least_open":
        return min(room, key=lambda m: (open_counts.get(m, 0), m))
    after = [m for m in room if m > last]
    return (after or room)[0]


class Assigner:
    """Gives the waiting tickets of each group to its members, as the store's tickets change."""

    def __init__(
        self,
        store: EventStore,
        groups: Mapping[str, Group],
        execute: Callable[[Request, domain.Command], Any],
        clock: Callable[[], datetime],
    ) -> None:
        self._store = store
        self._groups = groups
        self._execute = execute
        self._clock = clock
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._dirty: set[str] = set()
        self._tickets: dict[str, Ticket] = {}
        self._members: dict[str, Member] = {}
        self._last: dict[str, str] = {}
        store.add_listener(self.track)

    def track(self, kind: AggregateKind[Any], key: str, state: Any) -> None:
        """The store listener: keeps the view and marks the groups whose waiting tickets may move."""
        with self._lock:
            if kind.name == MEMBER:
                self._members[key] = state
                self._dirty.update(set(state.skill_groups) & set(self._groups))
            elif kind.name == domain.KIND:
                before = self._tickets.get(key)
                self._tickets[key] = state
                if (
                    state.assignee_id
                    and state.group_id
                    and before is not None
                    and before.assignee_id != state.assignee_id
                ):
                    self._last[state.group_id] = state.assignee_id
                for ticket in (before, state):
                    if ticket is not None and ticket.group_id in self._groups:
                        self._dirty.add(ticket.group_id)
            else:
                return
            self._changed.notify()

    def members(self, group_id: str) -> list[str]:
        group = self._groups[group_id]
        dynamic = [m.agent_id for m in self._members.values() if m.logged_in and group_id in m.skill_groups]
        return sorted({*group.members, *dynamic})

    def open_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for ticket in self._tickets.values():
            if ticket.assignee_id and ticket.status not in domain.DONE:
                counts[ticket.assignee_id] = counts.get(ticket.assignee_id, 0) + 1
        return counts

    def waiting(self, group_id: str) -> list[Ticket]:
        """The group's tickets nobody holds, oldest first."""
        waiting = [
            t
            for t in self._tickets.values()
            if t.group_id == group_id and not t.assignee_id and t.status not in domain.DONE
        ]
        return sorted(waiting, key=lambda t: (t.created_at or datetime.min, t.ticket_id))

    def assign_due(self) -> int:
        """Give every waiting ticket a member has room for; returns how many were given."""
        given = 0
        while True:
            with self._lock:
                if not self._dirty:
                    return given
                group_id = self._dirty.pop()
                picks = self._picks(group_id)
            for ticket, agent_id in picks:
                if self._give(ticket, agent_id, self._groups[group_id].strategy):
                    given += 1

    def _picks(self, group_id: str) -> list[tuple[Ticket, str]]:
        group = self._groups[group_id]
        counts = self.open_counts()
        members = self.members(group_id)
        last = self._last.get(group_id, "")
        picks = []
        for ticket in self.waiting(group_id):
            agent_id = choose(group, members, counts, last)
            if agent_id is None:
                break
            picks.append((ticket, agent_id))
            counts[agent_id] = counts.get(agent_id, 0) + 1
            last = agent_id
        return picks

    def _give(self, ticket: Ticket, agent_id: str, strategy: str) -> bool:
        version = self._store.load(domain.KIND, ticket.ticket_id).version
        request = Request.of_fields(
            f"auto-assign/{ticket.ticket_id}/{version}",
            "Assign",
            {"agent": agent_id},
            actor=self._store.actor,
        )
        command = domain.Assign(
            ticket.ticket_id,
            self._clock(),
            "auto-assign",
            assignee_id=agent_id,
            group_id=ticket.group_id,
            automatic=True,
            strategy=strategy,
        )
        try:
            self._execute(request, command)
        except DomainError as refused:
            log.info("ticket %s not assigned to %s: %s", ticket.ticket_id, agent_id, refused)
            return False
        except Unavailable as error:
            log.warning("ticket %s not assigned yet: %s", ticket.ticket_id, error)
            with self._lock:
                self._dirty.add(ticket.group_id)
            return False
        return True

    def run(self, stop: threading.Event, max_wait_s: float = 1.0) -> None:
        """Assign as tickets and members change, until ``stop`` is set."""
        while not stop.is_set():
            self.assign_due()
            with self._lock:
                if not self._dirty:
                    self._changed.wait(max_wait_s)


def member_kind() -> AggregateKind[Member]:
    return AggregateKind.table(MEMBER, Member, MEMBERS_TOPIC, *dataclass_codec(Member))
