"""Property-based fuzzing of everything a client can send, against a real server.

- Sync frames: valid y-websocket headers around mutated Yjs updates, state vectors and awareness
  updates, with counts that declare far more than their bytes hold. Each frame is handled (the
  connection answers a following sync step 1) or refused with 4400; no other close, no loop held
  over 50 ms, another client keeps syncing, and the stored document loads the same after a restart.
- The event channel: random and hostile JSON (deep, huge, invalid, extreme numbers and dates) and
  binary frames. Each gets a strict-JSON reply and the stream stays open.

Counts tried: ``SYNC_EXAMPLES`` frames and ``EVENT_EXAMPLES`` event messages per run.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pycrdt import Array, Doc, Map, Text, write_var_uint
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from server.close_codes import CLOSE_4400_BAD_MESSAGE
from server.config import Settings
from server.events.models import CLIENT_TYPES
from tests.support.damage import mutated
from tests.support.threaded import ThreadedServer, server_thread

SYNC_EXAMPLES = 300
EVENT_EXAMPLES = 300
LOOP_BUDGET = 0.050  # seconds of the server loop's CPU one frame or message may take
HUGE_COUNTS = [0x7F, 0x3FFF, 0x0FFFFFFF, 0xFFFFFFFF, 2**53 - 1]
FUZZ = settings(
    max_examples=SYNC_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    derandomize=True,
)

# -- sync frames ----------------------------------------------------------------------------------


@st.composite
def updates(draw: st.DrawFn) -> bytes:
    """A valid Yjs update of a small random document."""
    doc = Doc(client_id=draw(st.integers(1, 2**32 - 1)))
    for kind, value in draw(
        st.lists(
            st.tuples(st.sampled_from(["text", "map", "array"]), st.text(max_size=12)), min_size=1, max_size=4
        )
    ):
        if kind == "text":
            doc.get("text", type=Text).insert(0, value)
        elif kind == "map":
            doc.get("map", type=Map)[value or "k"] = draw(
                st.integers(-(2**53), 2**53) | st.text(max_size=8) | st.booleans()
            )
        else:
            doc.get("array", type=Array).append(value)
    return doc.get_update()


def state_vectors() -> st.SearchStrategy[bytes]:
    entry = st.tuples(st.integers(0, 2**60), st.integers(0, 2**40))
    honest = st.lists(entry, max_size=4).map(
        lambda entries: (
            write_var_uint(len(entries)) + b"".join(write_var_uint(c) + write_var_uint(k) for c, k in entries)
        )
    )
    lying = st.tuples(st.sampled_from(HUGE_COUNTS), st.binary(max_size=6)).map(
        lambda pair: write_var_uint(pair[0]) + pair[1]
    )
    return honest | lying


def awareness_updates() -> st.SearchStrategy[bytes]:
    state = st.sampled_from([b"{}", b"null", b'{"user":{"name":"fuzz"}}', b"[1]", b"{x", b"\xff"])
    entry = st.tuples(st.integers(0, 2**53), st.integers(0, 2**32), state)
    return st.lists(entry, max_size=3).map(
        lambda entries: (
            write_var_uint(len(entries))
            + b"".join(
                write_var_uint(c) + write_var_uint(k) + write_var_uint(len(s)) + s for c, k, s in entries
            )
        )
    )


def framed(kind: bytes, payload: bytes) -> bytes:
    return kind + write_var_uint(len(payload)) + payload


sync_frames = st.one_of(
    mutated(updates(), HUGE_COUNTS).map(lambda p: framed(b"\x00\x02", p)),
    mutated(updates(), HUGE_COUNTS).map(lambda p: framed(b"\x00\x01", p)),
    state_vectors().map(lambda p: framed(b"\x00\x00", p)),
    awareness_updates().map(lambda p: framed(b"\x01", p)),
    mutated(updates(), HUGE_COUNTS),  # a frame whose own header is broken
)


def round_trip(ws: ClientConnection) -> None:
    """Sync step 1 of an empty document; returns once sync step 2 arrives."""
    ws.send(b"\x00\x00\x01\x00")
    while True:
        frame = ws.recv(timeout=10)
        if isinstance(frame, bytes) and frame[:2] == b"\x00\x01":
            return


@pytest.fixture
def fuzz_settings(make_settings: Callable[..., Settings]) -> Settings:
    # Hundreds of frames a second from one connection: rate limits (tested in tests/protection)
    # would answer some of them with rate_limited instead of the reply each case checks.
    return make_settings(
        persist_interval_ms=5,
        rate_limit_sync_messages=0,
        rate_limit_sync_bytes=0,
        rate_limit_sync_time_ms=0,
        rate_limit_event_messages=0,
        rate_limit_event_bytes=0,
    )


@pytest.fixture
def sync_server(fuzz_settings: Settings) -> Iterator[ThreadedServer]:
    with server_thread(fuzz_settings) as server:
        yield server


def test_fuzzed_sync_frames_harm_nothing(sync_server: ThreadedServer, fuzz_settings: Settings) -> None:
    room = f"fuzz-{uuid.uuid4().hex[:8]}"
    url = sync_server.doc_url(room)
    marker = Doc()
    marker.get("watch", type=Text).insert(0, "the watcher's text")
    with connect(url, max_size=None) as watcher:
        watcher.send(framed(b"\x00\x02", marker.get_update()))
        round_trip(watcher)
        with connect(url, max_size=None) as warm_up:  # first-use costs are not the frame's
            warm_up.send(b"\x00\x02\x01\xff")
            with pytest.raises(ConnectionClosed):
                round_trip(warm_up)

        @FUZZ
        @given(frame=sync_frames)
        def handled(frame: bytes) -> None:
            sync_server.watch.reset()
            with connect(url, max_size=None) as ws:
                ws.send(frame)
                try:
                    round_trip(ws)
                except ConnectionClosed:
                    assert ws.close_code == CLOSE_4400_BAD_MESSAGE.code, (ws.close_code, ws.close_reason)
                    assert ws.close_reason
            assert sync_server.watch.longest < LOOP_BUDGET, f"loop held {sync_server.watch.longest:.3f} s"
            round_trip(watcher)  # the other client is still served

        handled()
        expected = stored_state(sync_server, room)
    assert "the watcher's text" in expected[1]
    # The stored document loads the same after a restart.
    with server_thread(fuzz_settings) as restarted:
        assert stored_state(restarted, room) == expected


def stored_state(server: ThreadedServer, room: str) -> tuple[bytes, str]:
    """The room's state vector and its "watch" text, as a fresh client sees them."""
    doc = Doc()
    with connect(server.doc_url(room), max_size=None) as ws:
        ws.send(b"\x00\x00\x01\x00")
        while True:
            frame = ws.recv(timeout=10)
            if isinstance(frame, bytes) and frame[:2] == b"\x00\x01":
                length_end = 2
                while frame[length_end] & 0x80:
                    length_end += 1
                doc.apply_update(frame[length_end + 1 :])
                break
    server.call(server.app.state.services.writer.flush())
    return doc.get_state(), str(doc.get("watch", type=Text))


# -- the event channel ----------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
extreme_numbers = st.sampled_from(
    ["1e400", "-1e400", "NaN", "Infinity", "-0", "1" * 5000, "9223372036854775808", "-9223372036854775809"]
)
extreme_dates = st.sampled_from(
    [
        "9999-12-31T23:59:59-23:59",
        "0001-01-01T00:00:00+23:59",
        "2024-02-30T00:00:00Z",
        "2024-01-01T24:00:00Z",
        "+10000-01-01T00:00:00Z",
        "2024-01-01T12:00:00.1234567890123Z",
        "1e10",
        "",
    ]
)
FIELDS = ["agent_id", "workspace_id", "task", "user_id", "status", "progress", "current_step", "result"]


@st.composite
def event_messages(draw: st.DrawFn) -> str | bytes:
    shape = draw(st.sampled_from(["message", "raw number", "raw date", "deep", "huge", "binary", "text"]))
    request = {"request_id": "fuzz"}
    if shape == "binary":
        return draw(st.binary(max_size=64))
    if shape == "text":
        return draw(st.text(max_size=64))
    if shape == "deep":
        depth = draw(st.integers(100, 200_000))
        return "[" * depth + "]" * depth
    message_type = draw(st.sampled_from([*CLIENT_TYPES, "bogus", ""]))
    data = draw(st.fixed_dictionaries({}, optional={name: json_values for name in FIELDS}))
    if shape == "huge":
        data["task"] = "x" * draw(st.integers(20_000, 400_000))
    body = json.dumps({"type": message_type, "data": data, **request}, allow_nan=True)
    if shape == "raw number":
        return (
            body[:-1]
            + f',"data":{{"progress":{draw(extreme_numbers)},"execution_time":{draw(extreme_numbers)}}}}}'
        )
    if shape == "raw date":
        return body[:-1] + f',"data":{{"agent_id":"a","timestamp":{json.dumps(draw(extreme_dates))}}}}}'
    return body


def strict_json(text: str) -> Any:
    def refuse(name: str) -> Any:
        raise ValueError(f"{name} is not JSON")

    return json.loads(text, parse_constant=refuse)


def test_fuzzed_event_messages_get_replies_and_the_stream_stays_open(sync_server: ThreadedServer) -> None:
    with connect(f"{sync_server.ws_url}/ws", max_size=None) as ws:
        assert strict_json(ws.recv(timeout=10))["type"] == "welcome"
        pings = iter(range(10**9))
        for warm_up in (  # first-use costs are not the messages'
            '{"type": "agent_execution_start", "data": {"agent_id": "warm-up", "workspace_id": "w"}}',
            '{"type": "agent_execution_complete", "data": {"agent_id": "warm-up"}}',
            '{"type": "join_workspace", "data": {"workspace_id": "w"}}',
            "not json",
        ):
            ws.send(warm_up)
            strict_json(ws.recv(timeout=10))

        @settings(FUZZ, max_examples=EVENT_EXAMPLES)
        @given(message=event_messages())
        def answered(message: str | bytes) -> None:
            sync_server.watch.reset()
            ws.send(message)
            marker = f"ping-{next(pings)}"
            ws.send(json.dumps({"type": "ping", "data": {}, "request_id": marker}))
            replies = []
            while True:
                reply = strict_json(ws.recv(timeout=10))  # every reply is strict JSON
                replies.append(reply)
                if reply.get("request_id") == marker:
                    assert reply["type"] == "pong"
                    break
            assert {r["type"] for r in replies if "id" not in r} <= {"ack", "error", "pong"}
            assert all(r["data"]["code"] != "internal_error" for r in replies if r["type"] == "error")
            assert sync_server.watch.longest < LOOP_BUDGET, f"loop held {sync_server.watch.longest:.3f} s"

        answered()
