"""Fan-out benchmark: this server (persisting to SQLite) against pycrdt-websocket's own ASGI server
(in memory), measured in the same run on the same machine.

    python -m benchmarks.fanout            # full run (about 15 minutes)
    python -m benchmarks.fanout --quick    # one repeat per step, shorter steps

For each shape (rooms x clients) the per-room update rate climbs a ladder; at each step both servers
get the same load from the same Node load generator (lean yjs clients). A step passes when the median
over repeats has p99 latency < 100 ms, nothing lost and every room converged. Reported: the highest
passing rate and its delivered updates per second, latency at 10 updates/s per room, and resident
memory per idle connection at 5,000 connections. Results go to benchmarks/results/latest.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
JS = HERE / "js"
RESULTS = HERE / "results"
LADDER = [10, 20, 40, 70, 100, 150, 250, 400, 600, 900, 1300, 2000, 3000]
SHAPES = [(10, 10), (1, 100)]
P99_LIMIT_MS = 100.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, process: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"port {port} did not open")


@dataclass
class Server:
    name: str
    process: subprocess.Popen[bytes]
    port: int

    @property
    def base(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws/workspaces"

    def rss(self) -> int:
        return psutil.Process(self.process.pid).memory_info().rss

    def kill(self) -> None:
        """SIGKILL: a crash, nothing stored or compacted on the way out."""
        self.process.kill()
        self.process.wait(30)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()


def start_ours(data_dir: Path) -> Server:
    port = free_port()
    env = {
        **os.environ,
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "DATABASE_URL": f"sqlite:///{data_dir / f'bench-{uuid.uuid4().hex[:6]}.db'}",
        "LOG_LEVEL": "WARNING",
        "MESSAGE_QUEUE_SIZE": "100000",
        "MAX_CONNECTIONS": "20000",
    }
    process = subprocess.Popen([sys.executable, "-m", "server"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL)
    wait_for_port(port, process)
    return Server("ours (SQLite)", process, port)


def start_baseline() -> Server:
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "benchmarks.baseline_server:app",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--ws",
            "websockets-sansio",
            "--log-level",
            "warning",
        ],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
    )
    wait_for_port(port, process)
    return Server("pycrdt-websocket", process, port)


def loadgen(options: dict[str, Any], timeout: float = 300) -> dict[str, Any]:
    result = subprocess.run(
        ["node", str(JS / "loadgen.mjs"), json.dumps(options)],
        cwd=JS,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if result.returncode != 0:
        raise RuntimeError(f"load generator failed: {result.stderr[-2000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def fanout_run(
    server: Server, rooms: int, clients: int, rate: int, duration: float, **extra: Any
) -> dict[str, Any]:
    """One load-generator run; ``extra`` adds options (``writerBase``, ``writers``)."""
    return loadgen(
        {
            "mode": "fanout",
            "base": server.base,
            "rooms": rooms,
            "clients": clients,
            "rate": rate,
            "durationMs": int(duration * 1000),
            "drainMs": 5000,
            "prefix": f"b{uuid.uuid4().hex[:8]}",
            **extra,
        }
    )


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "p50_ms": statistics.median(r["p50_ms"] for r in runs),
        "p99_ms": statistics.median(r["p99_ms"] for r in runs),
        "deliveries_per_second": statistics.median(r["deliveries_per_second"] for r in runs),
        "lost": statistics.median(r["lost"] for r in runs),
        "diverged": max(r["diverged"] for r in runs),
        "runs": len(runs),
    }


def passes(summary: dict[str, Any]) -> bool:
    return summary["p99_ms"] < P99_LIMIT_MS and summary["lost"] == 0 and summary["diverged"] == 0


def idle_memory(server: Server, connections: int) -> dict[str, Any]:
    before = server.rss()
    process = subprocess.Popen(
        [
            "node",
            str(JS / "loadgen.mjs"),
            json.dumps(
                {
                    "mode": "idle",
                    "base": server.base,
                    "connections": connections,
                    "roomSize": 100,
                    "prefix": f"idle{uuid.uuid4().hex[:6]}",
                }
            ),
        ],
        cwd=JS,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None and process.stdin is not None
    ready = json.loads(process.stdout.readline())
    time.sleep(2)  # let the server finish its handshakes before reading its memory
    after = server.rss()
    process.stdin.write("done\n")
    process.stdin.flush()
    process.wait(120)
    return {
        "connections": ready["ready"],
        "rss_before_mb": round(before / 2**20, 1),
        "rss_after_mb": round(after / 2**20, 1),
        "kb_per_connection": round((after - before) / ready["ready"] / 1024, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="one repeat, 2 s steps")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--duration", type=float, default=3.0, help="seconds of writing per step")
    parser.add_argument("--connections", type=int, default=5000, help="idle connections for the memory test")
    parser.add_argument("--skip-memory", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.repeats, args.duration = 1, 2.0
    if shutil.which("node") is None or not (JS / "node_modules" / "yjs").is_dir():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=JS, check=True)

    data_dir = Path(tempfile.mkdtemp(prefix="rtc-bench-"))
    report: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
        "settings": {"repeats": args.repeats, "duration_s": args.duration, "p99_limit_ms": P99_LIMIT_MS},
        "shapes": {},
    }
    try:
        if not args.skip_memory:
            report["memory"] = {}
            for start in (start_baseline, lambda: start_ours(data_dir)):
                server = start()
                try:
                    report["memory"][server.name] = idle_memory(server, args.connections)
                    print(server.name, report["memory"][server.name], flush=True)
                finally:
                    server.stop()

        servers = [start_baseline(), start_ours(data_dir)]
        try:
            for rooms, clients in SHAPES:
                shape = f"{rooms}x{clients}"
                steps: dict[str, list[dict[str, Any]]] = {s.name: [] for s in servers}
                alive = {s.name for s in servers}
                for rate in LADDER:
                    if not alive:
                        break
                    for server in servers:
                        if server.name not in alive:
                            continue
                        runs = [
                            fanout_run(server, rooms, clients, rate, args.duration)
                            for _ in range(args.repeats)
                        ]
                        summary = {"rate_per_room": rate, **summarise(runs)}
                        steps[server.name].append(summary)
                        print(shape, server.name, summary, flush=True)
                        if not passes(summary):
                            alive.discard(server.name)
                report["shapes"][shape] = {
                    name: {
                        "steps": s,
                        "at_10_per_room": s[0],
                        "sustained": max(
                            (x for x in s if passes(x)), key=lambda x: x["rate_per_room"], default=None
                        ),
                    }
                    for name, s in steps.items()
                }
        finally:
            for server in servers:
                server.stop()
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)

    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "latest.json").write_text(json.dumps(report, indent=2))
    markdown = render(report)
    (RESULTS / "latest.md").write_text(markdown)
    print(markdown)
    return 0


def render(report: dict[str, Any]) -> str:
    lines = [
        f"Run of {report['date']} ({report['machine']['cpus']} CPUs, Python {report['machine']['python']}; "
        f"{report['settings']['repeats']} repeats of {report['settings']['duration_s']} s per step, "
        "medians).",
        "",
    ]
    lines += [
        "| shape | server | sustained rate / room | delivered updates/s | p50 / p99 at that rate "
        "| p50 / p99 at 10/s per room |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    ratios = []
    for shape, servers in report["shapes"].items():
        figures = {}
        for name, data in servers.items():
            s, low = data["sustained"], data["at_10_per_room"]
            figures[name] = s["deliveries_per_second"] if s else 0
            sustained = (
                (
                    f"{s['rate_per_room']} | {s['deliveries_per_second']:,.0f} | "
                    f"{s['p50_ms']:.1f} / {s['p99_ms']:.1f} ms"
                )
                if s
                else "none | - | -"
            )
            lines.append(f"| {shape} | {name} | {sustained} | {low['p50_ms']:.1f} / {low['p99_ms']:.1f} ms |")
        names = list(figures)
        if len(names) == 2 and figures[names[0]]:
            ratios.append(f"{shape}: {figures[names[1]] / figures[names[0]]:.2f}x")
    lines += ["", "Sustained deliveries, ours / baseline: " + ", ".join(ratios)]
    if "memory" in report:
        lines += [
            "",
            "| server | idle connections | RSS before | RSS after | per connection |",
            "| --- | --- | --- | --- | --- |",
        ]
        for name, m in report["memory"].items():
            lines.append(
                f"| {name} | {m['connections']} | {m['rss_before_mb']} MB | {m['rss_after_mb']} MB "
                f"| {m['kb_per_connection']} KB |"
            )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
