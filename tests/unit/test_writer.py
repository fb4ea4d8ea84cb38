"""The write side against the in-memory log: decisions, guards, name markers, stored replies."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import pytest

from events.chain import digest
from events.contract.commands import CreateFlow, DeleteFlow, DeleteFlows, UpdateFlow
from events.contract.errors import ConcurrencyConflict, FlowNotFound
from events.contract.subjects import Subjects
from events.log import AppendMessage, StoredMessage, WrongExpectedPosition
from events.memory_log import InMemoryLog
from events.model import decode_event
from events.records import NameMarker, StoredReply
from events.writer import CommandResult, FlowWriter

SUBJECTS = Subjects("t")
UNKNOWN = "00000000-0000-4000-8000-000000000000"


def make_writer(log: InMemoryLog) -> FlowWriter:
    ticks = itertools.count()
    start = datetime(2026, 1, 1, tzinfo=UTC)
    return FlowWriter(log, SUBJECTS, clock=lambda: start + timedelta(seconds=next(ticks)))


def events_of(log: InMemoryLog) -> list[dict[str, object]]:
    return [
        decode_event(m.data, m.position).as_json()
        for m in log.messages
        if SUBJECTS.flow_id_of(m.subject)
    ]


async def created(writer: FlowWriter, name: str, **kwargs: object) -> CommandResult:
    command = CreateFlow(name=name, **kwargs)  # type: ignore[arg-type]
    return await writer.execute(command)


class TestCreate:
    async def test_a_new_name_appends_the_event_and_its_name_marker_atomically(self) -> None:
        log = InMemoryLog()
        outcome = await created(make_writer(log), "my-flow", tags=["a"], labels={"env": "dev"})
        assert outcome.status == 201
        assert outcome.body["name"] == "my-flow"
        assert outcome.body["created"] == outcome.body["updated"] == "2026-01-01T00:00:00Z"
        assert [m.subject for m in log.messages] == [
            SUBJECTS.event(outcome.body["id"]),
            SUBJECTS.name("my-flow"),
        ]
        assert outcome.position == 2
        event = events_of(log)[0]
        assert event["type"] == "FlowCreated"
        assert event["data"] == {"name": "my-flow", "tags": ["a"], "labels": {"env": "dev"}}
        assert NameMarker.decode(log.messages[1].data) == NameMarker(
            "my-flow", outcome.body["id"], held=True
        )

    async def test_an_existing_name_appends_nothing_and_names_the_holder(self) -> None:
        log = InMemoryLog()
        writer = make_writer(log)
        first = await created(writer, "my-flow", tags=["a"])
        await writer.execute(UpdateFlow(id=first.body["id"], tags=["b"]))
        again = await created(writer, "my-flow", tags=["zzz"])
        assert again.status == 200
        # the holder as its events make it: the stored row, unchanged by this request
        assert again.body == {**first.body, "tags": ["b"], "updated": "2026-01-01T00:00:01Z"}
        assert again.position == 3  # the holder's latest event
        assert len(log.messages) == 3

    async def test_a_deleted_name_is_free_again_with_a_new_id(self) -> None:
        log = InMemoryLog()
        writer = make_writer(log)
        first = await created(writer, "my-flow")
        await writer.execute(DeleteFlow(id=first.body["id"]))
        second = await created(writer, "my-flow")
        assert second.status == 201
        assert second.body["id"] != first.body["id"]

    async def test_names_are_case_sensitive(self) -> None:
        writer = make_writer(InMemoryLog())
        assert (await created(writer, "MY-FLOW")).status == 201
        assert (await created(writer, "my-flow")).status == 201

    async def test_concurrent_creates_of_one_name_make_one_flow(self) -> None:
        log = InMemoryLog()
        writer = make_writer(log)
        outcomes = await asyncio.gather(*(created(writer, "race") for _ in range(20)))
        ids = {o.body["id"] for o in outcomes}
        assert [o.status for o in outcomes].count(201) == 1
        assert len(ids) == 1
        assert sum(1 for e in events_of(log) if e["type"] == "FlowCreated") == 1


class TestUpdate:
    async def test_update_sets_tags_and_guards_on_the_flow_version(self) -> None:
        log = InMemoryLog()
        writer = make_writer(log)
        flow = await created(writer, "f", tags=["a"])
        outcome = await writer.execute(UpdateFlow(id=flow.body["id"], tags=["TB12"]))
        assert isinstance(outcome, CommandResult)
        assert (outcome.status, outcome.body, outcome.position) == (204, None, 3)
        assert events_of(log)[-1]["data"] == {"tags": ["TB12"]}

    async def test_an_empty_update_is_recorded_with_empty_data(self) -> None:
        log = InMemoryLog()
        writer = make_writer(log)
        flow = await created(writer, "f", tags=["a"])
        await writer.execute(UpdateFlow(id=flow.body["id"]))
        last = events_of(log)[-1]
        assert (last["type"], last["data"]) == ("FlowUpdated", {})

    async def test_unknown_and_deleted_flows_are_not_found_and_append_nothing(self) -> None:
        log = InMemoryLog()
        writer = make_writer(log)
        with pytest.raises(FlowNotFound):
            await writer.execute(UpdateFlow(id=UNKNOWN, tags=["x"]))
        flow = await created(writer, "f")
        await writer.execute(DeleteFlow(id=flow.body["id"]))
        size = len(log.messages)
        with pytest.raises(FlowNotFound):
            await writer.execute(UpdateFlow(id=flow.body["id"], tags=["x"]))
        assert len(log.messages) == size

    async def test_concurrent_updates_of_one_flow_never_exhaust_their_retries(self) -> None:
        log = InMemoryLog()
        writer = make_writer(log)
        flow = await created(writer, "f")
        outcomes = await asyncio.gather(
            *(writer.execute(UpdateFlow(id=flow.body["id"], tags=[str(i)])) for i in range(64))
        )
        assert {o.status for o in outcomes} == {204}
        assert sum(1 for e in events_of(log) if e["type"] == "FlowUpdated") == 64

    async def test_concurrent_updates_all_land_one_after_another(self) -> None:
        log = InMemoryLog()
        writer = make_writer(log)
        flow = await created(writer, "f")
        await asyncio.gather(
            *(writer.execute(UpdateFlow(id=flow.body["id"], tags=[str(i)])) for i in range(8))
        )
        updates = [e for e in events_of(log) if e["type"] == "FlowUpdated"]
        assert sorted(e["data"]["tags"][0] for e in updates) == [str(i) for i in range(8)]

    async def test_a_command_that_always_loses_its_race_gives_up_with_503(self) -> None:
        class AlwaysRaced(InMemoryLog):
            async def append(self, messages: list[AppendMessage]) -> int:  # type: ignore[override]
                if any(SUBJECTS.flow_id_of(m.subject) for m in messages) and self.messages:
                    raise WrongExpectedPosition("wrong last sequence")
                return await super().append(messages)

        log = AlwaysRaced()
        writer = make_writer(log)
        flow = await created(writer, "f")
        with pytest.raises(ConcurrencyConflict) as caught:
            await writer.execute(UpdateFlow(id=flow.body["id"], tags=["x"]))
        assert caught.value.status == 503


class TestDelete:
    async def test_delete_records_the_name_and_frees_it_in_one_append(self) -> None:
        log = InMemoryLog()
        writer = make_writer(log)
        flow = await created(writer, "f")
        await writer.execute(
            UpdateFlow(id=flow.body["id"], tags=["x"])
        )  # the name must come from the first event
        outcome = await writer.execute(DeleteFlow(id=flow.body["id"]))
        assert isinstance(outcome, CommandResult)
        assert outcome.status == 204
        assert [m.subject for m in log.messages[-2:]] == [
            SUBJECTS.event(flow.body["id"]),
            SUBJECTS.name("f"),
        ]
        assert events_of(log)[-1]["data"] == {"name": "f"}
        assert NameMarker.decode(log.messages[-1].data).held is False

    async def test_delete_of_unknown_flow_is_not_found(self) -> None:
        with pytest.raises(FlowNotFound):
            await make_writer(InMemoryLog()).execute(DeleteFlow(id=UNKNOWN))

    async def test_delete_many_deletes_only_existing_flows_atomically(self) -> None:
        log = InMemoryLog()
        writer = make_writer(log)
        a, b = await created(writer, "a"), await created(writer, "b")
        unknown = "00000000-0000-4000-8000-000000000000"
        outcome = await writer.execute(DeleteFlows(flow_ids=(a.body["id"], unknown, b.body["id"])))
        assert isinstance(outcome, CommandResult)
        assert outcome.body == {"deleted": [a.body["id"], b.body["id"]]}
        assert outcome.position == len(log.messages)
        assert [e["type"] for e in events_of(log)][-2:] == ["FlowDeleted", "FlowDeleted"]

    async def test_delete_many_of_nothing_appends_nothing(self) -> None:
        log = InMemoryLog()
        outcome = await make_writer(log).execute(DeleteFlows(flow_ids=(UNKNOWN,)))
        assert isinstance(outcome, CommandResult)
        assert (outcome.status, outcome.body, outcome.position) == (200, {"deleted": []}, 0)
        assert log.messages == []


class TestStoredReplies:
    async def test_a_command_id_stores_the_reply_in_the_same_append(self) -> None:
        log = InMemoryLog()
        writer = make_writer(log)
        outcome = await writer.execute(CreateFlow(name="f", tags=[], labels={}), "cmd-1")
        assert isinstance(outcome, CommandResult)
        assert log.messages[-1].subject == SUBJECTS.reply("cmd-1")
        stored = await writer.stored_reply("cmd-1")
        assert stored == StoredReply("cmd-1", "create", 201, outcome.body, outcome.position)
        assert events_of(log)[0]["metadata"] == {"command_id": "cmd-1"}

    async def test_a_retry_racing_its_original_gets_the_original_reply(self) -> None:
        log = InMemoryLog()
        flow = await created(make_writer(log), "f")
        # Two instances: both find no stored reply, both decide; the loser's atomic append
        # fails on the reply's guard and it answers with the winner's stored reply.
        first, retry = await asyncio.gather(
            make_writer(log).execute(UpdateFlow(id=flow.body["id"], tags=["x"]), "u-1"),
            make_writer(log).execute(UpdateFlow(id=flow.body["id"], tags=["y"]), "u-1"),
        )
        assert (retry.status, retry.position) == (first.status, first.position) == (204, 4)
        assert sum(1 for e in events_of(log) if e["type"] == "FlowUpdated") == 1

    async def test_a_later_retry_appends_nothing_and_gets_the_same_reply(self) -> None:
        log = InMemoryLog()
        writer = make_writer(log)
        first = await writer.execute(CreateFlow(name="f"), "c-1")
        before = len(log.messages)
        assert await writer.execute(CreateFlow(name="f"), "c-1") == first
        assert len(log.messages) == before

    async def test_a_later_retry_of_each_command_gets_its_first_reply_and_appends_nothing(
        self,
    ) -> None:
        # No stored reply is looked up before a command runs: a retry is found out by its
        # reply's guard (or by finding nothing to do), whatever the state has become since.
        log = InMemoryLog()
        writer = make_writer(log)
        flow = await writer.execute(CreateFlow(name="f"), "c-1")
        update = await writer.execute(UpdateFlow(id=flow.body["id"], tags=["x"]), "u-1")
        await writer.execute(UpdateFlow(id=flow.body["id"], tags=["y"]))
        delete = await writer.execute(DeleteFlow(id=flow.body["id"]), "d-1")
        # The name is free again: a retried create would otherwise make a new flow.
        retries = [
            (CreateFlow(name="f"), "c-1", flow),
            (UpdateFlow(id=flow.body["id"], tags=["z"]), "u-1", update),
            (DeleteFlow(id=flow.body["id"]), "d-1", delete),
        ]
        before = len(log.messages)
        for command, command_id, first in retries:
            assert await writer.execute(command, command_id) == first
        assert len(log.messages) == before
        assert writer.conflicts == 0  # a retry is not a lost race

    async def test_store_reply_keeps_the_first(self) -> None:
        writer = make_writer(InMemoryLog())
        first = await writer._store_reply(StoredReply("c", "create", 200, {"a": 1}, 7))
        second = await writer._store_reply(StoredReply("c", "create", 200, {"a": 2}, 9))
        assert second == first

    async def test_events_without_a_command_id_still_carry_one(self) -> None:
        log = InMemoryLog()
        await created(make_writer(log), "f")
        assert isinstance(events_of(log)[0]["metadata"]["command_id"], str)


class TestAPoisonMessageOnAFlowsSubject:
    """A message that is not an event (the projector parks it, `flows verify` reports it) does
    not make its flow unusable: commands act on the latest valid event and chain after it."""

    async def poisoned(self) -> tuple[InMemoryLog, FlowWriter, str, StoredMessage]:
        log = InMemoryLog()
        writer = make_writer(log)
        flow_id = (await created(writer, "poisoned", tags=["a"])).body["id"]
        await log.append([AppendMessage(SUBJECTS.event(flow_id), b"{not an event")])
        return log, writer, flow_id, log.messages[-1]

    async def test_an_update_guards_on_and_links_to_the_poison(self) -> None:
        log, writer, flow_id, poison = await self.poisoned()
        outcome = await writer.execute(UpdateFlow(id=flow_id, tags=["b"]))
        assert isinstance(outcome, CommandResult)
        assert outcome.status == 204
        update = decode_event(log.messages[-1].data, log.messages[-1].position).event
        assert update.type == "FlowUpdated"
        assert update.prev == digest(poison.data)

    async def test_a_delete_still_frees_the_name(self) -> None:
        log, writer, flow_id, _ = await self.poisoned()
        await writer.execute(DeleteFlow(id=flow_id))
        assert NameMarker.decode(log.messages[-1].data).held is False

    async def test_a_create_of_its_name_still_answers_with_the_holder(self) -> None:
        _, writer, flow_id, _ = await self.poisoned()
        again = await writer.execute(CreateFlow(name="poisoned", tags=[], labels=None))
        assert isinstance(again, CommandResult)
        assert (again.status, again.body["id"], again.body["tags"]) == (200, flow_id, ["a"])


class _CountingLog(InMemoryLog):
    """Counts what the writer asks of the log: each call is one JetStream round trip."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    async def append(self, messages: Sequence[AppendMessage]) -> int:
        self.calls.append("append")
        return await super().append(messages)

    async def last(self, subject: str) -> StoredMessage | None:
        self.calls.append("last")
        return await super().last(subject)

    async def first(self, subject: str) -> StoredMessage | None:
        self.calls.append("first")
        return await super().first(subject)

    async def read(
        self, after: int, limit: int, subject_filter: str | None = None
    ) -> list[StoredMessage]:
        self.calls.append("read")
        return await super().read(after, limit, subject_filter)


class TestRoundTrips:
    """A create or an update costs one read of the log (the name's claim, or the flow's head)
    and one atomic append, with or without a command id: the minimum, since the append's guard
    needs the position that read found."""

    @pytest.mark.parametrize("command_id", [None, "cmd"])
    async def test_a_create_reads_its_name_once_and_appends_once(
        self, command_id: str | None
    ) -> None:
        log = _CountingLog()
        await make_writer(log).execute(CreateFlow(name="f"), command_id)
        assert log.calls == ["last", "append"]

    @pytest.mark.parametrize("command_id", [None, "cmd"])
    async def test_an_update_reads_its_head_once_and_appends_once(
        self, command_id: str | None
    ) -> None:
        log = _CountingLog()
        writer = make_writer(log)
        flow = await writer.execute(CreateFlow(name="f"))
        log.calls.clear()
        await writer.execute(UpdateFlow(id=flow.body["id"], tags=["x"]), command_id)
        assert log.calls == ["last", "append"]
