"""What security costs: the contact-flow benchmark on the secured system against the same on plaintext.

Secured is how the system runs: gRPC over TLS, Kafka over SASL_SSL with SCRAM-SHA-512 and ACLs.
Plaintext is the explicit local setting for this comparison: gRPC over loopback without encryption
(``CC_TLS__PLAINTEXT``) and an open broker (``CC_BROKER__SECURITY=plaintext``). Tokens are checked in
both (there is no way to turn them off), so their cost is measured apart: a token's first check (the
signature) and its later ones (the verifier's cache).

Each round starts a fresh broker in each mode under ``--root`` (``make kafka-up`` with that mode's
settings), runs ``bench_contact_flow.py`` against it with the services it starts, and stops the broker;
the rounds alternate which mode goes first, so drift on a noisy machine falls on both. The table gives
each mode's mean over the rounds and the ratio secured / plaintext.

    python load-tests/bench_security.py --rate 20 --rate 40 --seconds 30 --rounds 2
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from services.platform.identity import Role, TokenIssuer, TokenVerifier, ensure_local
from services.platform.settings import PROJECT_ROOT, Settings

MODES = {
    "plaintext": {"CC_BROKER__SECURITY": "plaintext", "CC_TLS__PLAINTEXT": "true"},
    "secured": {},
}


def run_mode(mode: str, root: Path, args: argparse.Namespace, round_no: int) -> dict:
    base = root / f"{mode}-{round_no}"
    shutil.rmtree(base, ignore_errors=True)
    env = {
        **os.environ,
        **MODES[mode],
        "CC_BROKER__DATA_DIR": str(base / "kafka"),
        "CC_RUN_DIR": str(base / "run"),
    }
    out = base / "results.json"
    subprocess.run(["make", "-s", "kafka-up"], cwd=PROJECT_ROOT, env=env, check=True)
    try:
        command = [sys.executable, "load-tests/bench_contact_flow.py", "--seconds", str(args.seconds)]
        for rate in args.rate:
            command += ["--rate", str(rate)]
        command += ["--json", str(out), "--warm-up-seconds", str(args.warm_up_seconds)]
        subprocess.run(command, cwd=PROJECT_ROOT, env=env, check=True)
    finally:
        subprocess.run(["make", "-s", "kafka-down"], cwd=PROJECT_ROOT, env=env, check=False)
    return json.loads(out.read_text())


def token_checks(count: int) -> tuple[float, float]:
    """Microseconds per first check of a token (its signature) and per later check (cached)."""
    settings = Settings()
    ensure_local(settings)
    issuer = TokenIssuer(settings.auth)
    tokens = [issuer.for_role(Role.AGENT, f"a-{n}") for n in range(count)]
    verifier = TokenVerifier(settings.auth)
    began = time.perf_counter()
    for token in tokens:
        verifier.verify(token)
    first = (time.perf_counter() - began) / count
    began = time.perf_counter()
    for token in tokens:
        verifier.verify(token)
    cached = (time.perf_counter() - began) / count
    return first * 1e6, cached * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, action="append", help="arrivals per second (repeatable)")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--warm-up-seconds", type=float, default=20.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--root", type=Path, default=PROJECT_ROOT / ".data" / "bench-security")
    args = parser.parse_args()
    args.rate = args.rate or [20.0, 40.0]
    runs: dict[str, list[dict]] = {mode: [] for mode in MODES}
    for round_no in range(args.rounds):
        order = list(MODES) if round_no % 2 == 0 else list(reversed(MODES))
        for mode in order:
            runs[mode].append(run_mode(mode, args.root, args, round_no))

    table = Table(
        title=f"contact flow, secured vs plaintext: {args.rounds} rounds of {args.seconds:.0f} s per rate"
    )
    for column in (
        "rate/s",
        "connected/s plaintext",
        "connected/s secured",
        "ratio",
        "queued->offered p99 ms plaintext",
        "secured",
        "ratio",
        "requested->seen p50 ms plaintext",
        "secured",
        "ratio",
    ):
        table.add_column(column, justify="right")

    def mean(mode: str, index: int, pick) -> float:
        return statistics.fmean(pick(run["results"][index]) for run in runs[mode])

    for index, rate in enumerate(args.rate):
        row = [f"{rate:g}"]
        for pick, fmt in (
            (lambda r: r["connected_per_s"], "{:.1f}"),
            (lambda r: r["queued_to_offered"][1], "{:.1f}"),
            (lambda r: r["requested_to_seen"][0], "{:.0f}"),
        ):
            plain, secured = mean("plaintext", index, pick), mean("secured", index, pick)
            row += [fmt.format(plain), fmt.format(secured), f"{secured / plain:.2f}x" if plain else "-"]
        table.add_row(*row)
    console = Console(width=180)
    console.print(table)
    for mode in MODES:
        hops = [run["baseline_hop"]["p50_ms"] for run in runs[mode]]
        console.print(f"bare transactional hop p50, {mode}: {', '.join(f'{h:.1f}' for h in hops)} ms")
    first, cached = token_checks(2000)
    console.print(
        f"token check: {first:.0f} µs the first time (EdDSA signature), {cached:.1f} µs after (cached)"
    )


if __name__ == "__main__":
    main()
