"""Event-channel benchmark: agents' events accepted, stored and delivered, on SQLite and on
PostgreSQL, against a bare relay without persistence measured in the same run.

    python -m benchmarks.events            # full run (about 10 minutes)
    python -m benchmarks.events --quick    # one repeat per step, shorter steps

Shape: 10 agents, each with one publisher (a service token starting it for a user) and five
subscribers (that user's tokens: the visibility rule is applied to every delivery), all on
``/ws/agents``. The total publish rate climbs a ladder; a step passes when the median over repeats
lost nothing, refused nothing and kept p99 delivery latency under 500 ms. Reported per server:
the highest passing rate with its accepted events and deliveries per second, and p50/p99 at
1,000 events/s. The server runs on one core (``taskset``), the Node load generator on the other;
its own CPU is reported. Results go to benchmarks/results/events.{json,md}.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from benchmarks.cluster import create_database, drop_database
from benchmarks.fanout import JS, RESULTS, ROOT, Server, free_port, wait_for_port
from server.auth import mint_token

LADDER = [1_000, 2_500, 5_000, 7_500, 10_000, 15_000, 20_000]
AGENTS, SUBSCRIBERS_PER_AGENT = 10, 5
STEP_BYTES = 400
P99_LIMIT_MS = 500.0
SECRET = "benchmark-secret-" + "0123456789abcdef" * 3


def pinned(command: list[str], core: int) -> list[str]:
    """``command`` on one core when ``taskset`` is there (the machine has two)."""
    return ["taskset", "-c", str(core), *command] if os.path.exists("/usr/bin/taskset") else command


def start_ours(name: str, database_url: str) -> Server:
    port = free_port()
    env = {
        **os.environ,
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "DATABASE_URL": database_url,
        "JWT_SECRET": SECRET,
        "LOG_LEVEL": "WARNING",
        "MESSAGE_QUEUE_SIZE": "10000",
        "EVENT_RETENTION": "1000000",
        # The load comes from one address, and each publisher sends up to 2,000 events/s.
        "RATE_LIMIT_EVENT_MESSAGES": "0",
        "RATE_LIMIT_EVENT_BYTES": "0",
        "RATE_LIMIT_CONNECT_IP": "",
    }
    command = pinned([sys.executable, "-m", "server"], 0)
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL)
    wait_for_port(port, process)
    return Server(name, process, port)


def start_relay() -> Server:
    port = free_port()
    command = [sys.executable, "-m", "uvicorn", "benchmarks.event_relay:app", "--host", "127.0.0.1"]
    command += ["--port", str(port), "--ws", "websockets-sansio", "--log-level", "warning"]
    process = subprocess.Popen(pinned(command, 0), cwd=ROOT, stdout=subprocess.DEVNULL)
    wait_for_port(port, process)
    return Server("bare relay (no persistence)", process, port)


def run(server: Server, rate: int, duration: float) -> dict[str, Any]:
    users = [f"user-{n}" for n in range(AGENTS)]
    options = {
        "base": f"ws://127.0.0.1:{server.port}",
        "agents": AGENTS,
        "subscribersPerAgent": SUBSCRIBERS_PER_AGENT,
        "rate": rate,
        "durationMs": int(duration * 1000),
        "drainMs": 10_000,
        "prefix": f"e{uuid.uuid4().hex[:8]}",
        "stepBytes": STEP_BYTES,
        "publisherToken": mint_token(SECRET, user_id="publisher", name="Publisher", role="service"),
        "subscriberTokens": [mint_token(SECRET, user_id=u, name=u) for u in users],
        "subscriberUsers": users,
    }
    result = subprocess.run(
        pinned(["node", str(JS / "eventload.mjs"), json.dumps(options)], 1),
        cwd=JS,
        capture_output=True,
        text=True,
        timeout=duration + 120,
    )
    if result.returncode != 0:
        raise RuntimeError(f"load generator failed: {result.stderr[-2000:]}")
    outcome: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return outcome


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    def median(key: str) -> float:
        return float(statistics.median(r[key] for r in runs if r[key] is not None))

    return {
        "accepted_per_second": round(median("accepted_per_second")),
        "deliveries_per_second": round(median("deliveries_per_second")),
        "p50_ms": round(median("p50_ms"), 1),
        "p99_ms": round(median("p99_ms"), 1),
        "lost": max(r["lost"] for r in runs),
        "refused": max(r["refused"] for r in runs),
        "loadgen_cpu_percent": round(median("loadgen_cpu_percent")),
        "runs": len(runs),
    }


def passes(summary: dict[str, Any]) -> bool:
    return summary["lost"] == 0 and summary["refused"] == 0 and summary["p99_ms"] < P99_LIMIT_MS


def ladder(server: Server, repeats: int, duration: float) -> dict[str, Any]:
    steps: dict[int, dict[str, Any]] = {}
    best: int | None = None
    for rate in LADDER:
        summary = summarise([run(server, rate, duration) for _ in range(repeats)])
        steps[rate] = summary
        print(f"  {server.name}: {rate}/s -> {summary}", flush=True)
        if not passes(summary):
            break
        best = rate
    return {"best_rate": best, "best": steps[best] if best else None, "at_1000": steps[1_000], "steps": steps}


def report(results: dict[str, Any], meta: dict[str, Any]) -> str:
    baseline = results["bare relay (no persistence)"]
    lines = [
        "# Event channel: agents' events stored and delivered",
        "",
        f"{meta['when']}, {meta['cpus']} cores; server pinned to core 0, load generator to core 1; "
        f"{AGENTS} agents x {SUBSCRIBERS_PER_AGENT} subscribers (the user each agent works for), "
        f"{STEP_BYTES}-byte steps, {meta['duration']} s per step, median of {meta['repeats']} runs. "
        f"A rate passes with nothing lost or refused and p99 < {P99_LIMIT_MS:.0f} ms.",
        "",
        "| server | highest passing rate (events/s) | accepted/s | deliveries/s | vs relay | "
        "p50 / p99 at 1,000/s (ms) | load generator CPU |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, result in results.items():
        best = result["best"] or {}
        ratio = (
            f"{best.get('deliveries_per_second', 0) / baseline['best']['deliveries_per_second']:.2f}x"
            if baseline["best"] and best
            else "-"
        )
        at = result["at_1000"]
        lines.append(
            f"| {name} | {result['best_rate'] or '< 1,000'} | {best.get('accepted_per_second', '-')} | "
            f"{best.get('deliveries_per_second', '-')} | {ratio} | {at['p50_ms']} / {at['p99_ms']} | "
            f"{best.get('loadgen_cpu_percent', at['loadgen_cpu_percent'])} % |"
        )
    lines += ["", "Every step, per server:", ""]
    for name, result in results.items():
        for rate, step in result["steps"].items():
            lines.append(f"- {name}, {rate}/s: {json.dumps(step)}")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="one repeat per step, 3 s steps")
    args = parser.parse_args()
    repeats, duration = (1, 3.0) if args.quick else (3, 5.0)
    results: dict[str, Any] = {}
    database, pg_url = asyncio.run(create_database())
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for make in (
                start_relay,
                lambda: start_ours("ours (SQLite)", f"sqlite:///{Path(tmp) / 'events.db'}"),
                lambda: start_ours("ours (PostgreSQL)", pg_url),
            ):
                server = make()
                try:
                    results[server.name] = ladder(server, repeats, duration)
                finally:
                    server.stop()
    finally:
        asyncio.run(drop_database(database))
    meta = {
        "when": time.strftime("%Y-%m-%d"),
        "cpus": os.cpu_count(),
        "repeats": repeats,
        "duration": duration,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "events.json").write_text(json.dumps({"meta": meta, "results": results}, indent=2) + "\n")
    (RESULTS / "events.md").write_text(report(results, meta))
    print(report(results, meta))


if __name__ == "__main__":
    main()
