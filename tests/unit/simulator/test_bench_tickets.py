"""The tickets benchmark's arithmetic and report: percentiles in milliseconds, ratios to the baseline."""

from __future__ import annotations

import math

from bench_tickets import Creating, Dispatching, Replaying, Result, latency_ms, ratio, rows


def result() -> Result:
    return Result(
        creating=Creating(2000, 16, 2000, 8.0, 250.0, (60.0, 150.0), {}),
        dispatching=Dispatching(300, "environment", (13.0, 40.0), (6.0, 16.0), (3.5, 12.0)),
        replaying=Replaying(
            events=1_000_000,
            tickets=125_000,
            events_per_ticket=8,
            write_seconds=17.0,
            replayed_events=1_000_000,
            rebuilt_tickets=125_000,
            quarantined=0,
            replay_seconds=50.0,
            replay_per_s=20_000.0,
            bare_read_per_s=(200_000.0, 300_000.0),
            decode_read_per_s=100_000.0,
        ),
    )


def test_latencies_are_the_median_and_p99_in_milliseconds() -> None:
    samples = [n / 1000 for n in range(1, 101)]
    assert latency_ms(samples) == (51.0, 100.0)


def test_latencies_without_samples_are_not_a_number() -> None:
    assert all(math.isnan(value) for value in latency_ms([]))


def test_a_ratio_says_how_many_times_the_baseline_or_nothing_without_one() -> None:
    assert ratio(13.0, 3.5) == "3.7x"
    assert ratio(13.0, 0.0) == "-"
    assert ratio(math.nan, 3.5) == "-"


def test_the_report_puts_each_measure_beside_its_baseline_of_the_same_run() -> None:
    create, rpc, inbox, replay, decoding = rows(result())
    assert create[1].startswith("250 calls/s (2000 in 8.0 s)")
    assert rpc[3] == "1.7x"
    assert inbox[0] == "Dispatch -> dept.environment.inbox.v1 (2 hops)"
    assert inbox[3] == "p50 3.7x, p99 3.3x"
    # The bare reads before and after the store's replay are averaged: 250,000 records/s.
    assert replay[2] == "bare consumer to the end 250,000 records/s"
    assert replay[3] == "12.5x slower"
    assert decoding[3] == "2.5x slower"
