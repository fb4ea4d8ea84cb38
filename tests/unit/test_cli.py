"""The `flows` command line: argument parsing, exit codes and output (no sockets).

`FlowsClient.connect` is replaced by a recorder that answers canned `Reply`s, so these tests
cover what the CLI sends and prints; the client's own wire behaviour is in test_client.py.
"""

from __future__ import annotations

import sys
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest

from services import cli, render
from services.cli import main, parse_label
from services.client import FlowsClient, Reply, ServiceUnreachable
from services.settings import Settings

FLOW = {
    "id": "6f1c2b9e-6f4b-4c1d-9a6e-0f2d3c4b5a69",
    "created": "2024-05-01T12:00:03.441494Z",
    "updated": "2024-05-01T12:00:05.465000Z",
    "name": "etl",
    "tags": ["nightly", "prod"],
    "labels": {"team": "data", "retries": 3},
}


@dataclass
class Recorder:
    """Stands in for a connected FlowsClient: records calls, answers `reply`."""

    reply: Reply = field(default_factory=lambda: Reply(200, FLOW))
    calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = field(default_factory=list)
    settings: Settings | None = None
    unreachable: bool = False

    async def __aenter__(self) -> Recorder:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    def __getattr__(self, operation: str) -> Any:
        async def call(*args: Any, **kwargs: Any) -> Reply:
            self.calls.append((operation, args, kwargs))
            return self.reply

        return call


@pytest.fixture
def service(monkeypatch: pytest.MonkeyPatch) -> Recorder:
    recorder = Recorder()

    async def connect(settings: Settings, **_: Any) -> Recorder:
        recorder.settings = settings
        if recorder.unreachable:
            raise ServiceUnreachable("no flows service answered on flows.query.filter")
        return recorder

    monkeypatch.setattr(FlowsClient, "connect", connect)
    for variable in ("NATS_URL", "DATABASE_URL", "SUBJECT_PREFIX", "STREAM", "DATA_DIR"):
        monkeypatch.delenv(f"FLOWS_{variable}", raising=False)
    return recorder


class TestLabels:
    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("team=data", ("team", "data")),
            ("retries=3", ("retries", 3)),
            ("ratio=1.5", ("ratio", 1.5)),
            ("big=1e3", ("big", 1000.0)),
            ("on=true", ("on", True)),
            ("off=false", ("off", False)),
            ("nothing=null", ("nothing", "null")),  # Prefect rejects null label values
            ("list=[1]", ("list", "[1]")),
            ('quoted="x"', ("quoted", '"x"')),
            ("zip=01234", ("zip", "01234")),
            ("nan=NaN", ("nan", "NaN")),
            ("empty=", ("empty", "")),
            ("url=a=b", ("url", "a=b")),
        ],
    )
    def test_values_are_json_scalars_when_they_parse_else_text(
        self, text: str, expected: tuple[str, Any]
    ) -> None:
        assert parse_label(text) == expected
        assert type(parse_label(text)[1]) is type(expected[1])

    def test_create_sends_labels_and_tags(self, service: Recorder) -> None:
        argv = ["create", "etl", "--tag", "a", "--tag", "b", "--label", "n=3", "--label", "t=x"]
        assert main(argv) == 0
        assert service.calls == [
            ("create", ("etl",), {"tags": ["a", "b"], "labels": {"n": 3, "t": "x"}})
        ]

    @pytest.mark.parametrize("label", ["novalue", "=3"])
    def test_a_label_without_key_or_equals_is_a_usage_error(
        self, service: Recorder, label: str, capsys: pytest.CaptureFixture[str]
    ) -> None:
        assert main(["create", "etl", "--label", label]) == 1
        assert "expected KEY=VALUE" in capsys.readouterr().err
        assert service.calls == []


class TestArguments:
    @pytest.mark.parametrize(
        ("argv", "call"),
        [
            (["create", "etl"], ("create", ("etl",), {"tags": None, "labels": None})),
            (["get", "F"], ("read", ("F",), {})),
            (["get", "--name", "etl"], ("read_by_name", ("etl",), {})),
            (["get", "F", "--as-of", "7"], ("read", ("F",), {"as_of": "7"})),
            (
                ["get", "--name", "etl", "--as-of", "2026-01-01T00:00:00Z"],
                ("read_by_name", ("etl",), {"as_of": "2026-01-01T00:00:00Z"}),
            ),
            (["count", "--as-of", "3"], ("count", (), {"as_of": "3"})),
            (
                ["ls", "--as-of", "3"],
                ("filter", (), {"limit": None, "offset": None, "sort": None, "as_of": "3"}),
            ),
            (["update", "F"], ("update", ("F",), {"tags": None})),
            (["update", "F", "--tag", "a", "--tag", "b"], ("update", ("F",), {"tags": ["a", "b"]})),
            (["update", "F", "--clear-tags"], ("update", ("F",), {"tags": []})),
            (["delete", "F"], ("delete", ("F",), {})),
            (["history", "F"], ("history", ("F",), {})),
            (["count"], ("count", (), {})),
            (
                ["count", "--name-like", "et", "--tag", "a"],
                ("count", (), {"flows": {"name": {"like_": "et"}, "tags": {"all_": ["a"]}}}),
            ),
            (["ls"], ("filter", (), {"limit": None, "offset": None, "sort": None})),
            (
                ["ls", "--limit", "5", "--offset", "10", "--sort", "created_desc", "--tag", "x"],
                (
                    "filter",
                    (),
                    {
                        "limit": 5,
                        "offset": 10,
                        "sort": "CREATED_DESC",
                        "flows": {"tags": {"all_": ["x"]}},
                    },
                ),
            ),
        ],
    )
    def test_each_subcommand_makes_its_request(
        self, service: Recorder, argv: list[str], call: Any
    ) -> None:
        service.reply = Reply(200, [] if argv[0] in {"ls", "history"} else FLOW)
        assert main(argv) == 0
        assert service.calls == [call]

    @pytest.mark.parametrize(
        "argv",
        [
            [],
            ["get"],
            ["get", "F", "--name", "etl"],
            ["update", "F", "--tag", "a", "--clear-tags"],
            ["ls", "--sort", "bogus"],
            ["ls", "--limit", "many"],
            ["frobnicate"],
        ],
    )
    def test_usage_errors_exit_1(self, service: Recorder, argv: list[str]) -> None:
        assert main(argv) == 1
        assert service.calls == []

    def test_help_exits_0(self, capsys: pytest.CaptureFixture[str]) -> None:
        assert main(["--help"]) == 0
        assert "serve" in capsys.readouterr().out

    def test_flags_override_the_environment(
        self, service: Recorder, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("FLOWS_NATS_URL", "nats://from-env:4222")
        monkeypatch.setenv("FLOWS_STREAM", "ENVSTREAM")
        assert main(["--nats-url", "nats://flag:4222", "--subject-prefix", "team", "count"]) == 0
        assert service.settings is not None
        assert service.settings.nats_url == "nats://flag:4222"
        assert service.settings.subject_prefix == "team"
        assert service.settings.stream == "ENVSTREAM"

    def test_global_flags_also_work_after_the_subcommand(
        self, service: Recorder, capsys: pytest.CaptureFixture[str]
    ) -> None:
        assert main(["--data-dir", "/tmp/x", "get", "F", "--json", "--stream", "S"]) == 0
        assert service.settings is not None
        assert (service.settings.data_dir, service.settings.stream) == (Path("/tmp/x"), "S")
        assert orjson.loads(capsys.readouterr().out) == FLOW

    def test_a_bad_setting_in_the_environment_exits_1(
        self, service: Recorder, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        monkeypatch.setenv("FLOWS_MAX_IN_FLIGHT", "lots")
        assert main(["count"]) == 1
        assert "must be an integer" in capsys.readouterr().err

    def test_an_unusable_subject_prefix_exits_1_before_connecting(
        self, capsys: pytest.CaptureFixture[str]
    ) -> None:
        assert main(["--subject-prefix", "a b", "ls"]) == 1
        assert "invalid subject prefix 'a b'" in capsys.readouterr().err


class TestExitCodes:
    @pytest.mark.parametrize(
        ("status", "code"),
        [(200, 0), (201, 0), (204, 0), (400, 1), (404, 1), (422, 1), (500, 3), (503, 3)],
    )
    def test_status_to_exit_code(self, status: int, code: int) -> None:
        assert cli.exit_code(Reply(status, None)) == code

    @pytest.mark.parametrize(
        ("reply", "code", "message"),
        [
            (Reply(404, {"detail": "Flow not found"}), 1, "Flow not found (404)"),
            (
                Reply(422, {"detail": "Invalid limit: must be less than or equal to 200."}),
                1,
                "Invalid limit: must be less than or equal to 200. (422)",
            ),
            (Reply(503, {"detail": "event log unreachable"}), 3, "service unavailable (503)"),
        ],
    )
    def test_error_replies_go_to_stderr_with_their_exit_code(
        self,
        service: Recorder,
        capsys: pytest.CaptureFixture[str],
        reply: Reply,
        code: int,
        message: str,
    ) -> None:
        service.reply = reply
        assert main(["get", "F"]) == code
        out, err = capsys.readouterr()
        assert out == ""
        assert message in err

    def test_validation_errors_show_each_location_and_message(
        self, service: Recorder, capsys: pytest.CaptureFixture[str]
    ) -> None:
        service.reply = Reply(422, VALIDATION_ERROR)
        assert main(["create", "a/b"]) == 1
        err = capsys.readouterr().err
        assert "Invalid request received." in err
        assert "name: String should match pattern '^[^/%&><]+$'" in err
        assert "tags: Input should be a valid list" in err

    def test_unreachable_exits_3_with_the_message(
        self, service: Recorder, capsys: pytest.CaptureFixture[str]
    ) -> None:
        service.unreachable = True
        assert main(["ls"]) == 3
        assert "no flows service answered" in capsys.readouterr().err


class TestOutput:
    def test_json_prints_the_exact_reply(
        self, service: Recorder, capsys: pytest.CaptureFixture[str]
    ) -> None:
        service.reply = Reply(200, [FLOW])
        assert main(["--json", "ls"]) == 0
        out = capsys.readouterr().out
        assert orjson.loads(out) == [FLOW]
        assert list(orjson.loads(out)[0]) == list(FLOW)  # key order kept

    def test_json_prints_an_error_body_too(
        self, service: Recorder, capsys: pytest.CaptureFixture[str]
    ) -> None:
        service.reply = Reply(404, {"detail": "Flow not found"})
        assert main(["get", "F", "--json"]) == 1
        out, err = capsys.readouterr()
        assert orjson.loads(out) == {"detail": "Flow not found"}
        assert "Flow not found" in err

    def test_json_prints_nothing_for_an_empty_reply(
        self, service: Recorder, capsys: pytest.CaptureFixture[str]
    ) -> None:
        service.reply = Reply(204, None)
        assert main(["delete", "F", "--json"]) == 0
        assert capsys.readouterr().out == ""

    def test_get_prints_key_value_lines(
        self, service: Recorder, capsys: pytest.CaptureFixture[str]
    ) -> None:
        assert main(["get", "F"]) == 0
        assert capsys.readouterr().out.splitlines() == [
            "id:      6f1c2b9e-6f4b-4c1d-9a6e-0f2d3c4b5a69",
            "created: 2024-05-01T12:00:03.441494Z",
            "updated: 2024-05-01T12:00:05.465000Z",
            "name:    etl",
            "tags:    nightly, prod",
            "labels:  team=data, retries=3",
        ]

    def test_create_of_an_existing_name_says_so_on_stderr(
        self, service: Recorder, capsys: pytest.CaptureFixture[str]
    ) -> None:
        assert main(["create", "etl"]) == 0  # 200: the name existed
        out, err = capsys.readouterr()
        assert "name:    etl" in out
        assert "already existed" in err

    def test_count_and_204s(self, service: Recorder, capsys: pytest.CaptureFixture[str]) -> None:
        service.reply = Reply(200, 7)
        assert main(["count"]) == 0
        service.reply = Reply(204, None)
        assert main(["update", "F", "--clear-tags"]) == 0
        assert capsys.readouterr().out == "7\nupdated F\n"

    def test_ls_prints_a_table(self, service: Recorder, capsys: pytest.CaptureFixture[str]) -> None:
        service.reply = Reply(200, [FLOW, {**FLOW, "name": "b", "tags": [], "labels": None}])
        assert main(["ls"]) == 0
        header, first, second = capsys.readouterr().out.splitlines()
        assert header.split() == ["id", "name", "tags", "labels", "created", "updated"]
        assert first == (
            "6f1c2b9e-6f4b-4c1d-9a6e-0f2d3c4b5a69  etl   nightly, prod  team=data, retries=3  "
            "2024-05-01T12:00:03Z  2024-05-01T12:00:05Z"
        )
        assert second == (
            "6f1c2b9e-6f4b-4c1d-9a6e-0f2d3c4b5a69  b                    null                  "
            "2024-05-01T12:00:03Z  2024-05-01T12:00:05Z"
        )
        for column in ("name", "tags", "labels", "created", "updated"):
            assert first[header.index(column) - 2 : header.index(column)] == "  "


class TestLocalCommands:
    @pytest.mark.parametrize(
        ("argv", "module", "function"),
        [
            (["serve"], "services.serve", "serve"),
            (["rebuild"], "services.log_tools", "rebuild"),
            (["replay"], "services.log_tools", "replay"),
        ],
    )
    def test_runs_the_function_with_the_settings(
        self, monkeypatch: pytest.MonkeyPatch, argv: list[str], module: str, function: str
    ) -> None:
        received: list[tuple[Any, ...]] = []
        keywords: list[dict[str, Any]] = []

        async def entry(*args: Any, **kwargs: Any) -> int:
            received.append(args)
            keywords.append(kwargs)
            return 5

        fake = types.ModuleType(module)
        setattr(fake, function, entry)
        fake.before_run = lambda: None  # type: ignore[attr-defined]  # serve's loop set-up
        monkeypatch.setitem(sys.modules, module, fake)
        assert main(["--stream", "S", *argv]) == 5
        [args] = received
        assert isinstance(args[0], Settings)
        assert args[0].stream == "S"
        assert args[1:] == ((sys.stdout,) if function == "replay" else ())
        no_filter = {"start": None, "end": None, "flow": None, "types": None, "follow": False}
        assert keywords == [no_filter if function == "replay" else {}]

    def test_replay_passes_its_filters(self, monkeypatch: pytest.MonkeyPatch) -> None:
        received: list[dict[str, Any]] = []

        async def replay(*args: Any, **kwargs: Any) -> int:
            received.append(kwargs)
            return 0

        fake = types.ModuleType("services.log_tools")
        fake.replay = replay  # type: ignore[attr-defined]
        monkeypatch.setitem(sys.modules, "services.log_tools", fake)
        argv = ["replay", "--from", "3", "--to", "2026-01-01T00:00:00Z", "--flow", "F"]
        assert main([*argv, "--type", "FlowCreated", "--type", "FlowDeleted"]) == 0
        assert received == [
            {
                "start": "3",
                "end": "2026-01-01T00:00:00Z",
                "flow": "F",
                "types": ["FlowCreated", "FlowDeleted"],
                "follow": False,
            }
        ]


VALIDATION_ERROR = {
    "exception_message": "Invalid request received.",
    "exception_detail": [
        {
            "type": "string_pattern_mismatch",
            "loc": ["body", "name"],
            "msg": "String should match pattern '^[^/%&><]+$'",
            "input": "a/b",
            "ctx": {"pattern": "^[^/%&><]+$"},
        },
        {
            "type": "list_type",
            "loc": ["body", "tags"],
            "msg": "Input should be a valid list",
            "input": None,
        },
    ],
    "request_body": {"name": "a/b", "tags": None},
}


class TestRendering:
    def test_table_pads_columns_without_trailing_spaces(self) -> None:
        assert render.table(["a", "bb"], [["xxx", ""], ["y", "z"]]).splitlines() == [
            "a    bb",
            "xxx",
            "y    z",
        ]

    def test_wide_characters_count_double(self) -> None:
        lines = render.table(["name", "n"], [["流れ", "1"], ["ab", "2"]]).splitlines()
        assert lines == ["name  n", "流れ  1", "ab    2"]

    def test_control_characters_are_escaped(self) -> None:
        assert render.cell("etl\nnightly\t1") == "etl\\nnightly\\t1"

    @pytest.mark.parametrize(
        ("value", "text"),
        [
            (None, "null"),
            (True, "true"),
            (3, "3"),
            (1.5, "1.5"),
            ("x", "x"),
            ([], ""),
            (["a", "b"], "a, b"),
            ({"n": 3, "s": "3", "b": "true", "t": "x"}, 'n=3, s="3", b="true", t=x'),
        ],
    )
    def test_cells(self, value: Any, text: str) -> None:
        assert render.cell(value) == text

    def test_flow_record_keeps_the_reply_order(self) -> None:
        record = render.flow_record({"b": 1, "a": None})
        assert record.splitlines() == ["b: 1", "a: null"]

    def test_events_table(self) -> None:
        events = [
            {
                "id": "e1",
                "type": "FlowCreated",
                "flow_id": "F",
                "occurred": "2024-05-01T12:00:03Z",
                "data": {"name": "etl", "tags": [], "labels": {}},
                "metadata": {},
                "position": 1,
            }
        ]
        assert render.events_table(events).splitlines() == [
            "position  type         occurred              data",
            '1         FlowCreated  2024-05-01T12:00:03Z  {"name":"etl","tags":[],"labels":{}}',
        ]

    def test_empty_lists(self) -> None:
        assert render.flows_table([]) == "(no flows)"
        assert render.events_table([]) == "(no events)"

    @pytest.mark.parametrize(
        ("status", "body", "message"),
        [
            (404, {"detail": "Flow not found"}, "Flow not found (404)"),
            (
                422,
                VALIDATION_ERROR,
                "Invalid request received. (422)\n"
                "  name: String should match pattern '^[^/%&><]+$'\n"
                "  tags: Input should be a valid list",
            ),
            (
                422,
                {
                    "exception_message": "Invalid request received.",
                    "exception_detail": [{"loc": ["body"], "msg": "Field required"}],
                },
                "Invalid request received. (422)\n  body: Field required",
            ),
            (500, None, "the service answered 500 with no detail"),
            (418, ["odd"], 'the service answered 418: ["odd"]'),
        ],
    )
    def test_error_messages(self, status: int, body: Any, message: str) -> None:
        assert render.error_message(status, body) == message
