"""The tamper-evidence chain: the writer links every event to the message before it on its
flow's subject, and verify's walk of the log (LogAudit) names every way of breaking it."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
from datetime import UTC, datetime, timedelta

import orjson
import pytest

from events.chain import digest, link
from events.contract.commands import CreateFlow, DeleteFlow, DeleteFlows, UpdateFlow
from events.contract.subjects import Subjects
from events.log import StoredMessage
from events.memory_log import InMemoryLog
from events.model import decode_event, encode_event
from events.writer import FlowWriter
from projections.verify.log_walk import LogAudit
from projections.verify.report import VerifyReport, render_report

SUBJECTS = Subjects("t")


def make_writer(log: InMemoryLog) -> FlowWriter:
    ticks = itertools.count()
    start = datetime(2026, 1, 1, tzinfo=UTC)
    return FlowWriter(log, SUBJECTS, clock=lambda: start + timedelta(seconds=next(ticks)))


async def create(writer: FlowWriter, name: str) -> str:
    outcome = await writer.execute(CreateFlow(name=name, tags=[], labels=None))
    flow_id: str = outcome.body["id"]
    return flow_id


async def a_log() -> tuple[InMemoryLog, dict[str, str]]:
    """Three flows: one updated twice then deleted, one updated, one bulk-deleted."""
    log = InMemoryLog()
    writer = make_writer(log)
    ids = {name: await create(writer, name) for name in ("a", "b", "c")}
    await writer.execute(UpdateFlow(id=ids["a"], tags=["x"]))
    await writer.execute(UpdateFlow(id=ids["b"]), "touch-b")
    await writer.execute(UpdateFlow(id=ids["a"], tags=[]))
    await writer.execute(DeleteFlow(id=ids["a"]))
    await writer.execute(DeleteFlows(flow_ids=(ids["c"],)))
    return log, ids


def on_flow(log: InMemoryLog, flow_id: str) -> list[StoredMessage]:
    return [m for m in log.messages if m.subject == SUBJECTS.event(flow_id)]


def walk(messages: list[StoredMessage], last: int | None = None) -> LogAudit:
    audit = LogAudit(SUBJECTS, "T")
    audit.feed(messages)
    audit.finish(last if last is not None else messages[-1].position)
    return audit


def named(audit: LogAudit) -> list[tuple[str, int | None, str | None, str | None]]:
    return [(f.kind, f.position, f.flow_id, f.event_type) for f in audit.findings]


class TestTheWriterLinks:
    async def test_every_event_links_to_the_message_before_it_on_its_subject(self) -> None:
        log, ids = await a_log()
        for flow_id in ids.values():
            trail = on_flow(log, flow_id)
            assert decode_event(trail[0].data, trail[0].position).event.prev is None
            for before, after in itertools.pairwise(trail):
                assert decode_event(after.data, after.position).event.prev == digest(before.data)
        assert all(
            orjson.loads(m.data)["schema"] == 2
            for m in log.messages
            if SUBJECTS.flow_id_of(m.subject)
        )

    async def test_concurrent_updates_still_form_one_unbroken_chain(self) -> None:
        log = InMemoryLog()
        writers = [make_writer(log) for _ in range(4)]  # as if four service instances
        flow_id = await create(writers[0], "busy")
        updates = [UpdateFlow(id=flow_id, tags=[f"{n}"]) for n in range(10)]
        await asyncio.gather(*(w.execute(update) for update in updates for w in writers))
        trail = on_flow(log, flow_id)
        assert len(trail) == 41
        assert walk(log.messages).findings == []


class TestTheWalk:
    async def test_an_untouched_log_has_no_findings(self) -> None:
        log, _ = await a_log()
        audit = walk(log.messages)
        assert audit.findings == []
        assert (audit.flows, audit.events) == (3, 8)
        assert audit.messages == len(log.messages)

    async def test_a_removed_event_is_a_gap_and_breaks_the_next_link(self) -> None:
        log, ids = await a_log()
        trail = on_flow(log, ids["a"])
        removed, following = trail[1], trail[2]
        audit = walk([m for m in log.messages if m is not removed])
        assert named(audit) == [
            ("missing-sequence", removed.position, None, None),
            ("chain-broken", following.position, ids["a"], "FlowUpdated"),
        ]
        assert f"missing position(s) {removed.position} lie between" in audit.findings[1].problem

    async def test_a_removed_last_message_is_a_gap_at_the_end(self) -> None:
        log, _ = await a_log()
        audit = walk(log.messages[:-1], last=log.messages[-1].position)
        assert named(audit) == [("missing-sequence", log.messages[-1].position, None, None)]

    async def test_a_stored_event_altered_in_place_breaks_the_next_link(self) -> None:
        log, ids = await a_log()
        trail = on_flow(log, ids["a"])
        target = trail[1]
        raw = orjson.loads(target.data)
        raw["data"]["tags"] = ["forged"]
        forged = dataclasses.replace(target, data=orjson.dumps(raw))
        audit = walk([forged if m is target else m for m in log.messages])
        assert named(audit) == [("chain-broken", trail[2].position, ids["a"], "FlowUpdated")]
        assert f"previous message (position {target.position})" in audit.findings[0].problem

    async def test_a_re_published_copy_is_a_duplicate_with_a_wrong_link(self) -> None:
        log, ids = await a_log()
        original = on_flow(log, ids["b"])[1]
        copy = StoredMessage(original.subject, original.data, len(log.messages) + 1)
        audit = walk([*log.messages, copy])
        assert named(audit) == [
            ("duplicate-event", copy.position, ids["b"], "FlowUpdated"),
            ("chain-broken", copy.position, ids["b"], "FlowUpdated"),
        ]

    async def test_an_event_stripped_of_its_link_after_the_chain_began_is_named(self) -> None:
        log, ids = await a_log()
        target = on_flow(log, ids["b"])[1]
        raw = orjson.loads(target.data)
        del raw["schema"], raw["prev"]
        stripped = dataclasses.replace(target, data=orjson.dumps(raw))
        audit = walk([stripped if m is target else m for m in log.messages])
        assert named(audit) == [("chain-broken", target.position, ids["b"], "FlowUpdated")]
        assert "without a chain link" in audit.findings[0].problem

    async def test_histories_that_make_no_sense_are_named(self) -> None:
        log, ids = await a_log()
        first_of_a = on_flow(log, ids["a"])[0]
        audit = walk([m for m in log.messages if m is not first_of_a])
        # The creation is gone: the flow starts with an update, whose link points at nothing.
        assert [f.kind for f in audit.findings] == [
            "missing-sequence", "continuity", "chain-broken",
        ]  # fmt: skip
        assert "its FlowCreated is missing" in audit.findings[1].problem

    async def test_an_event_after_the_flows_deletion_is_named(self) -> None:
        log, ids = await a_log()
        deleted = on_flow(log, ids["a"])[-1]
        raw = orjson.loads(on_flow(log, ids["a"])[1].data)
        raw.update(id="33333333-3333-4333-8333-333333333333", prev=digest(deleted.data))
        late = StoredMessage(deleted.subject, orjson.dumps(raw), len(log.messages) + 1)
        audit = walk([*log.messages, late])
        assert named(audit) == [("continuity", late.position, ids["a"], "FlowUpdated")]
        assert "after the flow's FlowDeleted" in audit.findings[0].problem

    async def test_a_malformed_message_is_named_and_still_chained_over(self) -> None:
        log, ids = await a_log()
        subject = SUBJECTS.event(ids["b"])
        poison = StoredMessage(subject, b"{oops", len(log.messages) + 1)
        template = decode_event(on_flow(log, ids["b"])[1].data, 0).event
        # The writer links the next event to whatever its subject holds last: the poison.
        after = dataclasses.replace(template, id="44444444-4444-4444-8444-444444444444")
        next_event = StoredMessage(
            subject, encode_event(link(after, poison.data)), poison.position + 1
        )
        audit = walk([*log.messages, poison, next_event])
        assert named(audit) == [("malformed", poison.position, ids["b"], None)]


@pytest.mark.parametrize("ok", [True, False])
async def test_the_report_names_each_problem_and_what_to_do(ok: bool) -> None:
    log, ids = await a_log()
    messages = log.messages if ok else log.messages[1:]
    audit = walk(messages, last=log.messages[-1].position)
    report = VerifyReport("T", findings=audit.findings, events=audit.events, elapsed_s=1.0)
    text = render_report(report)
    if ok:
        assert text.startswith("flows verify: OK.")
        return
    assert text.startswith("flows verify: FAILED with 3 problems")
    assert "1. [missing-sequence] position 1\n" in text
    assert f"[continuity] position 3, flow {ids['b']}, FlowCreated" not in text
    assert "to do: as for 1. above" in text
