"""``/metrics``: the Prometheus text format, parsed with prometheus_client's own parser; names
that follow Prometheus conventions; and values that move when the service does the thing each
metric counts. Metrics are process-wide, so each assertion compares a scrape before and after."""

from __future__ import annotations

import re
from collections.abc import Callable

import httpx
import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from server import metrics, persistence
from server.config import Settings
from tests.support.auth import client
from tests.support.events import event_client
from tests.support.server import run_server
from tests.support.wait import wait_until
from tests.support.yclient import yclient
from tests.unit.test_writer import FakeDocuments, FakeStore, InstantSleep, writer_for

Scrape = dict[tuple[str, tuple[tuple[str, str], ...]], float]

EXPECTED_FAMILIES = {
    "collab_websocket_connections": "gauge",
    "collab_websocket_connections_opened": "counter",
    "collab_websocket_connections_closed": "counter",
    "collab_messages": "counter",
    "collab_message_bytes": "counter",
    "collab_agent_executions": "counter",
    "collab_rooms_loaded": "gauge",
    "collab_users_online": "gauge",
    "collab_pending_updates": "gauge",
    "collab_errors": "counter",
    "collab_rate_limited": "counter",
    "collab_redis_errors": "counter",
    "collab_database_errors": "counter",
    "collab_http_request_duration_seconds": "histogram",
    "collab_fanout_latency_seconds": "histogram",
    "collab_group_commit_batch_updates": "histogram",
    "collab_group_commit_delay_seconds": "histogram",
    "collab_compactions": "counter",
    "collab_event_replay_events": "histogram",
}


async def scrape(http: httpx.AsyncClient) -> tuple[Scrape, dict[str, str]]:
    """Every sample of ``/metrics`` by (name, labels), and each family's type."""
    response = await http.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=")
    samples: Scrape = {}
    types: dict[str, str] = {}
    for family in text_string_to_metric_families(response.text):
        types[family.name] = family.type
        for sample in family.samples:
            samples[key(sample)] = sample.value
    return samples, types


def key(sample: Sample) -> tuple[str, tuple[tuple[str, str], ...]]:
    return sample.name, tuple(sorted(sample.labels.items()))


def value(samples: Scrape, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_names_follow_prometheus_conventions() -> None:
    families = [m for m in vars(metrics).values() if hasattr(m, "_type") and hasattr(m, "_name")]
    assert {f._name for f in families} == set(EXPECTED_FAMILIES)  # every metric defined once, here
    for family in families:
        name = family._name
        assert re.fullmatch(r"collab_[a-z][a-z0-9_]*", name), name
        if family._type == "counter":
            assert not name.endswith("_total")  # the client adds _total to the sample
        if "duration" in name or "latency" in name or "delay" in name:
            assert name.endswith("_seconds"), name


async def test_metrics_parse_and_count_what_the_service_does(
    make_settings: Callable[..., Settings], workspace: str
) -> None:
    settings = make_settings(compact_after_updates=2)
    async with run_server(settings) as server, client(server.http_url) as http:
        before, _ = await scrape(http)
        metrics.rate_limited("connections_per_ip", "websocket")
        async with yclient(server.doc_url(workspace)) as alice, yclient(server.doc_url(workspace)) as bob:
            for word in ("one ", "two ", "three "):
                alice.text().insert(len(alice.text()), word)
            await wait_until(lambda: str(bob.text()) == "one two three ", timeout=10)
            async with event_client(f"{server.ws_url}/ws?last_event_id=0") as events:
                reply = await events.command("subscribe_agent", {"agent_id": "agent-m"})
                assert reply["type"] == "ack"
                await events.command(
                    "agent_execution_start", {"agent_id": "agent-m", "task": "count", "status": "running"}
                )
                assert (await events.command("no_such_type"))["type"] == "error"
                assert (await http.get("/workspaces/no-such-workspace")).status_code == 404

                async def compacted() -> bool:
                    now, _ = await scrape(http)
                    return value(now, "collab_compactions_total", result="ok") > value(
                        before, "collab_compactions_total", result="ok"
                    )

                await wait_until(compacted, timeout=10)
                during, types = await scrape(http)

    for name, kind in EXPECTED_FAMILIES.items():
        assert types.get(name) == kind, (name, types.get(name))

    def grew(name: str, **labels: str) -> float:
        return value(during, name, **labels) - value(before, name, **labels)

    assert value(during, "collab_websocket_connections", endpoint="sync") == 2
    assert value(during, "collab_websocket_connections", endpoint="/ws") == 1
    assert grew("collab_websocket_connections_opened_total", endpoint="sync") == 2
    assert value(during, "collab_rooms_loaded") == 1
    assert value(during, "collab_users_online") >= 1
    assert grew("collab_messages_total", direction="in", kind="sync_update") >= 1
    assert grew("collab_messages_total", direction="out", kind="sync_update") >= 1
    assert grew("collab_messages_total", direction="in", kind="event") >= 3
    assert grew("collab_message_bytes_total", direction="in") > 0
    assert grew("collab_agent_executions_total", status="running") == 1
    assert grew("collab_errors_total", transport="events", code="unknown_type") == 1
    assert grew("collab_errors_total", transport="rest", code="unknown_workspace") == 1
    assert grew("collab_rate_limited_total", limit="connections_per_ip", transport="websocket") == 1
    assert grew("collab_fanout_latency_seconds_count") >= 1
    assert grew("collab_group_commit_batch_updates_count") >= 1
    assert grew("collab_group_commit_batch_updates_sum") >= 3
    assert grew("collab_group_commit_delay_seconds_count") >= 1
    assert grew("collab_event_replay_events_count") == 1
    route = {"method": "GET", "route": "/workspaces/{workspace_id}", "status": "404"}
    assert grew("collab_http_request_duration_seconds_count", **route) == 1


async def test_redis_failures_are_counted(make_settings: Callable[..., Settings]) -> None:
    async with (
        run_server(make_settings(redis_url="redis://127.0.0.1:1/0")) as server,
        client(server.http_url) as http,
    ):
        samples, _ = await scrape(http)
        assert value(samples, "collab_redis_errors_total") >= 1


@pytest.fixture
def instant_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """The writer's retry backoff returns at once (see tests/unit/test_writer.py)."""
    monkeypatch.setattr(persistence, "asyncio", InstantSleep())


@pytest.mark.usefixtures("instant_retries")
async def test_storage_failures_batches_and_lag_are_counted() -> None:
    def sample(name: str, **labels: str) -> float:
        return REGISTRY.get_sample_value(name, labels) or 0.0

    failures_before = sample("collab_database_errors_total", operation="store_updates")
    batches_before = sample("collab_group_commit_batch_updates_count")
    updates_before = sample("collab_group_commit_batch_updates_sum")
    documents = FakeDocuments(failures=3)
    async with writer_for(FakeStore(documents)) as writer:
        assert writer.lag == 0
        for n in range(4):
            writer.append(1, f"update-{n}".encode())
        assert writer.lag > 0  # waiting since the first append
        await writer.flush()
        assert writer.lag == 0
    assert sample("collab_database_errors_total", operation="store_updates") - failures_before == 3
    assert sample("collab_group_commit_batch_updates_count") - batches_before == 1
    assert sample("collab_group_commit_batch_updates_sum") - updates_before == 4
