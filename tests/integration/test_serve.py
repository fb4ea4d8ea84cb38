"""`flows serve` with the default NATS URL and nothing answering there: it runs its own
nats-server (JetStream on, data in the data dir) and serves on it.

The real default is 127.0.0.1:4222, which this machine's shared NATS owns; the test gives the
service a default-like (not explicitly configured) URL on a free port instead.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import nats
import nats.errors
import orjson

from services.embedded import free_port, nats_answers
from services.nats_flush import flush_all
from services.serve import serve
from services.settings import Settings


async def test_serve_runs_an_embedded_nats_server_when_nothing_answers(tmp_path: Path) -> None:
    url = f"nats://127.0.0.1:{free_port()}"
    settings = Settings(nats_url=url, data_dir=tmp_path / "data")  # not explicit: the default
    assert not settings.nats_url_explicit
    stop = asyncio.Event()
    served = asyncio.create_task(serve(settings, stop))
    deadline = time.monotonic() + 20
    while not nats_answers(url):
        assert not served.done(), served
        assert time.monotonic() < deadline, "no embedded nats-server came up"
        await asyncio.sleep(0.05)
    nc = await nats.connect(url)
    try:
        while True:
            try:
                reply = await nc.request("flows.cmd.create", b'{"name": "embedded"}', timeout=5)
                break
            except nats.errors.NoRespondersError:
                assert time.monotonic() < deadline, "the service never subscribed"
                await flush_all(nc)
        assert reply.headers is not None and reply.headers["Flows-Status"] == "201"
        flow_id = orjson.loads(reply.data)["id"]
        history = await nc.request("flows.audit.history", orjson.dumps({"id": flow_id}), timeout=5)
        assert [event["type"] for event in orjson.loads(history.data)] == ["FlowCreated"]
    finally:
        await nc.close()
        stop.set()
    assert await asyncio.wait_for(served, 30) == 0
    assert not nats_answers(url), "the embedded nats-server outlived the service"
    assert (tmp_path / "data" / "nats" / "jetstream").is_dir()  # JetStream data in the data dir
    assert (tmp_path / "data" / "flows.db").is_file()


async def test_serve_refuses_an_explicit_url_where_nothing_answers(tmp_path: Path) -> None:
    url = f"nats://127.0.0.1:{free_port()}"
    settings = Settings(
        nats_url=url, nats_url_explicit=True, data_dir=tmp_path / "data", startup_timeout_s=0.5
    )
    assert await asyncio.wait_for(serve(settings, asyncio.Event()), 10) == 3
    assert not nats_answers(url)
