"""The KPI read side: the views' numbers for the API, the live board, and Erlang C staffing advice.

Every figure here comes from the views in ``deploy/clickhouse`` (what Grafana shows) or from the
live board (what the gauges show); nothing is computed twice in two ways.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from services.kpi import erlang
from services.kpi.handlers import LiveBoard, QueueGauges, gauge_rows
from services.kpi.store import KpiStore, KpiStoreError
from services.platform.errors import InvalidArgument

log = logging.getLogger(__name__)

SCOPES = ("queue", "skill_group", "agent", "channel")
STAFFING_WINDOW = timedelta(minutes=30)
DEFAULT_AHT_S = 180.0

_CONTACT_KPIS = (
    "SELECT * FROM kpi_contacts(by={by:String}, grain_s={grain:UInt32}, "
    "from={f:DateTime64(3)}, to={t:DateTime64(3)})"
)
_TIME_ARGS = "grain_s={grain:UInt32}, from={f:DateTime64(3)}, to={t:DateTime64(3)}"
_TIME_VIEWS = {"agent": ("kpi_agents", "agent_id"), "skill_group": ("kpi_skill_groups", "skill_group")}
_WINDOW = """
SELECT key AS queue_id, sum(live_offered) AS arrivals, sum(handled) AS handled_in_window,
       sum(aht_s * handled) / nullIf(handled_in_window, 0) AS window_aht_s
FROM kpi_contacts(by='queue', grain_s=86400, from={f:DateTime64(3)}, to={t:DateTime64(3)})
GROUP BY key
"""
_SETTINGS = "SELECT queue_id, sl_threshold_s, sl_target_percent FROM queue_settings FINAL"
_DEPARTMENTS = (
    "SELECT * FROM kpi_departments(from={f:DateTime64(3)}, to={t:DateTime64(3)}) ORDER BY department"
)
_SCORECARD = "SELECT * FROM kpi_department_scorecard(month={month:Date}) ORDER BY rank, department"


@dataclass(frozen=True)
class Staffing:
    queue_id: str
    arrivals_per_hour: float
    aht_s: float
    sl_threshold_s: float
    target_service_level: float
    advice: erlang.Staffing
    agents_logged_in: int


@dataclass(frozen=True)
class QueueNow:
    gauges: QueueGauges
    offered_today: int
    abandoned_today: int
    service_level_today: float | None


class KpiService:
    """Queries over the KPI store and the live board; safe to call from the gRPC threads."""

    def __init__(self, store: KpiStore, board: LiveBoard, clock: Callable[[], datetime]) -> None:
        self._store = store
        self._board = board
        self.now = clock

    def query(
        self, scope: str, grain_s: int, since: datetime, until: datetime, keys: Sequence[str] = ()
    ) -> list[dict[str, Any]]:
        """KPI rows per key and bucket, from ``kpi_contacts`` (or ``kpi_agents`` for agents' time)."""
        if scope not in SCOPES:
            raise InvalidArgument(f"scope must be one of {', '.join(SCOPES)}, not {scope!r}")
        if grain_s <= 0:
            raise InvalidArgument(f"the interval must be positive, not {grain_s} s")
        if until <= since:
            raise InvalidArgument(f"'to' ({until.isoformat()}) must be after 'from' ({since.isoformat()})")
        params = {"by": scope, "grain": grain_s, "f": since, "t": until}
        rows = {(r["key"], r["interval_start"]): dict(r) for r in self._store.query(_CONTACT_KPIS, params)}
        if scope in _TIME_VIEWS:  # agents' time (occupancy, utilisation, offers) beside the contacts'
            view, key_column = _TIME_VIEWS[scope]
            sql = f"SELECT * FROM {view}({_TIME_ARGS})"
            for row in self._store.query(sql, params):
                key = row.pop(key_column)
                row.pop("agent_id", None)
                row.pop("skill_group", None)
                slot = rows.setdefault((key, row["interval_start"]), {"key": key})
                # handled and AHT by queue entry (the contact view) stay; the agents' time is added
                slot.update({name: value for name, value in row.items() if name not in slot})
        wanted = set(keys)
        return sorted(
            (row for row in rows.values() if not wanted or row["key"] in wanted),
            key=lambda row: (row["key"], row["interval_start"]),
        )

    def departments(self, since: datetime, until: datetime) -> list[dict[str, Any]]:
        """The departments' KPIs of the dispatches sent in [since, until) (``kpi_departments``)."""
        if until <= since:
            raise InvalidArgument(f"'to' ({until.isoformat()}) must be after 'from' ({since.isoformat()})")
        return self._store.query(_DEPARTMENTS, {"f": since, "t": until})

    def scorecard(self, month: date) -> list[dict[str, Any]]:
        """The scorecard of the month holding ``month``, best first (``kpi_department_scorecard``)."""
        return self._store.query(_SCORECARD, {"month": month})

    def wallboard(self, queue_ids: Sequence[str] = ()) -> list[QueueNow]:
        now = self.now()
        start = now.replace(hour=0, minute=0, second=0, microsecond=0)
        today = {row["key"]: row for row in self._today(start, now)}
        result = []
        for gauges in self._board.queues(now):
            if queue_ids and gauges.queue_id not in queue_ids:
                continue
            row = today.get(gauges.queue_id, {})
            result.append(
                QueueNow(
                    gauges,
                    int(row.get("offered") or 0),
                    int(row.get("abandoned") or 0),
                    row.get("service_level_offered"),
                )
            )
        return result

    def staffing(
        self, queue_id: str = "", arrivals_per_hour: float = 0.0, aht_s: float = 0.0
    ) -> list[Staffing]:
        """Erlang C per queue on the last half hour's arrivals and AHT (or the figures given)."""
        if arrivals_per_hour < 0 or aht_s < 0:
            raise InvalidArgument(
                f"arrival rate and handle time must not be negative ({arrivals_per_hour}/h, {aht_s} s)"
            )
        now = self.now()
        window = {
            row["queue_id"]: row for row in self._store.query(_WINDOW, {"f": now - STAFFING_WINDOW, "t": now})
        }
        settings = {row["queue_id"]: row for row in self._store.query(_SETTINGS)}
        queues = sorted(set(settings) | set(window))
        if queue_id:
            if queue_id not in queues:
                raise InvalidArgument(
                    f"no queue {queue_id!r} is known to the KPIs; known: {', '.join(queues)}"
                )
            queues = [queue_id]
        per_hour = timedelta(hours=1) / STAFFING_WINDOW
        advice = []
        for queue in queues:
            seen = window.get(queue, {})
            setting = settings.get(queue, {"sl_threshold_s": 20.0, "sl_target_percent": 80})
            rate = arrivals_per_hour or float(seen.get("arrivals") or 0) * per_hour
            handle = aht_s or float(seen.get("window_aht_s") or 0.0) or DEFAULT_AHT_S
            target = setting["sl_target_percent"] / 100
            staffing = erlang.staffing_for(rate, handle, target, setting["sl_threshold_s"])
            advice.append(
                Staffing(
                    queue,
                    rate,
                    handle,
                    setting["sl_threshold_s"],
                    target,
                    staffing,
                    self._board.agents_for(queue),
                )
            )
        return advice

    def write_gauges(self) -> None:
        self._store.insert("live_gauges", gauge_rows(self._board, self.now()))

    def write_staffing(self) -> None:
        now = self.now()
        rows = [
            {
                "queue_id": s.queue_id,
                "computed_at": now,
                "arrivals_per_hour": s.arrivals_per_hour,
                "aht_s": s.aht_s,
                "sl_threshold_s": s.sl_threshold_s,
                "sl_target_percent": round(s.target_service_level * 100),
                "agents_needed": s.advice.agents,
                "predicted_service_level": s.advice.service_level,
                "predicted_asa_s": s.advice.asa_s,
                "predicted_occupancy": s.advice.occupancy,
                "agents_logged_in": s.agents_logged_in,
            }
            for s in self.staffing()
        ]
        self._store.insert("staffing_advice", rows)

    def run_gauges(self, stop: threading.Event, every_s: float = 1.0, staffing_every: int = 10) -> None:
        """Write the live gauges every second and the staffing advice every ``staffing_every`` ticks."""
        tick = 0
        while not stop.wait(every_s):
            try:
                self.write_gauges()
                if tick % staffing_every == 0:
                    self.write_staffing()
            except KpiStoreError as error:
                log.warning("live gauges not written: %s", error)
            tick += 1

    def _today(self, start: datetime, now: datetime) -> list[dict[str, Any]]:
        if now <= start:
            return []
        return self._store.query(_CONTACT_KPIS, {"by": "queue", "grain": 86400, "f": start, "t": now})
