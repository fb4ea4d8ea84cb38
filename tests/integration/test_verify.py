"""`flows verify` against a real nats-server and a real read model: it passes on a healthy log
(also while the service keeps writing) and fails, naming the event, when a message is deleted
from the stream, an event is re-published altered, a poison message is parked, or the read
model disagrees with the log."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import io
from typing import Any

import orjson
from nats.aio.client import Client as NatsClient
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from events.contract.subjects import Subjects
from projections.verify.report import Finding, VerifyReport
from services.client import FlowsClient
from services.settings import Settings
from services.verify_tool import run_verify, verify
from tests.integration.conftest import catch_up, running
from tests.processes import Target, run_flows


async def some_history(client: FlowsClient) -> dict[str, str]:
    """Flows with creates, updates, deletes, a bulk delete and command ids; name -> id."""
    ids = {}
    for name in ("alpha", "beta", "gamma", "delta", "epsilon"):
        reply = await client.create(name, tags=["t"], labels={"n": name})
        ids[name] = reply.body["id"]
    for tags in (["a"], ["a", "b"], ["c"]):
        await client.update(ids["alpha"], tags=tags)
    await client.update(ids["beta"], tags=None)
    await client.delete(ids["gamma"])
    await client.request("cmd.bulk_delete", {"flows": {"id": {"any_": [ids["delta"]]}}})
    await client.create("gamma", tags=["reborn"])
    return ids


async def verified(settings: Settings) -> tuple[int, str, VerifyReport]:
    out = io.StringIO()
    code = await verify(settings, out, io.StringIO())
    report = await run_verify(settings, io.StringIO())
    return code, out.getvalue(), report


def kinds(report: VerifyReport) -> list[str]:
    return [finding.kind for finding in report.findings]


def found(report: VerifyReport, kind: str) -> list[Finding]:
    return [finding for finding in report.findings if finding.kind == kind]


async def alpha_events(nc: NatsClient, settings: Settings, flow_id: str) -> list[dict[str, Any]]:
    client = FlowsClient(nc, settings.subject_prefix)
    reply = await client.history(flow_id)
    events: list[dict[str, Any]] = reply.body
    return events


async def test_a_healthy_log_passes(service: Settings, nc: NatsClient) -> None:
    await some_history(FlowsClient(nc, service.subject_prefix))
    await catch_up(nc, service)
    code, text_report, report = await verified(service)
    assert code == 0, text_report
    assert text_report.startswith("flows verify: OK."), text_report
    assert report.events == 12  # 6 creates, 4 updates, 2 deletes
    assert report.flows == 6
    assert report.checkpoint == report.last_position > 0


async def test_it_passes_while_the_service_keeps_writing(
    settings: Settings, nc: NatsClient
) -> None:
    async with running(settings, nc):
        client = FlowsClient(nc, settings.subject_prefix)
        ids = await some_history(client)
        stop = asyncio.Event()

        async def keep_writing() -> int:
            written = 0
            while not stop.is_set():
                await client.update(ids["alpha"], tags=[f"tag-{written}"])
                await client.create(f"busy-{written}")
                written += 1
            return written

        writer = asyncio.create_task(keep_writing())
        try:
            reports = [await run_verify(settings, io.StringIO()) for _ in range(3)]
        finally:
            stop.set()
            written = await writer
    assert written > 0
    for report in reports:
        assert report.ok, report.findings
    # It compared the model at a moment when the log had moved on (the projector was moving).
    assert reports[-1].checkpoint > reports[0].checkpoint


async def test_a_message_deleted_from_the_stream_is_named(
    settings: Settings, nc: NatsClient
) -> None:
    async with running(settings, nc):
        ids = await some_history(FlowsClient(nc, settings.subject_prefix))
        history = await alpha_events(nc, settings, ids["alpha"])
        removed, following = history[2], history[3]  # the second of alpha's updates, and the next
        assert await nc.jetstream().delete_msg(settings.stream, removed["position"])

    code, text_report, report = await verified(settings)
    assert code == 1
    gap = found(report, "missing-sequence")
    assert [f.position for f in gap] == [removed["position"]], text_report
    broken = found(report, "chain-broken")
    assert [(f.position, f.flow_id, f.event_type) for f in broken] == [
        (following["position"], ids["alpha"], "FlowUpdated")
    ], text_report
    assert f"missing position(s) {removed['position']} lie between" in broken[0].problem
    assert f"position {following['position']}, flow {ids['alpha']}, FlowUpdated" in text_report

    # The real command line says the same, with exit code 1.
    result = await run_flows(
        Target(settings.nats_url, settings.subject_prefix, settings.stream, settings.data_dir),
        "verify",
    )
    assert result.returncode == 1, result
    assert f"position {removed['position']} is missing from stream" in result.stdout, result


async def test_an_event_re_published_altered_is_named(settings: Settings, nc: NatsClient) -> None:
    async with running(settings, nc):
        ids = await some_history(FlowsClient(nc, settings.subject_prefix))
        original = (await alpha_events(nc, settings, ids["alpha"]))[1]
        stored = await nc.jetstream().get_msg(settings.stream, original["position"])
        altered = orjson.loads(stored.data or b"")
        altered["data"]["tags"] = ["tampered"]
        ack = await nc.jetstream().publish(stored.subject or "", orjson.dumps(altered))

    code, text_report, report = await verified(settings)
    assert code == 1
    named = {(f.kind, f.position, f.flow_id, f.event_type) for f in report.findings}
    assert named == {
        ("duplicate-event", ack.seq, ids["alpha"], "FlowUpdated"),
        ("chain-broken", ack.seq, ids["alpha"], "FlowUpdated"),
    }, text_report
    assert f"already recorded at position {original['position']}" in text_report


async def test_a_parked_poison_message_fails_verify(settings: Settings, nc: NatsClient) -> None:
    async with running(settings, nc):
        ids = await some_history(FlowsClient(nc, settings.subject_prefix))
        ack = await nc.jetstream().publish(
            f"{settings.subject_prefix}.events.{ids['beta']}", b'{"type": "FlowExploded"}'
        )
    code, text_report, report = await verified(settings)
    assert code == 1
    poison = found(report, "malformed")
    assert [(f.position, f.flow_id) for f in poison] == [(ack.seq, ids["beta"])], text_report
    assert "unknown event type 'FlowExploded'" in poison[0].problem
    # The live model parked it and the replay parked it alike: no model difference.
    assert "model-differs" not in kinds(report)


async def test_garbage_on_a_name_or_reply_subject_is_named(
    settings: Settings, nc: NatsClient
) -> None:
    """A reply a client once directed onto the log (issue 11), or anything else that is not a
    name claim or stored reply on those subjects: verify names each one by position."""
    subjects = Subjects(settings.subject_prefix)
    async with running(settings, nc):
        await some_history(FlowsClient(nc, settings.subject_prefix))
        on_name = await nc.jetstream().publish(subjects.name("alpha"), b'{"detail":"x"}')
        on_reply = await nc.jetstream().publish(subjects.reply("some-id"), b"\xff")
    code, text_report, report = await verified(settings)
    assert code == 1
    bad = found(report, "malformed-record")
    assert [f.position for f in bad] == [on_name.seq, on_reply.seq], text_report
    assert "not a name claim" in bad[0].problem
    assert "not a stored reply" in bad[1].problem
    assert kinds(report) == ["malformed-record", "malformed-record"], text_report


async def test_a_read_model_that_disagrees_with_the_log_is_named(
    settings: Settings, nc: NatsClient
) -> None:
    async with running(settings, nc):
        ids = await some_history(FlowsClient(nc, settings.subject_prefix))
    engine = create_async_engine(settings.resolved_database_url)
    try:
        async with engine.begin() as conn:
            await conn.execute(
                text("UPDATE flow SET name = 'renamed' WHERE id = :id"), {"id": ids["beta"]}
            )
    finally:
        await engine.dispose()
    code, text_report, report = await verified(settings)
    assert code == 1
    differs = found(report, "model-differs")
    assert [f.flow_id for f in differs] == [ids["beta"]], text_report
    assert "name: live 'renamed', replay 'beta'" in differs[0].problem


async def test_a_kept_count_that_disagrees_with_the_log_is_named(
    settings: Settings, nc: NatsClient
) -> None:
    async with running(settings, nc):
        await some_history(FlowsClient(nc, settings.subject_prefix))
    engine = create_async_engine(settings.resolved_database_url)
    try:
        async with engine.begin() as conn:
            # alpha ends tagged "c"; beta's tags were cleared; "t" is on epsilon only.
            await conn.execute(text("UPDATE flow_tag_count SET flows = flows + 5 WHERE tag = 'c'"))
            await conn.execute(text("UPDATE flow_count SET flows = flows - 1"))
    finally:
        await engine.dispose()
    code, text_report, report = await verified(settings)
    assert code == 1
    assert kinds(report) == ["count-differs", "count-differs"], text_report
    total, tag = (finding.problem for finding in report.findings)
    assert total == "flow_count keeps 3 flows; the log has 4 flows alive", text_report
    assert tag == "flow_tag_count keeps 6 flows with tag 'c'; the log has 1 flows alive with it"
    assert "[count-differs]" in text_report


async def test_an_unreachable_log_exits_3(settings: Settings) -> None:
    unreachable = dataclasses.replace(settings, nats_url="nats://127.0.0.1:1")
    err = io.StringIO()
    with contextlib.redirect_stderr(io.StringIO()):
        assert await verify(unreachable, io.StringIO(), err) == 3
    assert "flows verify: cannot read the event log" in err.getvalue()
