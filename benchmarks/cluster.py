"""Cross-instance fan-out: one writer per room on instance A, its readers on instance B, against
the same rooms served by A alone, measured in the same run on the same two instances.

    python -m benchmarks.cluster            # about 3 minutes
    python -m benchmarks.cluster --quick

Both instances share a fresh PostgreSQL database (created and dropped here) and Redis (under a
key prefix of their own, deleted afterwards): PostgreSQL and Redis on 127.0.0.1, as in the tests
(override with BENCH_PG_ADMIN_DSN / BENCH_REDIS_URL). Reported per shape and rate: median p50 and
p99 delivery latency over the repeats, same-instance and cross-instance, and their ratio. Results go
to benchmarks/results/cluster.{json,md}.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from typing import Any

import asyncpg
import redis

from benchmarks.fanout import RESULTS, ROOT, Server, fanout_run, free_port, wait_for_port

PG_ADMIN_DSN = os.environ.get("BENCH_PG_ADMIN_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
CASES = [(10, 10, 10), (10, 10, 100), (1, 100, 10), (1, 100, 100)]  # rooms, clients, updates/s per room


def start_instance(name: str, database_url: str, prefix: str) -> Server:
    port = free_port()
    env = {
        **os.environ,
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "DATABASE_URL": database_url,
        "REDIS_URL": REDIS_URL,
        "REDIS_PREFIX": prefix,
        "LOG_LEVEL": "WARNING",
        "MESSAGE_QUEUE_SIZE": "100000",
        "MAX_CONNECTIONS": "20000",
    }
    process = subprocess.Popen([sys.executable, "-m", "server"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL)
    wait_for_port(port, process)
    return Server(name, process, port)


def run(
    writer: Server, readers: Server, rooms: int, clients: int, rate: int, duration: float
) -> dict[str, Any]:
    return fanout_run(readers, rooms, clients, rate, duration, writerBase=writer.base, writers=1)


def median_of(runs: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "p50_ms": statistics.median(r["p50_ms"] for r in runs),
        "p99_ms": statistics.median(r["p99_ms"] for r in runs),
        "lost": max(r["lost"] for r in runs),
        "diverged": max(r["diverged"] for r in runs),
    }


async def create_database() -> tuple[str, str]:
    name = f"rtc_bench_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(PG_ADMIN_DSN)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    return name, f"{PG_ADMIN_DSN.rsplit('/', 1)[0]}/{name}"


async def drop_database(name: str) -> None:
    admin = await asyncpg.connect(PG_ADMIN_DSN)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="one repeat, 2 s per case")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--duration", type=float, default=3.0)
    args = parser.parse_args()
    if args.quick:
        args.repeats, args.duration = 1, 2.0
    name, database_url = asyncio.run(create_database())
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    a = b = None
    results = []
    try:
        a = start_instance("A", database_url, prefix)
        b = start_instance("B", database_url, prefix)
        for rooms, clients, rate in CASES:
            same, cross = [], []
            for _ in range(args.repeats):  # interleaved, so drift on a noisy machine hits both
                same.append(run(a, a, rooms, clients, rate, args.duration))
                cross.append(run(a, b, rooms, clients, rate, args.duration))
            row = {
                "shape": f"{rooms}x{clients}",
                "rate_per_room": rate,
                "same_instance": median_of(same),
                "cross_instance": median_of(cross),
            }
            print(json.dumps(row), flush=True)
            results.append(row)
    finally:
        for server in (a, b):
            if server is not None:
                server.stop()
        asyncio.run(drop_database(name))
        client = redis.Redis.from_url(REDIS_URL)
        keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()

    report = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "repeats": args.repeats,
        "duration_s": args.duration,
        "cases": results,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "cluster.json").write_text(json.dumps(report, indent=2))
    markdown = render(report)
    (RESULTS / "cluster.md").write_text(markdown)
    print(markdown)
    return 0


def render(report: dict[str, Any]) -> str:
    lines = [
        f"Run of {report['date']}: two instances on one PostgreSQL and one Redis; one writer per room on A, "
        f"readers on A (same instance) or on B (cross-instance); medians of {report['repeats']} runs of "
        f"{report['duration_s']} s.",
        "",
        "| shape | updates/s per room | same instance p50 / p99 | cross-instance p50 / p99 "
        "| p99 ratio | lost |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for row in report["cases"]:
        same, cross = row["same_instance"], row["cross_instance"]
        ratio = cross["p99_ms"] / same["p99_ms"] if same["p99_ms"] else float("nan")
        lines.append(
            f"| {row['shape']} | {row['rate_per_room']} | {same['p50_ms']:.1f} / {same['p99_ms']:.1f} ms "
            f"| {cross['p50_ms']:.1f} / {cross['p99_ms']:.1f} ms | {ratio:.2f}x "
            f"| {same['lost'] + cross['lost']} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
