"""Storage benchmark: what churn costs in stored bytes and memory, and what synchronous mode
costs in latency and throughput, measured in one run on this machine.

    python -m benchmarks.storage            # about 6 minutes
    python -m benchmarks.storage --quick

Churn: one real y-websocket client (pycrdt) keeps a 100 KB document and, for ``--churn-seconds``,
inserts 100 KB more and deletes it again, ``--churn-rates`` times a second (0: as fast as the
server takes it). Reported per database (SQLite file; PostgreSQL when reachable at
BENCH_PG_ADMIN_DSN): bytes the client sent, the live document's own encoding
(``Doc.get_update()``, the baseline), stored bytes (snapshot + log) at their peak during the run
and once the idle room has unloaded, and the server's RSS before and at its peak, alone and with
its fork server and compaction worker. Medians over ``--repeats`` runs, each on a
fresh server and database.

Durability modes: the fan-out harness of ``benchmarks.fanout`` (Node load generator, real Yjs
clients) against the default group commit (PERSIST_INTERVAL_MS=100) and synchronous mode
(PERSIST_INTERVAL_MS=0), on SQLite, interleaved run by run; medians of p50/p99 latency and
delivered updates/s, and their ratio. Kill -9: updates a reader had seen that a restart does not
find, in both modes. Results go to benchmarks/results/storage.{json,md}.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import psutil
import websockets
from pycrdt import Doc, Text

from benchmarks.cluster import PG_ADMIN_DSN, create_database, drop_database
from benchmarks.fanout import JS, RESULTS, ROOT, Server, fanout_run, free_port, wait_for_port
from server import protocol
from server.protocol import SyncType

CHUNK = 100_000  # characters inserted and deleted per round
DURABILITY_CASES = [(10, 10, 10), (10, 10, 100), (10, 10, 400), (1, 100, 10), (1, 100, 100), (1, 100, 1000)]


def start_server(name: str, database_url: str, **env: str) -> Server:
    port = free_port()
    full_env = {
        **os.environ,
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "DATABASE_URL": database_url,
        "LOG_LEVEL": "WARNING",
        "MESSAGE_QUEUE_SIZE": "100000",
        "MAX_CONNECTIONS": "20000",
        "ROOM_UNLOAD_GRACE": "1",
        **env,
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "server"], cwd=ROOT, env=full_env, stdout=subprocess.DEVNULL
    )
    wait_for_port(port, process)
    return Server(name, process, port)


def tree_rss(process: psutil.Process) -> int:
    """Resident memory of a process and its descendants (the server, its fork server and its
    compaction worker), in bytes."""
    total = 0
    for member in [process, *process.children(recursive=True)]:
        with contextlib.suppress(psutil.NoSuchProcess):
            total += member.memory_info().rss
    return total


class PeakRss:
    """Samples resident memory every 50 ms in a thread, in bytes: ``peak`` of the server process,
    ``tree_peak`` of the server with its descendants (their shared pages counted in each)."""

    def __init__(self, pid: int) -> None:
        self._process = psutil.Process(pid)
        self.peak = self._process.memory_info().rss
        self.tree_peak = tree_rss(self._process)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(0.05):
            self.peak = max(self.peak, self._process.memory_info().rss)
            self.tree_peak = max(self.tree_peak, tree_rss(self._process))

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()


class StoredBytes:
    """Snapshot and log bytes of every document, read from the server's database."""

    def __init__(self, database_url: str) -> None:
        self.url = database_url
        self.peak = 0

    async def read(self) -> tuple[int, int]:
        snapshot_sql = "SELECT coalesce(sum(length(state)), 0) FROM document_snapshots"
        log_sql = "SELECT coalesce(sum(length(data)), 0), count(*) FROM document_updates"
        if self.url.startswith("sqlite"):
            path = self.url.split("///", 1)[1]

            def query() -> tuple[int, int]:
                with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30) as conn:
                    return conn.execute(snapshot_sql).fetchone()[0], conn.execute(log_sql).fetchone()[0]

            snapshot, log = await asyncio.to_thread(query)
        else:
            conn = await asyncpg.connect(self.url)
            try:
                snapshot = await conn.fetchval(snapshot_sql)
                log = await conn.fetchval(log_sql)
            finally:
                await conn.close()
        self.peak = max(self.peak, snapshot + log)
        return snapshot, log


async def churn_client(url: str, seconds: float, rate: float) -> dict[str, Any]:
    """Keep 100 KB, then insert and delete another 100 KB ``rate`` times a second (0: as fast as
    the server reads) until ``seconds`` have passed."""
    doc = Doc()
    text = doc.get("text", type=Text)
    outgoing: list[bytes] = []
    doc.observe(lambda event: outgoing.append(event.update))
    sent = rounds = 0
    async with websockets.connect(url, max_size=None) as ws:
        replies = asyncio.Queue[None]()

        async def drain() -> None:
            async for frame in ws:  # sync step 1/2, keep-alives; nothing else is relayed to us
                if isinstance(frame, bytes) and frame[:2] == b"\x00\x01":  # sync step 2
                    replies.put_nowait(None)

        reader = asyncio.create_task(drain())
        await ws.send(protocol.sync_step1(doc.get_state()))
        text.insert(0, "k" * CHUNK)  # the content that stays
        started = time.monotonic()
        deadline = started + seconds
        while True:
            for update in outgoing:
                await ws.send(protocol.sync_update(update))
                sent += len(update)
            outgoing.clear()
            if time.monotonic() >= deadline:
                break
            text.insert(len(text) // 2, "x" * CHUNK)
            del text[len(text) // 2 - CHUNK // 2 : len(text) // 2 + CHUNK // 2]
            rounds += 1
            if rate:
                await asyncio.sleep(max(0.0, started + rounds / rate - time.monotonic()))
        # A round trip: the server answers step 1 after it has applied everything sent before.
        await ws.send(protocol.sync_step1(doc.get_state()))
        for _ in range(2):  # the answers to the first step 1 and to this one
            await asyncio.wait_for(replies.get(), timeout=120)
        reader.cancel()
    return {"rounds": rounds, "sent_bytes": sent, "live_bytes": len(doc.get_update()), "text": len(text)}


async def pending_updates(server: Server) -> int:
    async with httpx.AsyncClient() as http:
        body = (await http.get(f"http://127.0.0.1:{server.port}/health/database", timeout=30)).json()
    return int(body.get("pending_updates", 0))


async def churn_once(database_url: str, seconds: float, rate: float) -> dict[str, Any]:
    server = start_server("ours", database_url)
    stored = StoredBytes(database_url)
    try:
        rss_before = server.rss()
        url = f"ws://127.0.0.1:{server.port}/ws/workspaces/churn-{uuid.uuid4().hex[:6]}"
        with PeakRss(server.process.pid) as rss:
            client = asyncio.create_task(churn_client(url, seconds, rate))
            while not client.done():
                await stored.read()
                await asyncio.wait([client], timeout=0.5)
            result = client.result()
            # Idle: the room unloads after ROOM_UNLOAD_GRACE and its log is compacted.
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                snapshot, log = await stored.read()
                if log == 0 and await pending_updates(server) == 0:
                    break
                await asyncio.sleep(0.2)
        return {
            **result,
            "stored_peak_bytes": stored.peak,
            "stored_idle_bytes": snapshot + log,
            "rss_before_mb": round(rss_before / 2**20, 1),
            "rss_peak_mb": round(rss.peak / 2**20, 1),
            "rss_tree_peak_mb": round(rss.tree_peak / 2**20, 1),
        }
    finally:
        server.stop()


def median_row(runs: list[dict[str, Any]]) -> dict[str, Any]:
    keys = [k for k, v in runs[0].items() if isinstance(v, (int, float))]
    row = {k: statistics.median(r[k] for r in runs) for k in keys}
    row["stored_idle_ratio"] = row["stored_idle_bytes"] / row["live_bytes"]
    row["stored_peak_ratio"] = row["stored_peak_bytes"] / row["live_bytes"]
    row["runs"] = len(runs)
    return row


async def churn(args: argparse.Namespace, data_dir: Path) -> dict[str, Any]:
    results: dict[str, Any] = {}
    backends: list[tuple[str, Any]] = [("SQLite", None)]
    try:
        await (await asyncpg.connect(PG_ADMIN_DSN)).close()
        backends.append(("PostgreSQL", True))
    except (OSError, asyncpg.PostgresError) as exc:
        print(f"PostgreSQL unreachable, churn on SQLite only: {exc}", flush=True)
    for rate in args.churn_rates:
        for name, _ in backends:
            runs = []
            for _ in range(args.repeats):
                if name == "SQLite":
                    url = f"sqlite:///{data_dir / f'churn-{uuid.uuid4().hex[:6]}.db'}"
                    runs.append(await churn_once(url, args.churn_seconds, rate))
                else:
                    database, url = await create_database()
                    try:
                        runs.append(await churn_once(url, args.churn_seconds, rate))
                    finally:
                        await drop_database(database)
                print(name, rate, runs[-1], flush=True)
            results[f"{name} at {rate:g}/s" if rate else f"{name}, unpaced"] = median_row(runs)
    return results


async def kill_once(database_url: str, interval: str, rate: float, seconds: float) -> dict[str, int]:
    """One writer sends numbered inserts at ``rate``/s, one reader applies what it is relayed;
    the server is killed (SIGKILL) while the writer is still writing, then restarted on the same
    database. Returns what the reader had seen and how much of it was lost."""
    server = start_server("kill", database_url, PERSIST_INTERVAL_MS=interval)
    url = f"ws://127.0.0.1:{server.port}/ws/workspaces/kill"
    seen = Doc()
    try:
        async with websockets.connect(url, max_size=None) as writer, websockets.connect(url) as reader:

            async def read() -> None:
                async for frame in reader:
                    message = protocol.decode(frame) if isinstance(frame, bytes) else None
                    if message is not None and message.sync_type in (SyncType.STEP2, SyncType.UPDATE):
                        seen.apply_update(message.payload)

            receiving = asyncio.create_task(read())
            doc = Doc()
            text = doc.get("text", type=Text)
            outgoing: list[bytes] = []
            doc.observe(lambda event: outgoing.append(event.update))
            started = time.monotonic()
            sent = 0
            while time.monotonic() - started < seconds:
                text.insert(len(text), f"{sent};")
                sent += 1
                for update in outgoing:
                    await writer.send(protocol.sync_update(update))
                outgoing.clear()
                await asyncio.sleep(max(0.0, started + sent / rate - time.monotonic()))
            server.process.kill()  # mid-stream: no shutdown, no flush
            server.process.wait(10)
            await asyncio.gather(receiving, return_exceptions=True)
    except websockets.ConnectionClosed:
        pass
    seen_markers = set(str(seen.get("text", type=Text)).split(";")) - {""}
    restarted = start_server("restarted", database_url, PERSIST_INTERVAL_MS=interval)
    try:
        async with httpx.AsyncClient() as http:
            response = await http.get(f"http://127.0.0.1:{restarted.port}/workspaces/kill/document/update")
            response.raise_for_status()
        stored = Doc()
        stored.apply_update(response.content)
        stored_markers = set(str(stored.get("text", type=Text)).split(";")) - {""}
    finally:
        restarted.stop()
    return {"sent": sent, "seen": len(seen_markers), "lost": len(seen_markers - stored_markers)}


async def kill_loss(args: argparse.Namespace, data_dir: Path) -> dict[str, Any]:
    modes = {"group commit (100 ms)": "100", "synchronous (0)": "0"}
    runs: dict[str, list[dict[str, int]]] = {mode: [] for mode in modes}
    for _ in range(args.repeats):
        for mode, interval in modes.items():
            url = f"sqlite:///{data_dir / f'kill-{uuid.uuid4().hex[:6]}.db'}"
            runs[mode].append(await kill_once(url, interval, rate=500, seconds=3))
            print(mode, runs[mode][-1], flush=True)
    return {
        mode: {key: statistics.median(r[key] for r in results) for key in ("sent", "seen", "lost")}
        | {"max_lost": max(r["lost"] for r in results), "runs": len(results)}
        for mode, results in runs.items()
    }


def durability(args: argparse.Namespace, data_dir: Path) -> list[dict[str, Any]]:
    modes = {"group commit (100 ms)": "100", "synchronous (0)": "0"}
    rows = []
    for rooms, clients, rate in DURABILITY_CASES:
        runs: dict[str, list[dict[str, Any]]] = {mode: [] for mode in modes}
        for _ in range(args.repeats):  # interleaved, so drift on a noisy machine hits both
            for mode, interval in modes.items():
                url = f"sqlite:///{data_dir / f'mode-{uuid.uuid4().hex[:6]}.db'}"
                server = start_server(mode, url, PERSIST_INTERVAL_MS=interval)
                try:
                    runs[mode].append(fanout_run(server, rooms, clients, rate, args.duration))
                finally:
                    server.stop()
        row = {"shape": f"{rooms}x{clients}", "rate_per_room": rate}
        for mode, results in runs.items():
            row[mode] = {
                "p50_ms": statistics.median(r["p50_ms"] for r in results),
                "p99_ms": statistics.median(r["p99_ms"] for r in results),
                "deliveries_per_second": statistics.median(r["deliveries_per_second"] for r in results),
                "lost": max(r["lost"] for r in results),
            }
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="one repeat, short runs")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--churn-seconds", type=float, default=30.0)
    parser.add_argument(
        "--churn-rates",
        type=lambda value: [float(x) for x in value.split(",")],
        default=[20.0, 0.0],
        help="insert-and-delete rounds per second, comma-separated (0: as fast as the server reads)",
    )
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per fan-out run")
    parser.add_argument("--skip-churn", action="store_true")
    parser.add_argument("--skip-durability", action="store_true")
    parser.add_argument("--skip-kill", action="store_true")
    parser.add_argument(
        "--update", action="store_true", help="keep the parts of results/storage.json this run skips"
    )
    args = parser.parse_args()
    if args.quick:
        args.repeats, args.churn_seconds, args.duration = 1, 10.0, 2.0
    node_ready = shutil.which("node") is not None and (JS / "node_modules" / "yjs").is_dir()
    if not args.skip_durability and not node_ready:
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=JS, check=True)
    data_dir = Path(tempfile.mkdtemp(prefix="rtc-bench-storage-"))
    previous = RESULTS / "storage.json"
    report: dict[str, Any] = json.loads(previous.read_text()) if args.update and previous.exists() else {}
    report |= {
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
        "settings": {
            "repeats": args.repeats,
            "churn_seconds": args.churn_seconds,
            "duration_s": args.duration,
        },
    }
    try:
        if not args.skip_churn:
            report["churn"] = asyncio.run(churn(args, data_dir))
        if not args.skip_durability:
            report["durability"] = durability(args, data_dir)
        if not args.skip_kill:
            report["kill"] = asyncio.run(kill_loss(args, data_dir))
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "storage.json").write_text(json.dumps(report, indent=2))
    markdown = render(report)
    (RESULTS / "storage.md").write_text(markdown)
    print(markdown)
    return 0


def _mb(value: float) -> str:
    return f"{value / 2**20:,.1f} MB" if value >= 2**20 else f"{value / 1024:,.1f} KB"


def render(report: dict[str, Any]) -> str:
    settings = report["settings"]
    lines = [
        f"Run of {report['date']} ({report['machine']['cpus']} CPUs, Python {report['machine']['python']}; "
        f"medians of {settings['repeats']} runs).",
        "",
    ]
    if "churn" in report:
        lines += [
            "Churn: a 100 KB document, plus 100 KB inserted and deleted again for "
            f"{settings['churn_seconds']:g} s by one client, at a fixed number of rounds per second or as "
            "fast as the server reads; default settings (compaction after 500 rows or 4 MiB, and when the "
            "idle room unloads).",
            "",
            "| database, rounds/s | rounds | sent | live document (baseline) | stored at peak "
            "| stored when idle | idle / live | server RSS before / peak | with its worker processes |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for name, row in report["churn"].items():
            lines.append(
                f"| {name} | {row['rounds']:,.0f} | {_mb(row['sent_bytes'])} | {_mb(row['live_bytes'])} "
                f"| {_mb(row['stored_peak_bytes'])} ({row['stored_peak_ratio']:.1f}x) "
                f"| {_mb(row['stored_idle_bytes'])} | {row['stored_idle_ratio']:.2f}x "
                f"| {row['rss_before_mb']} / {row['rss_peak_mb']} MB | {row['rss_tree_peak_mb']} MB |"
            )
        lines.append("")
    if "durability" in report:
        lines += [
            f"Durability modes on SQLite: fan-out runs of {settings['duration_s']:g} s, interleaved.",
            "",
            "| shape | updates/s per room | mode | p50 / p99 | delivered updates/s | lost |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        ratios = []
        for row in report["durability"]:
            modes = [k for k in row if k not in ("shape", "rate_per_room")]
            for mode in modes:
                m = row[mode]
                lines.append(
                    f"| {row['shape']} | {row['rate_per_room']} | {mode} "
                    f"| {m['p50_ms']:.1f} / {m['p99_ms']:.1f} ms "
                    f"| {m['deliveries_per_second']:,.0f} | {m['lost']} |"
                )
            base, sync = row[modes[0]], row[modes[1]]
            if base["p99_ms"] and base["deliveries_per_second"]:
                ratios.append(
                    f"{row['shape']} at {row['rate_per_room']}/s: "
                    f"p50 {sync['p50_ms'] / base['p50_ms']:.2f}x, "
                    f"p99 {sync['p99_ms'] / base['p99_ms']:.2f}x, "
                    f"deliveries {sync['deliveries_per_second'] / base['deliveries_per_second']:.2f}x"
                )
        lines += ["", "Synchronous / group commit: " + "; ".join(ratios), ""]
    if "kill" in report:
        lines += [
            "kill -9 while a client writes 500 small updates/s on SQLite (3 s), another client reading: "
            "updates the reader had seen that were not stored after the restart.",
            "",
            "| mode | sent | seen by the reader | lost (median) | lost (worst run) |",
            "| --- | --- | --- | --- | --- |",
        ]
        for mode, k in report["kill"].items():
            lines.append(
                f"| {mode} | {k['sent']:,.0f} | {k['seen']:,.0f} | {k['lost']:,.0f} | {k['max_lost']:,.0f} |"
            )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
