"""Peers benchmark: this server beside the Node servers and a bare Python relay, in one run, on one
raw-protocol load generator.

    python -m benchmarks.peers                 # full run
    python -m benchmarks.peers --quick         # one repeat, short steps, 1,000 joins

Servers, each a separate process pinned to one core (``--server-cpu``, taskset), the load on the
other (``--load-cpus``):
- ``@y/websocket-server`` and ``@hocuspocus/server`` from npm (``benchmarks/peers/package-lock.json``),
  unmodified, default settings, in memory;
- a bare Python WebSocket relay (``benchmarks/relay_server.py``): the ceiling for a Python server;
- ours: ``python -m server`` with tokens, every update stored (group commit) on SQLite, or on
  PostgreSQL with ``--database postgresql``.

The load generator (``benchmarks/peers/loadgen.mjs``, one or more Node processes: ``--procs``) speaks
the raw y-websocket protocol (Hocuspocus' framing for Hocuspocus: the document name before each
message, an auth message first): sync step 1, then hand-encoded Yjs updates that carry their sender,
sequence number and send time, timed on arrival before any decoding. Figures:
- fan-out, per shape (10 rooms x 10 clients, 1 x 100, 100 x 10): the per-room rate climbs a ladder;
  every server gets each step in turn, ``--repeats`` times; a step passes when the median p99 is under
  100 ms and no run lost anything; a server leaves the ladder after two failing steps in a row.
  Reported: the highest passing step's delivered updates/s, and p50/p99 at 10 updates/s per room
  (runs of at least 10 s there);
- joins: 5,000 clients (50 rooms of 100) connect 100 at a time (connect, sync step 1, step 2) on a
  fresh server: joins per second and sync p50/p99; then the server's RSS per idle connection;
- restart (ours, PostgreSQL): a 10,000-update document served to a new client after a restart, and
  to a second client (warm); with ``--restart-crash`` after a SIGKILL each time, the whole document
  still in the update log.
Medians over repeats; the load generator's and the server's CPU are reported with every step.
Results: benchmarks/results/peers.{json,md}.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import random
import re
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import psutil
import websockets
from pycrdt import write_var_uint

from benchmarks.cluster import create_database, drop_database
from benchmarks.fanout import RESULTS, ROOT, Server, free_port, wait_for_port
from server.auth import mint_token

PEERS = Path(__file__).resolve().parent / "peers"
LADDER = [10, 20, 40, 70, 100, 150, 250, 400, 600, 900, 1300, 2000, 3000, 4500, 6750, 9000, 11000, 13500]
SHAPES = {"10x10": (10, 10), "1x100": (1, 100), "100x10": (100, 10)}
SERVER_NAMES = ["y-websocket", "hocuspocus", "relay", "ours"]
NODE_PEERS = ("y-websocket", "hocuspocus")
P99_LIMIT_MS = 100.0
# The step at 10 updates/s per room runs at least this long: its p99 is the target's figure, and in
# 3 s it is the latency of a few dozen updates (99 deliveries each in 1 x 100), which one stall of
# the shared machine decides for whichever server it lands on.
AT_10_SECONDS = 10.0
USERS = 100
BUCKETS_PER_OCTAVE = 32  # loadgen.mjs histogram: bucket = floor(log2(1 + us) * 32)
MARKER = re.compile(rb"~\d+\.\d+\.\d+~")


# -- servers ---------------------------------------------------------------------------------------


@dataclass
class Peer:
    """A server under test and how its clients address a room."""

    name: str
    server: Server
    framing: str  # "yws" or "hocuspocus"
    secret: str | None = None
    workspace: str = ""
    tokens: list[str] = field(default_factory=list)

    def client(self, room: str, user: int) -> dict[str, str]:
        port = self.server.port
        if self.name.startswith("ours"):
            token = self.tokens[user % len(self.tokens)]
            return {"url": f"ws://127.0.0.1:{port}/ws/workspaces/{self.workspace}/{room}?token={token}"}
        if self.framing == "hocuspocus":
            return {"url": f"ws://127.0.0.1:{port}", "doc": f"{self.workspace}-{room}"}
        return {"url": f"ws://127.0.0.1:{port}/{self.workspace}-{room}"}

    def new_workspace(self) -> None:
        """A fresh namespace for rooms; for ours a workspace every benchmark user is a member of."""
        self.workspace = f"b{uuid.uuid4().hex[:8]}"
        if not self.name.startswith("ours"):
            return
        base = f"http://127.0.0.1:{self.server.port}"
        with httpx.Client(base_url=base, timeout=30) as http:
            owner = {"Authorization": f"Bearer {self.tokens[0]}"}
            body = {"id": self.workspace, "name": self.workspace, "visibility": "open"}
            http.post("/workspaces", json=body, headers=owner).raise_for_status()
            for token in self.tokens[1:]:
                auth = {"Authorization": f"Bearer {token}"}
                http.post(f"/workspaces/{self.workspace}/join", headers=auth).raise_for_status()

    def cpu_seconds(self) -> tuple[float, float]:
        """CPU time so far of the server process, and of its child processes (ours: the
        compaction worker and its fork server)."""
        process = psutil.Process(self.server.process.pid)
        times = process.cpu_times()
        children = 0.0
        for member in process.children(recursive=True):
            with contextlib.suppress(psutil.NoSuchProcess):
                child = member.cpu_times()
                children += child.user + child.system
        return times.user + times.system, children


def _spawn(name: str, command: list[str], cpu: str, port: int, env: dict[str, str], cwd: Path) -> Server:
    process = subprocess.Popen(
        ["taskset", "-c", cpu, *command],
        cwd=cwd,
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
    )
    wait_for_port(port, process)
    return Server(name, process, port)


def source_tree(ref: str) -> Path:
    """The project's files at git ``ref``, exported to a temporary directory (``ours@REF``: the same
    server at another commit, for before/after figures in one run)."""
    target = Path(tempfile.mkdtemp(prefix=f"rtc-{ref.replace('/', '-')}-"))
    archive = subprocess.run(["git", "archive", ref], cwd=ROOT, capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)
    return target


def start_peer(name: str, cpu: str, database_url: str, secret: str | None = None, **settings: str) -> Peer:
    """Start one server pinned to ``cpu`` (taskset's list syntax): ``y-websocket``, ``hocuspocus``,
    ``relay``, ``ours`` or ``ours@REF`` (this server at git ``REF``)."""
    port = free_port()
    if name == "y-websocket":
        script = str(PEERS / "node_modules" / "@y" / "websocket-server" / "src" / "server.js")
        env = {"HOST": "127.0.0.1", "PORT": str(port)}
        return Peer(name, _spawn(name, ["node", script], cpu, port, env, PEERS), "yws")
    if name == "hocuspocus":
        env = {"PORT": str(port)}
        return Peer(name, _spawn(name, ["node", "hocuspocus.mjs"], cpu, port, env, PEERS), "hocuspocus")
    if name == "relay":
        command = [sys.executable, "-m", "benchmarks.relay_server", str(port)]
        return Peer(name, _spawn(name, command, cpu, port, {}, ROOT), "yws")
    secret = secret or secrets.token_hex(32)
    env = {
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "DATABASE_URL": database_url,
        "LOG_LEVEL": "WARNING",
        "JWT_SECRET": secret,
        "MESSAGE_QUEUE_SIZE": "100000",
        "MAX_CONNECTIONS": "20000",
        # Every client comes from 127.0.0.1 and writes faster than one person types: the protections
        # against one address or connection taking more than its share are off, as the peers have none.
        "MAX_CONNECTIONS_PER_IP": "0",
        "MAX_CONNECTIONS_PER_USER": "0",
        "RATE_LIMIT_CONNECT_IP": "0",
        "RATE_LIMIT_SYNC_MESSAGES": "0",
        "RATE_LIMIT_SYNC_BYTES": "0",
        "RATE_LIMIT_SYNC_TIME_MS": "0",
        **settings,
    }
    label = "ours (PostgreSQL)" if database_url.startswith("postgresql") else "ours (SQLite)"
    cwd = ROOT
    if "@" in name:
        ref = name.split("@", 1)[1]
        label = f"{label[:-1]}, {ref})"
        cwd = source_tree(ref)
        env["DATABASE_URL"] = database_url.replace("bench.db", f"bench-{ref.replace('/', '-')}.db")
    peer = Peer(label, _spawn(label, [sys.executable, "-m", "server"], cpu, port, env, cwd), "yws", secret)
    peer.tokens = [mint_token(secret, user_id=f"u{n}", ttl=6 * 3600) for n in range(USERS)]
    return peer


# -- load generator --------------------------------------------------------------------------------


class LoadGroup:
    """Node worker processes (``loadgen.mjs``) holding the clients of one run between them."""

    def __init__(
        self,
        peer: Peer,
        specs: list[dict[str, Any]],
        rooms: int,
        per_room: int,
        procs: int,
        cpus: str,
        client: str,
    ):
        self.procs: list[subprocess.Popen[str]] = []
        base = random.randrange(1, 2**20) * 2**16
        for w in range(procs):
            process = subprocess.Popen(
                ["taskset", "-c", cpus, "node", "loadgen.mjs"],
                cwd=PEERS,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            self.procs.append(process)
            config = {
                "framing": peer.framing,
                "client": client,
                "clients": specs[w::procs],
                "rooms": rooms,
                "perRoom": per_room,
                "clientIdBase": base + w * 8192,
            }
            self._write(process, config)
        for process in self.procs:
            self._read(process)

    @staticmethod
    def _write(process: subprocess.Popen[str], message: dict[str, Any]) -> None:
        assert process.stdin is not None
        process.stdin.write(json.dumps(message) + "\n")
        process.stdin.flush()

    @staticmethod
    def _read(process: subprocess.Popen[str]) -> dict[str, Any]:
        assert process.stdout is not None
        line = process.stdout.readline()
        if not line:
            raise RuntimeError(f"load generator exited with {process.wait()}")
        reply: dict[str, Any] = json.loads(line)
        return reply

    def ask(self, message: dict[str, Any]) -> list[dict[str, Any]]:
        for process in self.procs:
            self._write(process, message)
        return [self._read(process) for process in self.procs]

    def close(self) -> None:
        with contextlib.suppress(OSError, RuntimeError, ValueError):
            self.ask({"cmd": "close"})
        for process in self.procs:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()


def percentile_ms(hist: list[int], p: float) -> float | None:
    total = sum(hist)
    if not total:
        return None
    rank = min(total - 1, math.floor(p * total))
    seen = 0
    for bucket, count in enumerate(hist):
        seen += count
        if seen > rank:
            return (2 ** ((bucket + 0.5) / BUCKETS_PER_OCTAVE) - 1) / 1000
    return None


def merged_hist(replies: list[dict[str, Any]], key: str = "hist") -> list[int]:
    return [sum(column) for column in zip(*(r[key] for r in replies), strict=True)]


def fanout_specs(peer: Peer, rooms: int, per_room: int) -> list[dict[str, Any]]:
    return [
        {**peer.client(f"r{r}", index), "room": r, "index": index}
        for r in range(rooms)
        for index in range(per_room)
    ]


QUIET_CPU = 0.05  # share of a core under which the servers together count as idle
SETTLE_SECONDS = 20.0  # longest wait for that before a step


def settle(peers: list[Peer]) -> float:
    """Wait until the servers are idle (together, compaction workers included, under
    ``QUIET_CPU`` of a core over a quarter of a second), at most ``SETTLE_SECONDS``; the seconds
    waited. They share one core: what one still does after its step (ours compacts the documents
    it has just stored) must not run during the next server's step."""
    start = time.monotonic()
    while time.monotonic() - start < SETTLE_SECONDS:
        before = sum(sum(peer.cpu_seconds()) for peer in peers)
        time.sleep(0.25)
        if sum(sum(peer.cpu_seconds()) for peer in peers) - before < QUIET_CPU * 0.25:
            break
    return time.monotonic() - start


def run_step(peer: Peer, group: LoadGroup, rate: int, duration: float, drain: float) -> dict[str, Any]:
    start_us = time.monotonic_ns() // 1000 + 300_000
    cpu_before = peer.cpu_seconds()
    replies = group.ask(
        {
            "cmd": "run",
            "rate": rate,
            "startUs": start_us,
            "durationMs": int(duration * 1000),
            "drainMs": int(drain * 1000),
        }
    )
    cpu_after = peer.cpu_seconds()
    main_cpu, child_cpu = cpu_after[0] - cpu_before[0], cpu_after[1] - cpu_before[1]
    write_seconds = max(r["write_seconds"] for r in replies)
    hist = merged_hist(replies)
    received = sum(r["received"] for r in replies)
    return {
        "sent": sum(r["sent"] for r in replies),
        "received": received,
        "lost": sum(r["lost"] for r in replies),
        "deliveries_per_second": received / write_seconds,
        "p50_ms": percentile_ms(hist, 0.5),
        "p99_ms": percentile_ms(hist, 0.99),
        "loadgen_cpu": max(r["cpu_write_seconds"] for r in replies) / write_seconds,
        # Over the write window and the drain, per delivered update: the server process, and its
        # child processes (compaction).
        "server_cpu_us": main_cpu / max(1, received) * 1e6,
        "worker_cpu_us": child_cpu / max(1, received) * 1e6,
    }


def summarise(rate: int, runs: list[dict[str, Any]]) -> dict[str, Any]:
    def median(key: str) -> float:
        values = [r[key] for r in runs if r[key] is not None]
        return statistics.median(values) if values else float("inf")

    return {
        "rate_per_room": rate,
        "deliveries_per_second": median("deliveries_per_second"),
        "p50_ms": median("p50_ms"),
        "p99_ms": median("p99_ms"),
        "lost": max(r["lost"] for r in runs),
        "loadgen_cpu": max(r["loadgen_cpu"] for r in runs),
        "server_cpu_us": median("server_cpu_us"),
        "worker_cpu_us": median("worker_cpu_us"),
        "runs": len(runs),
    }


def passes(summary: dict[str, Any]) -> bool:
    return summary["p99_ms"] < P99_LIMIT_MS and summary["lost"] == 0


def fanout_shape(peers: list[Peer], shape: str, args: argparse.Namespace) -> dict[str, Any]:
    """Climb the ladder on every server, step by step, servers taking turns within a step."""
    rooms, per_room = SHAPES[shape]
    groups: dict[str, LoadGroup] = {}
    steps: dict[str, list[dict[str, Any]]] = {p.name: [] for p in peers}
    try:
        for peer in peers:
            peer.new_workspace()
            group = LoadGroup(
                peer,
                fanout_specs(peer, rooms, per_room),
                rooms,
                per_room,
                args.procs,
                args.load_cpus,
                args.fanout_client,
            )
            groups[peer.name] = group
            replies = group.ask({"cmd": "connect", "batch": 10})
            failed = sum(r["failed"] for r in replies)
            if failed:
                raise RuntimeError(f"{peer.name}: {failed} clients could not connect: {replies[0]['errors']}")
        alive = list(peers)
        failed: dict[str, int] = {p.name: 0 for p in peers}  # consecutive failing steps
        for rate in args.ladder:
            if not alive:
                break
            runs: dict[str, list[dict[str, Any]]] = {p.name: [] for p in alive}
            for _ in range(args.repeats):
                for peer in alive:
                    settle(peers)
                    duration = max(args.duration, AT_10_SECONDS) if rate == 10 else args.duration
                    runs[peer.name].append(run_step(peer, groups[peer.name], rate, duration, args.drain))
            for peer in list(alive):
                summary = summarise(rate, runs[peer.name])
                steps[peer.name].append(summary)
                print(shape, peer.name, _brief(summary), flush=True)
                # A server leaves the ladder after two failing steps in a row: one can be a stall of
                # this shared machine rather than the server's limit.
                failed[peer.name] = 0 if passes(summary) else failed[peer.name] + 1
                if failed[peer.name] >= 2 or (summary["lost"] and summary["p99_ms"] > 10 * P99_LIMIT_MS):
                    alive.remove(peer)
    finally:
        for group in groups.values():
            group.close()
    return {
        name: {
            "steps": s,
            "at_10_per_room": next((x for x in s if x["rate_per_room"] == 10), None),
            "sustained": max((x for x in s if passes(x)), key=lambda x: x["rate_per_room"], default=None),
        }
        for name, s in steps.items()
    }


def _brief(summary: dict[str, Any]) -> str:
    return (
        f"rate {summary['rate_per_room']}/room: {summary['deliveries_per_second']:,.0f}/s, "
        f"p50 {summary['p50_ms']:.1f} p99 {summary['p99_ms']:.1f} ms, lost {summary['lost']}, "
        f"loadgen {summary['loadgen_cpu']:.0%}"
    )


# -- joins and idle memory -------------------------------------------------------------------------


def join_specs(peer: Peer, clients: int, rooms: int = 50) -> list[dict[str, Any]]:
    """``clients`` spread over ``rooms`` rooms: client j joins room j mod ``rooms``, so every batch
    of 100 reaches every room."""
    return [
        {**peer.client(f"r{j % rooms}", j // rooms), "room": j % rooms, "index": j // rooms}
        for j in range(clients)
    ]


def joins_once(name: str, args: argparse.Namespace, database_url: str) -> dict[str, Any]:
    peer = start_peer(name, args.server_cpu, database_url)
    try:
        peer.new_workspace()
        rooms, per_room = 50, 100
        specs = join_specs(peer, args.joins)
        time.sleep(1)
        rss_before = peer.server.rss()
        group = LoadGroup(peer, specs, rooms, per_room, args.procs, args.load_cpus, args.join_client)
        try:
            cpu_before = sum(peer.cpu_seconds())
            replies = group.ask({"cmd": "connect", "batch": max(1, 100 // args.procs)})
            cpu = sum(peer.cpu_seconds()) - cpu_before
            time.sleep(2)  # let the server finish its handshakes before reading its memory
            rss_after = peer.server.rss()
        finally:
            group.close()
        connected = sum(r["connected"] for r in replies)
        seconds = max(r["seconds"] for r in replies)
        hist = merged_hist(replies)
        opened = merged_hist(replies, "open_hist")
        return {
            "server": peer.name,
            "connected": connected,
            "failed": sum(r["failed"] for r in replies),
            "joins_per_second": connected / seconds,
            "sync_p50_ms": percentile_ms(hist, 0.5),
            "sync_p99_ms": percentile_ms(hist, 0.99),
            "open_p50_ms": percentile_ms(opened, 0.5),
            "open_p99_ms": percentile_ms(opened, 0.99),
            "loadgen_cpu": max(r["cpu_seconds"] for r in replies) / seconds,
            "server_cpu": cpu / seconds,
            "server_cpu_ms_per_join": cpu / max(1, connected) * 1000,
            "rss_before_mb": rss_before / 2**20,
            "rss_after_mb": rss_after / 2**20,
            "kb_per_connection": (rss_after - rss_before) / max(1, connected) / 1024,
        }
    finally:
        peer.server.stop()


def joins(names: list[str], args: argparse.Namespace, database_url: str) -> dict[str, Any]:
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    for _ in range(args.join_repeats):
        for name in names:
            result = joins_once(name, args, database_url)
            print(
                "joins",
                {k: round(v, 2) if isinstance(v, float) else v for k, v in result.items()},
                flush=True,
            )
            runs[name].append(result)
    return {
        results[0]["server"]: {
            key: statistics.median(r[key] for r in results) for key in results[0] if key != "server"
        }
        | {"runs": len(results)}
        for results in runs.values()
    }


# -- restart: a 10,000-update document from PostgreSQL -----------------------------------------------


def encode_insert(client_id: int, clock: int, text: str) -> bytes:
    """The Yjs v1 update ``loadgen.mjs`` writes: one ASCII insert into the root text ``text``,
    after the client's own previous character."""
    data = text.encode()
    head = write_var_uint(1) + write_var_uint(1) + write_var_uint(client_id) + write_var_uint(clock)
    if clock == 0:
        head += bytes((4,)) + write_var_uint(1) + write_var_uint(4) + b"text"
    else:
        head += bytes((0x84,)) + write_var_uint(client_id) + write_var_uint(clock - 1)
    return head + write_var_uint(len(data)) + data + b"\x00"


def sync_update_frame(update: bytes) -> bytes:
    return bytes((0, 2)) + write_var_uint(len(update)) + update


async def _first_state(url: str) -> tuple[float, int]:
    """Seconds from connecting to the sync step 2, and how many markers it holds."""
    started = time.perf_counter()
    async with websockets.connect(url, compression=None, max_size=None) as ws:
        await ws.send(bytes((0, 0, 1, 0)))
        while True:
            frame = await ws.recv()
            if isinstance(frame, bytes) and frame[:2] == b"\x00\x01":
                return time.perf_counter() - started, len(MARKER.findall(frame))


async def _write_document(url: str, updates: int) -> None:
    async with websockets.connect(url, compression=None, max_size=None) as ws:
        await ws.send(bytes((0, 0, 1, 0)))
        clock = 0
        client_id = random.randrange(1, 2**31)
        for seq in range(1, updates + 1):
            text = f"~0.{seq}.{time.monotonic_ns() // 1000}~"
            await ws.send(sync_update_frame(encode_insert(client_id, clock, text)))
            clock += len(text)
            if seq % 500 == 0:
                await asyncio.sleep(0.05)  # paced like a busy editor, not one 10,000-frame burst


async def _count_rows(database_url: str) -> int:
    """Update rows not yet compacted into a snapshot."""
    connection = await asyncpg.connect(database_url)
    try:
        count: int = await connection.fetchval("SELECT count(*) FROM document_updates")
        return count
    finally:
        await connection.close()


async def _wait_logged(database_url: str, updates: int, timeout: float = 60.0) -> None:
    """Wait until ``updates`` rows are stored: in the log, or merged into a snapshot by a
    compaction (``--restart-crash --restart-compact-after N``)."""
    connection = await asyncpg.connect(database_url)
    deadline = time.monotonic() + timeout
    stored = (
        "SELECT (SELECT count(*) FROM document_updates)"
        " + (SELECT coalesce(sum(merged_updates), 0) FROM document_snapshots)"
    )
    try:
        while (rows := await connection.fetchval(stored)) < updates:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{rows} of {updates} updates logged")
            await asyncio.sleep(0.05)
    finally:
        await connection.close()


def restart(args: argparse.Namespace, server: str) -> dict[str, Any]:
    """A ``--restart-updates`` document written to ``server`` (``ours`` or ``ours@REF``) on a fresh
    PostgreSQL database; then, ``--repeats`` times: the server starts again, a first and a second
    client each time their sync step 2."""
    name, database_url = asyncio.run(create_database())
    try:
        compact_after = args.restart_compact_after or (2 * args.restart_updates if args.restart_crash else 0)
        settings = {"COMPACT_AFTER_UPDATES": str(compact_after)} if compact_after else {}
        peer = start_peer(server, args.server_cpu, database_url, **settings)
        secret, workspace = peer.secret, ""
        peer.new_workspace()
        workspace = peer.workspace
        asyncio.run(_write_document(peer.client("big", 1)["url"], args.restart_updates))
        if args.restart_crash:
            # A crash once every accepted update is stored: the log since the last compaction stays.
            asyncio.run(_wait_logged(database_url, args.restart_updates))
            peer.server.kill()
        else:
            peer.server.stop()  # SIGTERM: every accepted update is stored, the loaded documents compacted
        log_rows = asyncio.run(_count_rows(database_url))
        cold: list[float] = []
        warm: list[float] = []
        markers = 0
        for _ in range(args.repeats):
            # The same secret: the restarted server keeps the workspace and its members.
            again = start_peer(server, args.server_cpu, database_url, secret=secret, **settings)
            again.workspace = workspace
            try:
                seconds, markers = asyncio.run(_first_state(again.client("big", 1)["url"]))
                cold.append(seconds)
                warm.append(asyncio.run(_first_state(again.client("big", 2)["url"]))[0])
            finally:
                if args.restart_crash:  # so that every restart finds the whole log again
                    again.server.kill()
                else:
                    again.server.stop()
        return {
            "server": peer.name,
            "updates": args.restart_updates,
            "markers_served": markers,
            "log_rows_at_restart": log_rows,
            "crash": bool(args.restart_crash),
            "cold_ms": statistics.median(cold) * 1000,
            "warm_ms": statistics.median(warm) * 1000,
            "cold_runs_ms": [round(s * 1000, 1) for s in cold],
            "warm_runs_ms": [round(s * 1000, 1) for s in warm],
        }
    finally:
        asyncio.run(drop_database(name))


# -- profile -------------------------------------------------------------------------------------


# Where a sampled main-thread stack is counted: the first category whose test matches (frames are
# "function (file:line)", outermost first).
PROFILE_CATEGORIES: list[tuple[str, Any]] = [
    (
        "waiting for I/O (the event loop idle, and uvloop's own C code)",
        lambda fs: fs[-1].startswith("Runner.run "),
    ),
    (
        "receive: uvicorn and websockets parse frames, queue them",
        lambda fs: _has(fs, "WebSocketsSansIOProtocol.data_received"),
    ),
    (
        # The innermost Python frame is the one calling transport.write: time in the system call.
        "send: system call (transport.write), one per receiver and turn",
        lambda fs: fs[-1].startswith(
            ("FrameWriter.flush", "FrameWriter.write", "WebSocketsSansIOProtocol.send")
        ),
    ),
    (
        "relay: merge a turn's updates (pycrdt merge_updates, before Framed)",
        lambda fs: _has(fs, "merge_updates"),
    ),
    (
        "send: frames built, connection queues, writer tasks, ASGI sends",
        lambda fs: any(
            _has(fs, name) for name in ("Room._relay_pending", "Connection.run_writer", "Connection._write")
        ),
    ),
    (
        "apply: pycrdt apply_update",
        lambda fs: _has(fs, "Doc.apply_update") or _has(fs, "Transaction.__exit__"),
    ),
    ("check: the update read strictly (yjs_format)", lambda fs: any("yjs_format.py" in f for f in fs)),
    (
        "decode, dispatch to the room, token and access on join",
        lambda fs: _has(fs, "RoomManager._read") or _has(fs, "sync_endpoint"),
    ),
    ("compaction: reading rows, writing the snapshot", lambda fs: any("compact" in f.lower() for f in fs)),
    (
        "group commit: SQLAlchemy insert of the buffered updates",
        lambda fs: _has(fs, "UpdateWriter.") or any("sqlalchemy" in f or "aiosqlite" in f for f in fs),
    ),
    ("other (timers, keep-alives, handshakes)", lambda _: True),
]


def _has(frames: list[str], prefix: str) -> bool:
    return any(f.startswith(prefix) for f in frames)


def profile_breakdown(path: Path) -> list[tuple[str, float]]:
    """Shares of the main thread's samples per ``PROFILE_CATEGORIES`` entry (py-spy raw output)."""
    counts = dict.fromkeys((name for name, _ in PROFILE_CATEGORIES), 0)
    total = 0
    for line in path.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        frames = stack.split(";")
        if "MainThread" not in frames[0] or len(frames) < 2:
            continue
        total += int(n)
        for name, test in PROFILE_CATEGORIES:
            if test(frames[1:]):
                counts[name] += int(n)
                break
    return [(name, count / max(1, total)) for name, count in counts.items()]


def _py_spy(pid: int, seconds: float, out: Path) -> subprocess.Popen[bytes]:
    command = [str(Path(sys.executable).with_name("py-spy")), "record", "--pid", str(pid), "--rate", "250"]
    command += ["--idle", "--threads", "--format", "raw", "--duration", str(max(1, round(seconds)))]
    return subprocess.Popen(
        [*command, "--output", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


def profile(spec: str, args: argparse.Namespace, database_url: str) -> None:
    """Hold one shape at one rate on ours (the first ``ours...`` of ``--servers``) while py-spy
    samples the server (``--profile 10x10:400``), or sample ``--joins`` joins (``--profile joins``):
    collapsed stacks, idle time included, to results/profile-<server>-<spec>.txt."""
    RESULTS.mkdir(exist_ok=True)
    server = next((name for name in args.servers.split(",") if name.startswith("ours")), "ours")
    out = RESULTS / f"profile-{server.replace('@', '-')}-{spec.replace(':', '-')}.txt"
    peer = start_peer(server, args.server_cpu, database_url)
    try:
        peer.new_workspace()
        if spec == "joins":
            group = LoadGroup(
                peer, join_specs(peer, args.joins), 50, 100, args.procs, args.load_cpus, args.join_client
            )
            try:
                spy = _py_spy(peer.server.process.pid, args.duration, out)
                time.sleep(1)  # py-spy attaches
                replies = group.ask({"cmd": "connect", "batch": max(1, 100 // args.procs)})
                print(
                    "profile joins", sum(r["connected"] for r in replies), max(r["seconds"] for r in replies)
                )
                spy.wait(120)
            finally:
                group.close()
        else:
            shape, rate = spec.split(":")
            rooms, per_room = SHAPES[shape]
            specs = fanout_specs(peer, rooms, per_room)
            group = LoadGroup(peer, specs, rooms, per_room, args.procs, args.load_cpus, args.fanout_client)
            try:
                group.ask({"cmd": "connect", "batch": 10})
                run_step(peer, group, int(rate), 2.0, args.drain)  # warm up
                spy = _py_spy(peer.server.process.pid, args.duration, out)
                summary = summarise(int(rate), [run_step(peer, group, int(rate), args.duration, args.drain)])
                print("profile", _brief(summary))
                spy.wait(60)
            finally:
                group.close()
    finally:
        peer.server.stop()
    print(f"collapsed stacks: {out}")
    shares = profile_breakdown(out)
    busy = 1 - shares[0][1]
    print(f"main thread busy {busy:.0%} of samples")
    for name, share in shares[1:]:
        print(f"  {share / busy if busy else 0:6.1%} of busy  {name}")


# -- main ------------------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="1 repeat, 2 s steps, 1,000 joins")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--duration", type=float, default=3.0, help="seconds of writing per step")
    parser.add_argument("--drain", type=float, default=3.0, help="seconds to wait for late deliveries")
    parser.add_argument("--servers", default=",".join(SERVER_NAMES), help="comma-separated subset")
    parser.add_argument("--shapes", default=",".join(SHAPES), help="comma-separated subset")
    parser.add_argument("--ladder", default=",".join(map(str, LADDER)), help="updates/s per room")
    parser.add_argument("--database", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--procs", type=int, default=1, help="load generator processes")
    parser.add_argument("--server-cpu", default="0")
    parser.add_argument("--load-cpus", default="1")
    parser.add_argument("--joins", type=int, default=5000)
    parser.add_argument("--join-repeats", type=int, default=3)
    parser.add_argument(
        "--join-client",
        choices=("light", "ws"),
        default="light",
        help="the joins' WebSocket client: loadgen.mjs's own on a bare socket, or the ws package's",
    )
    parser.add_argument(
        "--fanout-client",
        choices=("light", "ws"),
        default="light",
        help="the fan-out clients' WebSocket client (as --join-client)",
    )
    parser.add_argument("--restart-updates", type=int, default=10_000)
    parser.add_argument(
        "--restart-compact-after",
        type=int,
        default=0,
        help="COMPACT_AFTER_UPDATES for the restart case (0: the default), e.g. above --restart-updates to "
        "stop with the whole document in the log",
    )
    parser.add_argument(
        "--restart-crash",
        action="store_true",
        help="kill the server (SIGKILL) once the document's updates are stored, with compaction held off "
        "while they are written (unless --restart-compact-after): the restart finds them all in the log",
    )
    parser.add_argument("--skip", default="", help="comma-separated: fanout, joins, restart")
    parser.add_argument("--output", default="peers", help="results/<output>.{json,md}")
    parser.add_argument(
        "--render", action="store_true", help="only write results/<output>.md again from its .json"
    )
    parser.add_argument(
        "--profile", help="SHAPE:RATE: hold it on ours for --duration s under py-spy, nothing else"
    )
    args = parser.parse_args()
    if args.quick:
        args.repeats, args.duration, args.drain, args.joins, args.join_repeats = 1, 2.0, 2.0, 1000, 1
    args.ladder = [int(x) for x in args.ladder.split(",")]
    return args


def main() -> int:
    args = parse_args()
    if args.render:
        markdown = render(json.loads((RESULTS / f"{args.output}.json").read_text()))
        (RESULTS / f"{args.output}.md").write_text(markdown)
        print(markdown)
        return 0
    names = [n for n in args.servers.split(",") if n]
    skip = set(args.skip.split(","))
    if shutil.which("node") is None or not (PEERS / "node_modules" / "@hocuspocus").is_dir():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=PEERS, check=True)

    data_dir = Path(tempfile.mkdtemp(prefix="rtc-peers-"))
    pg_name = None
    if args.database == "postgresql":
        pg_name, database_url = asyncio.run(create_database())
    else:
        database_url = f"sqlite:///{data_dir / 'bench.db'}"
    if args.profile:
        try:
            profile(args.profile, args, database_url)
        finally:
            shutil.rmtree(data_dir, ignore_errors=True)
            if pg_name is not None:
                asyncio.run(drop_database(pg_name))
        return 0
    report: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0], "node": _node_version()},
        "settings": {
            "repeats": args.repeats,
            "duration_s": args.duration,
            "p99_limit_ms": P99_LIMIT_MS,
            "procs": args.procs,
            "server_cpu": args.server_cpu,
            "load_cpus": args.load_cpus,
            "database": args.database,
        },
        "shapes": {},
    }
    try:
        if "fanout" not in skip:
            peers = [start_peer(name, args.server_cpu, database_url) for name in names]
            try:
                for shape in args.shapes.split(","):
                    report["shapes"][shape] = fanout_shape(peers, shape, args)
            finally:
                for peer in peers:
                    peer.server.stop()
        if "joins" not in skip:
            report["joins"] = joins(names, args, database_url)
        if "restart" not in skip:
            report["restart"] = [restart(args, n) for n in names if n.startswith("ours")]
            print("restart", report["restart"], flush=True)
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
        if pg_name is not None:
            asyncio.run(drop_database(pg_name))

    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{args.output}.json").write_text(json.dumps(report, indent=2))
    markdown = render(report)
    (RESULTS / f"{args.output}.md").write_text(markdown)
    print(markdown)
    return 0


def _node_version() -> str:
    return subprocess.run(["node", "--version"], capture_output=True, text=True, check=False).stdout.strip()


def _best_node(figures: dict[str, float]) -> float:
    return max((v for k, v in figures.items() if k in NODE_PEERS), default=0.0)


def _cpu_table(report: dict[str, Any]) -> list[str]:
    """Server CPU per delivered update at the two highest rates every server was measured at: the
    cost of an update, which a busy shared machine disturbs far less than latency."""
    lines: list[str] = []
    for shape, servers in report["shapes"].items():
        common = set.intersection(*({x["rate_per_room"] for x in d["steps"]} for d in servers.values()))
        for rate in sorted(common)[-2:]:
            if not lines:
                lines += [
                    "",
                    "| shape | updates/s per room | " + " | ".join(servers) + " |",
                    "| --- | --- | " + " | ".join("---" for _ in servers) + " |",
                ]
            cells = []
            for data in servers.values():
                step = next(x for x in data["steps"] if x["rate_per_room"] == rate)
                cells.append(f"{step['server_cpu_us'] + step['worker_cpu_us']:.1f} us")
            lines.append(f"| {shape} | {rate} | " + " | ".join(cells) + " |")
    return lines


def render(report: dict[str, Any]) -> str:
    s = report["settings"]
    m = report["machine"]
    lines = [
        f"Run of {report['date']} ({m['cpus']} CPUs, Python {m['python']}, Node {m['node']}; server on CPU "
        f"{s['server_cpu']}, {s['procs']} load generator process(es) on CPU {s['load_cpus']}; {s['repeats']} "
        f"repeats of {s['duration_s']} s per step (at 10/s per room at least {AT_10_SECONDS:g} s), medians).",
        "",
    ]
    if report["shapes"]:
        lines += [
            "| shape | server | sustained rate / room | delivered updates/s | vs best Node | p50 / p99 there "
            "| p50 / p99 at 10/s per room | load generator CPU | server CPU per delivery, + workers (us) |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
    for shape, servers in report["shapes"].items():
        figures = {
            name: (data["sustained"]["deliveries_per_second"] if data["sustained"] else 0.0)
            for name, data in servers.items()
        }
        best = _best_node(figures)
        for name, data in servers.items():
            sus, low = data["sustained"], data["at_10_per_room"]
            ratio = f"{figures[name] / best:.2f}x" if best else "-"
            if sus:
                per_k = f"{sus['server_cpu_us']:.1f} + {sus['worker_cpu_us']:.1f}"
                there = (
                    f"{sus['rate_per_room']} | {sus['deliveries_per_second']:,.0f} | {ratio} | "
                    f"{sus['p50_ms']:.1f} / {sus['p99_ms']:.1f} ms"
                )
                cpu = f"{sus['loadgen_cpu']:.0%} | {per_k}"
            else:
                there, cpu = "none | - | - | -", "- | -"
            at10 = f"{low['p50_ms']:.1f} / {low['p99_ms']:.1f} ms" if low else "-"
            lines.append(f"| {shape} | {name} | {there} | {at10} | {cpu} |")
    lines += _cpu_table(report)
    if "joins" in report:
        joins_report = report["joins"]
        best_rate = max(
            (v["joins_per_second"] for k, v in joins_report.items() if k in NODE_PEERS), default=0
        )
        lines += [
            "",
            "| server | clients joined | joins/s | vs best Node | sync p50 / p99 | 101 p50 / p99 "
            "| load generator CPU | server CPU (ms per join) | RSS before / after "
            "| RSS per idle connection |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for name, j in joins_report.items():
            ratio = f"{j['joins_per_second'] / best_rate:.2f}x" if best_rate else "-"
            opened = f"{j['open_p50_ms']:.1f} / {j['open_p99_ms']:.1f} ms" if "open_p50_ms" in j else "-"
            lines.append(
                f"| {name} | {j['connected']:.0f} | {j['joins_per_second']:,.0f} | {ratio} | "
                f"{j['sync_p50_ms']:.1f} / {j['sync_p99_ms']:.1f} ms | {opened} | {j['loadgen_cpu']:.0%} | "
                f"{j['server_cpu']:.0%} ({j['server_cpu_ms_per_join']:.2f}) | "
                f"{j['rss_before_mb']:.1f} / {j['rss_after_mb']:.1f} MB | {j['kb_per_connection']:.1f} KB |"
            )
    for r in report.get("restart", []):
        lines += [
            "",
            f"{r.get('server', 'ours')}: a {r['updates']:,}-update document after a "
            f"{'crash (SIGKILL)' if r.get('crash') else 'restart'} (PostgreSQL): "
            f"first client {r['cold_ms']:.1f} ms (runs: {r['cold_runs_ms']}), second client "
            f"{r['warm_ms']:.1f} ms (runs: {r['warm_runs_ms']}); {r['markers_served']:,} of its updates in "
            f"the state served; {r.get('log_rows_at_restart', '?')} rows of its log not compacted "
            "at the restart.",
        ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
