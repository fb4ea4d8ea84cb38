"""The `flows` command line as a subprocess, against `flows serve` as a subprocess.

One service process serves the whole module (its own subject prefix, stream and data dir);
each test names its flows with a fresh token and filters on it, so the tests share the service
without seeing each other's flows.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from services.embedded import EmbeddedNats, free_port
from tests.processes import (
    FLOWS,
    CliResult,
    ServiceProcess,
    Target,
    new_target,
    read_model,
    run_flows,
)

pytestmark = pytest.mark.timeout(60)

UNKNOWN_ID = "00000000-0000-4000-8000-000000000000"


@pytest.fixture(scope="module")
async def served(
    nats_server: EmbeddedNats, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Target]:
    target = new_target(nats_server.url, tmp_path_factory.mktemp("e2e"))
    async with ServiceProcess(target) as service:
        await service.start()
        yield target
        await service.stop()


@pytest.fixture
def token() -> str:
    """A name prefix no other test uses."""
    return f"e2e{uuid.uuid4().hex[:8]}"


async def flows(target: Target, *args: str) -> CliResult:
    return await run_flows(target, *args)


async def ok(target: Target, *args: str) -> CliResult:
    result = await flows(target, *args)
    assert result.returncode == 0, str(result)
    return result


async def create(target: Target, name: str, *args: str) -> dict[str, Any]:
    flow: dict[str, Any] = (await ok(target, "create", name, "--json", *args)).json()
    return flow


def record(stdout: str) -> dict[str, str]:
    """`key: value` lines, as `flows create` / `flows get` print a flow."""
    fields = {}
    for line in stdout.splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return fields


def table(stdout: str) -> tuple[list[str], list[list[str]]]:
    """A table printed by `flows ls` / `flows history`: header words and rows split on runs of
    two or more spaces."""
    lines = stdout.splitlines()
    split = [[cell for cell in line.split("  ") if cell.strip()] for line in lines]
    return [c.strip() for c in split[0]], [[c.strip() for c in row] for row in split[1:]]


class TestCreate:
    async def test_a_new_flow_is_printed_as_a_record(self, served: Target, token: str) -> None:
        result = await ok(
            served, "create", token, "--tag", "etl", "--tag", "nightly", "--label", "team=data",
            "--label", "retries=3", "--label", "on=true",
        )  # fmt: skip
        shown = record(result.stdout)
        assert list(shown) == ["id", "created", "updated", "name", "tags", "labels"]
        assert shown["name"] == token
        assert shown["tags"] == "etl, nightly"
        assert shown["labels"] == "team=data, retries=3, on=true"
        uuid.UUID(shown["id"])
        assert shown["created"] == shown["updated"]
        assert result.stderr == ""

    async def test_json_is_the_flow_and_an_existing_name_answers_it_unchanged_with_a_note(
        self, served: Target, token: str
    ) -> None:
        first = await ok(served, "create", token, "--tag", "a", "--label", "k=v", "--json")
        flow = first.json()
        assert {key: flow[key] for key in ("name", "tags", "labels")} == {
            "name": token,
            "tags": ["a"],
            "labels": {"k": "v"},
        }
        assert "note" not in first.stderr  # 201: a new flow

        again = await ok(served, "create", token, "--tag", "other", "--json")
        assert again.json() == flow  # 200: the stored row, unchanged
        assert f"note: a flow named {token!r} already existed; left unchanged" in again.stderr

    async def test_an_invalid_name_exits_1_with_the_validation_error(
        self, served: Target, token: str
    ) -> None:
        result = await flows(served, "create", f"{token}/bad")
        assert result.returncode == 1, str(result)
        assert result.stdout == ""
        assert "Invalid request received. (422)" in result.stderr
        assert "name: String should match pattern" in result.stderr
        # Nothing was created.
        assert (await ok(served, "count", "--name-like", token)).stdout.strip() == "0"


class TestListAndCount:
    async def test_ls_filters_sorts_and_pages(self, served: Target, token: str) -> None:
        made = [
            await create(served, f"{token}-b", "--tag", "x", "--tag", "y"),
            await create(served, f"{token}-a", "--tag", "x"),
            await create(served, f"{token}-c"),
        ]

        cases: list[tuple[tuple[str, ...], list[str]]] = [
            ((), [f"{token}-a", f"{token}-b", f"{token}-c"]),  # NAME_ASC by default
            (("--sort", "name_desc"), [f"{token}-c", f"{token}-b", f"{token}-a"]),
            (("--sort", "CREATED_DESC"), [flow["name"] for flow in made[::-1]]),
            (("--tag", "x"), [f"{token}-a", f"{token}-b"]),
            (("--tag", "x", "--tag", "y"), [f"{token}-b"]),
            (("--limit", "1", "--offset", "1"), [f"{token}-b"]),
        ]
        results = await asyncio.gather(
            *(ok(served, "ls", "--name-like", token, "--json", *args) for args, _ in cases)
        )
        for (args, expected), result in zip(cases, results, strict=True):
            assert [flow["name"] for flow in result.json()] == expected, args
        assert {flow["id"]: flow for flow in results[0].json()} == {f["id"]: f for f in made}

    async def test_ls_prints_a_table(self, served: Target, token: str) -> None:
        flow = await create(served, token, "--tag", "t1", "--tag", "t2", "--label", "k=1")
        header, rows = table((await ok(served, "ls", "--name-like", token)).stdout)
        assert header == ["id", "name", "tags", "labels", "created", "updated"]
        assert rows == [
            [
                flow["id"],
                token,
                "t1, t2",
                "k=1",
                flow["created"][:19] + "Z",
                flow["updated"][:19] + "Z",
            ]
        ]
        empty = await ok(served, "ls", "--name-like", f"{token}-nothing")
        assert empty.stdout.strip() == "(no flows)"

    async def test_count_with_filters(self, served: Target, token: str) -> None:
        await asyncio.gather(
            *(
                create(served, f"{token}-{i}", *(["--tag", "even"] if i % 2 == 0 else []))
                for i in range(3)
            )
        )
        counted = await asyncio.gather(
            ok(served, "count", "--name-like", token),
            ok(served, "count", "--name-like", token, "--tag", "even"),
            ok(served, "count", "--name-like", token, "--json"),
        )
        assert [result.stdout for result in counted] == ["3\n", "2\n", "3\n"]
        assert counted[2].json() == 3

    async def test_a_limit_above_the_maximum_exits_1(self, served: Target) -> None:
        result = await flows(served, "ls", "--limit", "500")
        assert result.returncode == 1, str(result)
        assert "Invalid limit: must be less than or equal to 200. (422)" in result.stderr


class TestGetUpdateDelete:
    async def test_get_by_id_and_by_name(self, served: Target, token: str) -> None:
        flow = await create(served, token, "--tag", "a")
        assert (await ok(served, "get", flow["id"], "--json")).json() == flow
        assert (await ok(served, "get", "--name", token, "--json")).json() == flow
        shown = record((await ok(served, "get", flow["id"])).stdout)
        assert shown == {
            "id": flow["id"],
            "created": flow["created"],
            "updated": flow["updated"],
            "name": token,
            "tags": "a",
            "labels": "",
        }

    async def test_update_replaces_or_clears_the_tags(self, served: Target, token: str) -> None:
        flow = await create(served, token, "--tag", "old")
        updated = await ok(served, "update", flow["id"], "--tag", "new", "--tag", "newer")
        assert updated.stdout == f"updated {flow['id']}\n"
        after = (await ok(served, "get", flow["id"], "--json")).json()
        assert after["tags"] == ["new", "newer"]
        assert after["created"] == flow["created"] and after["updated"] > flow["updated"]

        await ok(served, "update", flow["id"], "--clear-tags")
        assert (await ok(served, "get", flow["id"], "--json")).json()["tags"] == []

    async def test_delete_then_the_flow_is_gone(self, served: Target, token: str) -> None:
        flow = await create(served, token)
        assert (await ok(served, "delete", flow["id"])).stdout == f"deleted {flow['id']}\n"
        for args in (("get", flow["id"]), ("get", "--name", token), ("delete", flow["id"])):
            gone = await flows(served, *args)
            assert gone.returncode == 1, str(gone)
            assert "Flow not found (404)" in gone.stderr
        # The name is free again: a new flow, with a new id.
        assert (await create(served, token))["id"] != flow["id"]

    @pytest.mark.parametrize(
        "args",
        [
            ("get", UNKNOWN_ID),
            ("get", "--name", "e2e-never-created"),
            ("update", UNKNOWN_ID, "--tag", "x"),
            ("delete", UNKNOWN_ID),
        ],
    )
    async def test_an_unknown_flow_exits_1(self, served: Target, args: tuple[str, ...]) -> None:
        result = await flows(served, *args)
        assert result.returncode == 1, str(result)
        assert result.stdout == ""
        assert "Flow not found (404)" in result.stderr

    async def test_json_prints_the_error_body_too(self, served: Target) -> None:
        result = await flows(served, "get", UNKNOWN_ID, "--json")
        assert result.returncode == 1, str(result)
        assert result.json() == {"detail": "Flow not found"}

    async def test_an_id_that_is_not_a_uuid_exits_1(self, served: Target) -> None:
        result = await flows(served, "get", "not-a-uuid")
        assert result.returncode == 1, str(result)
        assert "(422)" in result.stderr


class TestAudit:
    async def test_history_lists_a_flows_events_oldest_first(
        self, served: Target, token: str
    ) -> None:
        flow = await create(served, token, "--tag", "a")
        await ok(served, "update", flow["id"], "--tag", "b")
        await ok(served, "delete", flow["id"])

        events = (await ok(served, "history", flow["id"], "--json")).json()
        assert [event["type"] for event in events] == ["FlowCreated", "FlowUpdated", "FlowDeleted"]
        positions = [event["position"] for event in events]
        assert positions == sorted(positions) and len(set(positions)) == 3
        assert all(event["flow_id"] == flow["id"] for event in events)
        assert events[0]["data"] == {"name": token, "tags": ["a"], "labels": {}}
        assert events[0]["occurred"] == flow["created"]
        assert events[1]["data"] == {"tags": ["b"]}
        assert events[2]["data"] == {"name": token}

        header, rows = table((await ok(served, "history", flow["id"])).stdout)
        assert header == ["position", "type", "occurred", "data"]
        assert [row[:2] for row in rows] == [
            [str(event["position"]), event["type"]] for event in events
        ]
        assert rows[1][3] == '{"tags":["b"]}'

    async def test_replay_follow_keeps_printing_new_events_until_interrupted(
        self, served: Target, token: str
    ) -> None:
        before = await create(served, token)
        process = await asyncio.create_subprocess_exec(
            FLOWS, "replay", "--follow", "--type", "FlowCreated", "--type", "FlowUpdated",
            env=served.env(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )  # fmt: skip
        assert process.stdout is not None
        try:

            async def next_event() -> dict[str, Any]:
                async with asyncio.timeout(20):
                    line = await process.stdout.readline()  # type: ignore[union-attr]
                assert line, "replay --follow ended by itself"
                event: dict[str, Any] = orjson.loads(line)
                return event

            # The existing log first, in order, up to our flow...
            while (event := await next_event())["flow_id"] != before["id"]:
                pass
            # ...then what is appended while it runs, as it comes, with the filters applied.
            after = await create(served, f"{token}-later")
            await ok(served, "update", after["id"], "--tag", "x")
            await ok(served, "delete", after["id"])  # FlowDeleted: filtered out
            seen = [await next_event(), await next_event()]
            assert [(e["type"], e["flow_id"]) for e in seen] == [
                ("FlowCreated", after["id"]),
                ("FlowUpdated", after["id"]),
            ]
            assert seen[0]["position"] > event["position"]
        finally:
            process.send_signal(signal.SIGINT)
            try:
                async with asyncio.timeout(10):
                    await process.wait()
            except TimeoutError:
                process.send_signal(signal.SIGUSR1)  # its threads' stacks, on its stderr
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(2):
                        await process.wait()
                process.kill()
                _, stderr = await process.communicate()
                raise AssertionError(
                    f"replay --follow did not stop within 10 s of SIGINT:\n{stderr.decode()}"
                ) from None
        assert process.returncode == 130

    async def test_replay_follow_with_an_end_is_refused(self, served: Target) -> None:
        result = await flows(served, "replay", "--follow", "--to", "5")
        assert result.returncode == 1
        assert "--follow never ends" in result.stderr

    async def test_replay_prints_the_log_one_recorded_event_per_line_in_log_order(
        self, served: Target, token: str
    ) -> None:
        flow = await create(served, token, "--label", "n=1")
        await ok(served, "update", flow["id"])
        other = await create(served, f"{token}-other")

        lines = (await ok(served, "replay")).json_lines()
        positions = [line["position"] for line in lines]
        assert positions == sorted(positions) and len(set(positions)) == len(positions)
        for line in lines:
            assert set(line) == {
                "id",
                "type",
                "flow_id",
                "occurred",
                "data",
                "metadata",
                "schema",
                "prev",
                "position",
            }
            assert line["schema"] == 2
            # A flow's first event links to nothing; the others to the message before them.
            assert (line["prev"] is None) == (line["type"] == "FlowCreated"), line
            assert line["type"] in {"FlowCreated", "FlowUpdated", "FlowDeleted"}
            assert "command_id" in line["metadata"]
        ours = [line for line in lines if line["flow_id"] in {flow["id"], other["id"]}]
        assert [(line["flow_id"], line["type"]) for line in ours] == [
            (flow["id"], "FlowCreated"),
            (flow["id"], "FlowUpdated"),
            (other["id"], "FlowCreated"),
        ]
        # The same events, in the same order, as `flows history` reads them.
        history = (await ok(served, "history", flow["id"], "--json")).json()
        assert [line for line in lines if line["flow_id"] == flow["id"]] == history

    async def test_rebuild_makes_the_read_model_the_service_answers_from(
        self, served: Target, token: str, tmp_path: Path
    ) -> None:
        kept = await create(served, token, "--tag", "t", "--label", "k=v")
        await ok(served, "update", kept["id"], "--tag", "u")
        gone = await create(served, f"{token}-gone")
        await ok(served, "delete", gone["id"])

        fresh = tmp_path / "rebuilt"
        rebuilt = await run_flows(served.with_data_dir(fresh), "rebuild")
        assert rebuilt.returncode == 0, str(rebuilt)
        assert "rebuilt the read model from" in rebuilt.stderr

        listed = (await ok(served, "ls", "--json", "--limit", "200")).json()
        assert len(listed) < 200, "the module made more flows than one page"
        rows = read_model(fresh / "flows.db")["flows"]
        assert {flow_id: _as_document(row) for flow_id, row in rows.items()} == {
            flow["id"]: flow for flow in listed
        }
        assert kept["id"] in rows and gone["id"] not in rows


def _as_document(row: dict[str, Any]) -> dict[str, Any]:
    """A read-model row as the service answers it (timestamps as ISO 8601 UTC with `Z`)."""

    def iso(text: str) -> str:
        moment = datetime.fromisoformat(text).replace(tzinfo=UTC)
        return moment.isoformat(timespec="microseconds").replace("+00:00", "Z")

    return {
        "id": row["id"],
        "created": iso(row["created"]),
        "updated": iso(row["updated"]),
        "name": row["name"],
        "tags": row["tags"],
        "labels": row["labels"],
    }


class TestUnreachable:
    async def test_a_prefix_nobody_serves_exits_3(self, served: Target) -> None:
        result = await flows(served, "count", "--subject-prefix", "nobody.serves.this")
        assert result.returncode == 3, str(result)
        assert "no flows service answered on nobody.serves.this.query.count" in result.stderr

    async def test_a_closed_port_exits_3(self, served: Target) -> None:
        url = f"nats://127.0.0.1:{free_port()}"
        result = await flows(served, "ls", "--nats-url", url)
        assert result.returncode == 3, str(result)
        assert f"cannot connect to NATS at {url}" in result.stderr

    @pytest.mark.parametrize("tool", ["replay", "rebuild"])
    async def test_log_tools_against_a_closed_port_exit_3(
        self, served: Target, tool: str, tmp_path: Path
    ) -> None:
        url = f"nats://127.0.0.1:{free_port()}"
        closed = served.with_data_dir(tmp_path / "data")
        result = await run_flows(closed, tool, "--nats-url", url, timeout_s=8)
        assert result.returncode == 3, str(result)
        assert "Traceback" not in result.stderr, str(result)

    @pytest.mark.parametrize("tool", ["replay", "rebuild"])
    async def test_log_tools_on_a_stream_that_does_not_exist_exit_3(
        self, served: Target, tool: str, tmp_path: Path
    ) -> None:
        missing = Target(served.nats_url, "nobody.serves.this", "NOSUCHSTREAM", tmp_path / "data")
        result = await run_flows(missing, tool, timeout_s=8)
        assert result.returncode == 3, str(result)
        assert "Traceback" not in result.stderr, str(result)
        assert "NOSUCHSTREAM" in result.stderr
