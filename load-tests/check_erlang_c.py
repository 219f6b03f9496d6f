"""Erlang C against the running system: an M/M/c queue played by the simulator, measured by the KPIs.

    python load-tests/check_erlang_c.py --start-services --minutes 15    # what `make erlang-check` runs

Callers arrive at a constant rate (a Poisson process) to one queue served by c agents. Talk time is
exponential; callers never hang up and take no callbacks; agents answer every offer at once, take
no breaks and the queue's after-contact work ends by itself after 50 ms: an M/M/c queue, played in
real time through intake, routing and agents. Every figure below comes from the KPI service's API
(QueryKpis, the views the dashboards read), over the run less a warm-up, cut into one-minute
intervals:
- measured: the service level (answered within T / answered: nobody abandons, so the three variants
  agree) and ASA of each minute; their batch means with a 99% confidence interval (Student's t);
- predicted: Erlang C from the arrival rate and handle time the same KPIs measured.
M/M/c leaves out one fact of a real center, which the KPIs measure and the prediction includes: a
caller's wait runs until the agent answers, so it includes the ring (offer to answer, the agents'
reserved time), and the agent is held for ring plus handling. So Erlang's service time is
(reserved + handling) per handled contact, its queue wait gets the mean ring added for ASA, and its
service level is taken at T less the mean ring. The check passes when each prediction lies within
its measured 99% interval; it exits 1 otherwise.
"""

from __future__ import annotations

import argparse
import math
import signal
import sys
import threading
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from statistics import fmean, stdev

from callcenter.kpi.v1 import service_pb2 as kpi_pb
from callcenter.kpi.v1 import service_pb2_grpc as kpi_grpc
from rich.console import Console
from rich.progress import Progress
from rich.table import Table
from scipy.stats import t as student_t
from simulator.callers import CallerChannel
from simulator.driver import Endpoints, Simulation
from simulator.scenario import QueuePlan, Scenario

from services import launcher
from services.kpi import erlang
from services.platform.settings import Settings

QUEUE = "mmc"
CONFIDENCE = 0.99
BATCH = timedelta(minutes=1)


@dataclass(frozen=True)
class Interval:
    """A measured value: the mean of the batches and its confidence interval."""

    mean: float
    low: float
    high: float

    @classmethod
    def of(cls, batches: list[float]) -> Interval:
        half = (
            student_t.ppf(0.5 + CONFIDENCE / 2, len(batches) - 1) * stdev(batches) / math.sqrt(len(batches))
        )
        centre = fmean(batches)
        return cls(centre, centre - half, centre + half)

    def holds(self, value: float) -> bool:
        return self.low <= value <= self.high


def mmc_scenario(args: argparse.Namespace) -> Scenario:
    return replace(
        Scenario(),
        seed=args.seed,
        duration_s=args.minutes * 60,
        profile=(1.0,) * 24,
        peak_arrivals_per_s=args.erlangs / args.service_s,
        queues=(QueuePlan(QUEUE, QUEUE, 1.0),),
        agents=args.agents,
        handle_median_s=args.service_s,
        handle_exponential=True,
        patience_mean_s=math.inf,
        callback_share=0.0,
        self_service_share=0.0,
        vip_share=0.0,
        transfer_share=0.0,
        hold_share=0.0,
        answer_delay_s=(0.0, 0.0),
        miss_share=0.0,
        reject_share=0.0,
        wrap_up_timeout_share=1.0,
        wrap_up_time_s=0.05,
        break_every_s=math.inf,
        service_level_s=args.threshold_s,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, default=10, help="c, the agents serving the queue")
    parser.add_argument(
        "--erlangs", type=float, default=7.0, help="offered traffic: arrival rate x talk time"
    )
    parser.add_argument("--service-s", type=float, default=6.0, help="mean talk time, seconds")
    parser.add_argument("--threshold-s", type=float, default=2.0, help="T of the service level, seconds")
    parser.add_argument("--minutes", type=float, default=15.0, help="how long callers keep arriving")
    parser.add_argument("--warm-up-minutes", type=float, default=1.0, help="left out: the queue starts empty")
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--start-services", action="store_true", help="start the local services for the run")
    args = parser.parse_args()
    if args.erlangs >= args.agents:
        parser.error(f"{args.erlangs} Erlangs on {args.agents} agents: the queue would grow without bound")

    console = Console()
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    running = []
    if args.start_services:
        running = launcher.start_all({})
        launcher.wait_healthy(running)
    try:
        addresses = launcher.addresses()
        endpoints = Endpoints(
            addresses["intake"], addresses["routing"], addresses["agents"], Settings().kafka, addresses["kpi"]
        )
        scenario = mmc_scenario(args)
        sim = Simulation(scenario, endpoints)
        sim.setup()
        began = datetime.now(UTC)
        with Progress(console=console, transient=True) as progress:
            task = progress.add_task("M/M/c callers", total=scenario.duration_s)
            sim.run(stop, on_tick=lambda s: progress.update(task, completed=s.elapsed()))
        sim.teardown()
        if stop.is_set():
            return 1
        threading.Event().wait(3.0)  # KPI freshness is well under a second; room for a slow machine
        window = (
            _minute_after(began + timedelta(minutes=args.warm_up_minutes)),
            _minute_before(began, scenario),
        )
        return _compare(console, endpoints.kpi, window, list(sim.agents), args)
    finally:
        if running:
            launcher.stop_all(running)


def _minute_after(moment: datetime) -> datetime:
    return moment.replace(second=0, microsecond=0) + BATCH


def _minute_before(began: datetime, scenario: Scenario) -> datetime:
    return (began + timedelta(seconds=scenario.duration_s)).replace(second=0, microsecond=0)


def _compare(
    console: Console,
    address: str,
    window: tuple[datetime, datetime],
    agent_ids: list[str],
    args: argparse.Namespace,
) -> int:
    with CallerChannel(address) as channel:
        kpis = kpi_grpc.KpiServiceStub(channel)
        minutes = [dict(row.values) for row in _query(kpis, kpi_pb.SCOPE_QUEUE, window, [QUEUE])]
        agents = [dict(row.values) for row in _query(kpis, kpi_pb.SCOPE_AGENT, window, agent_ids)]
    minutes = [m for m in minutes if m.get("handled")]
    if len(minutes) < 3:
        console.print(f"[red]only {len(minutes)} measured minutes: run longer (--minutes)")
        return 1
    seconds = (window[1] - window[0]).total_seconds()
    offered = sum(m["offered"] for m in minutes)
    handled = sum(m["handled"] for m in minutes)
    arrival_rate = offered / seconds
    aht = sum(m["aht_s"] * m["handled"] for m in minutes) / handled
    accepted = sum(a.get("accepted", 0.0) for a in agents)
    ring = sum(a.get("reserved_s", 0.0) for a in agents) / accepted
    held = aht + ring
    traffic = arrival_rate * held
    c, threshold = args.agents, args.threshold_s

    service_level = Interval.of([m["service_level_answered"] for m in minutes])
    asa = Interval.of([m["asa_s"] for m in minutes])
    predicted_sl = erlang.service_level(traffic, c, held, max(threshold - ring, 0.0))
    predicted_asa = erlang.average_speed_of_answer(traffic, c, held) + ring
    plain_sl = erlang.service_level(arrival_rate * aht, c, aht, threshold)
    plain_asa = erlang.average_speed_of_answer(arrival_rate * aht, c, aht)

    console.print(
        f"M/M/{c}, seed {args.seed}: {len(minutes)} one-minute batches, {offered:.0f} callers; "
        f"arrivals {arrival_rate:.3f}/s, handle time {aht:.2f} s, ring {ring * 1000:.0f} ms, "
        f"agent held {held:.2f} s per contact: {traffic:.2f} Erlangs, occupancy {traffic / c:.1%}"
    )
    table = Table(title=f"measured by the KPIs ({CONFIDENCE:.0%} interval, batch means) vs Erlang C")
    for column in ("", "measured", "interval", "Erlang C", "within", "Erlang C on AHT alone"):
        table.add_column(column, justify="right")
    table.add_row(
        f"service level, {threshold:g} s",
        f"{service_level.mean:.1%}",
        f"{service_level.low:.1%} .. {service_level.high:.1%}",
        f"{predicted_sl:.1%}",
        "yes" if service_level.holds(predicted_sl) else "[red]no",
        f"{plain_sl:.1%}",
    )
    table.add_row(
        "ASA",
        f"{asa.mean:.2f} s",
        f"{asa.low:.2f} .. {asa.high:.2f} s",
        f"{predicted_asa:.2f} s",
        "yes" if asa.holds(predicted_asa) else "[red]no",
        f"{plain_asa:.2f} s",
    )
    console.print(table)
    return 0 if service_level.holds(predicted_sl) and asa.holds(predicted_asa) else 1


def _query(
    kpis: kpi_grpc.KpiServiceStub, scope: int, window: tuple[datetime, datetime], keys: list[str]
) -> list[kpi_pb.KpiRow]:
    request = kpi_pb.QueryKpisRequest(scope=scope, interval=kpi_pb.INTERVAL_MINUTE, keys=keys)
    getattr(request, "from").FromDatetime(window[0])
    request.to.FromDatetime(window[1])
    return list(kpis.QueryKpis(request, timeout=60).rows)


if __name__ == "__main__":
    sys.exit(main())
