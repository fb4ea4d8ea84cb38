"""1000 requests in flight at once against one `flows serve` process: every one is answered (or
refused with 503 and a reason), and the process's memory stays bounded.

The requests are raw publishes with reply subjects, flushed together, so all 1000 are at the
service before the first reply is awaited. Memory is read from /proc (VmRSS, VmHWM: the peak).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path
from typing import Any

import nats
import orjson
import pytest
from nats.aio.msg import Msg

from services.client import FlowsClient
from services.embedded import EmbeddedNats
from tests.processes import ServiceProcess, new_target

pytestmark = pytest.mark.timeout(120)

IN_FLIGHT = 1000
# The peak resident memory may grow by at most this much over the idle service's while the
# 1000 requests are handled (measured: see the README's Guarantees).
MAX_GROWTH_MB = 100


def memory_mb(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM (peak RSS) of a process, in MiB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) / 1024
    return fields


def requests_for(ids: list[str]) -> list[tuple[str, dict[str, Any], set[str]]]:
    """(operation, body, the statuses that count as answered) x IN_FLIGHT, mixed."""
    mix: list[tuple[str, dict[str, Any], set[str]]] = []
    for i in range(IN_FLIGHT):
        flow_id = ids[i % len(ids)]
        mix.append(
            [
                ("cmd.create", {"name": f"load-{i}", "tags": ["load"]}, {"201"}),
                ("cmd.update", {"id": flow_id, "tags": [f"u{i}"]}, {"204"}),
                ("query.read", {"id": flow_id}, {"200"}),
                ("query.filter", {"flows": {"tags": {"all_": ["seed"]}}, "limit": 50}, {"200"}),
                ("query.count", {}, {"200"}),
            ][i % 5]
        )
    return mix


async def test_1000_requests_in_flight_are_all_answered_with_bounded_memory(
    nats_server: EmbeddedNats, tmp_path: Path
) -> None:
    target = new_target(nats_server.url, tmp_path)
    nc = await nats.connect(target.nats_url, allow_reconnect=False)
    try:
        async with ServiceProcess(target, FLOWS_LOG_LEVEL="WARNING") as service:
            await service.start()
            client = FlowsClient(nc, target.prefix)
            seeded = await asyncio.gather(
                *(client.create(f"seed-{i}", tags=["seed"]) for i in range(100))
            )
            ids = [reply.raise_for_status().body["id"] for reply in seeded]
            idle = memory_mb(service.pid)

            requests = requests_for(ids)
            replies: dict[int, Msg] = {}
            all_answered = asyncio.Event()

            async def on_reply(msg: Msg) -> None:
                replies[int(msg.subject.rsplit(".", 1)[1])] = msg
                if len(replies) == len(requests):
                    all_answered.set()

            inbox = nc.new_inbox()
            subscription = await nc.subscribe(f"{inbox}.*", cb=on_reply)
            started = time.monotonic()
            for number, (operation, body, _) in enumerate(requests):
                subject = f"{target.prefix}.{operation}"
                await nc.publish(subject, orjson.dumps(body), reply=f"{inbox}.{number}")
            await nc.flush()
            try:
                async with asyncio.timeout(90):
                    await all_answered.wait()
            except TimeoutError:
                pass
            took = time.monotonic() - started
            await subscription.unsubscribe()
            loaded = memory_mb(service.pid)
            await service.stop()

        missing = sorted(set(range(len(requests))) - set(replies))
        assert not missing, (
            f"{len(missing)} of {len(requests)} requests got no reply within 90 s; "
            f"by subject: {Counter(requests[n][0] for n in missing)}\n{service.log()}"
        )
        statuses: Counter[str] = Counter()
        for number, msg in replies.items():
            headers = msg.headers or {}
            status = headers.get("Flows-Status", "none")
            statuses[f"{requests[number][0]} {status}"] += 1
            if status == "503":
                assert headers.get("Nats-Service-Error"), (number, headers, msg.data)
                continue
            assert status in requests[number][2], (requests[number], status, msg.data[:300])
        growth = loaded["VmHWM"] - idle["VmRSS"]
        print(
            f"\n{IN_FLIGHT} in flight answered in {took:.1f}s; service RSS idle "
            f"{idle['VmRSS']:.0f} MiB, peak {loaded['VmHWM']:.0f} MiB (+{growth:.0f}), "
            f"after {loaded['VmRSS']:.0f} MiB; {dict(statuses)}"
        )
        assert growth < MAX_GROWTH_MB, (idle, loaded)
    finally:
        await nc.close()
