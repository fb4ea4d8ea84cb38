"""The `flows` command: the service's operations for people, plus serve / replay / rebuild.

Exit codes (CONTRACT.md): 0 success; 1 domain error (404, 422, any other 4xx, invalid
arguments or settings); 3 the service or broker cannot be reached (no responders, timeout,
connection refused, 5xx such as 503).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import faulthandler
import signal
import sys
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, NoReturn, TypedDict, cast

from events import jsoncodec
from services import render
from services.client import Filters, FlowsClient, FlowsClientError, Label, Reply
from services.settings import Settings

__all__ = [
    "EXIT_DOMAIN",
    "EXIT_OK",
    "EXIT_UNREACHABLE",
    "build_parser",
    "exit_code",
    "main",
    "parse_label",
]

EXIT_OK, EXIT_DOMAIN, EXIT_UNREACHABLE = 0, 1, 3
SORTS = ("NAME_ASC", "NAME_DESC", "CREATED_DESC", "UPDATED_DESC")
SETTING_FLAGS = ("nats_url", "database_url", "subject_prefix", "stream", "data_dir")
# NATS authentication and TLS (services/nats_options.py); a password or token is safer in the
# environment than on a command line, where other users' `ps` can read it.
NATS_SECURITY_FLAGS = (
    "nats_user",
    "nats_password",
    "nats_token",
    "nats_nkey_seed",
    "nats_creds",
    "nats_tls_ca",
    "nats_tls_cert",
    "nats_tls_key",
    "nats_tls_hostname",
    "nats_log_user",
    "nats_log_password",
    "nats_log_token",
    "nats_log_nkey_seed",
    "nats_log_creds",
    "nats_inbox_prefix",
)

Call = Callable[[FlowsClient, argparse.Namespace], Awaitable[Reply]]
Show = Callable[[Reply, argparse.Namespace], str]


def main(argv: list[str] | None = None) -> int:
    # `kill -USR1 <pid>` prints where every thread of a `flows` process is, for one that hangs.
    # It needs the process's real stderr (a file descriptor); without one, no dumps.
    with contextlib.suppress(OSError, ValueError):
        faulthandler.register(signal.SIGUSR1, file=sys.__stderr__ or sys.stderr, all_threads=True)
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error (1, see _Parser.error)
        return exc.code if isinstance(exc.code, int) else EXIT_DOMAIN
    flags = {
        name: getattr(args, name, None)
        for name in (*SETTING_FLAGS, *NATS_SECURITY_FLAGS, "metrics_addr", "workers")
    }
    try:
        settings = Settings.from_env().with_overrides(**flags)
    except ValueError as exc:  # a FLOWS_* variable or flag that is not a valid setting
        return _fail(str(exc), EXIT_DOMAIN)
    try:
        if args.local is not None:
            return cast(int, args.local(settings, args))
        return asyncio.run(_remote(settings, args))
    except FlowsClientError as exc:
        return _fail(str(exc), EXIT_UNREACHABLE)
    except KeyboardInterrupt:
        return 130


def exit_code(reply: Reply) -> int:
    if reply.ok:
        return EXIT_OK
    return EXIT_UNREACHABLE if reply.status >= 500 else EXIT_DOMAIN


def parse_label(text: str) -> tuple[str, Label]:
    """`KEY=VALUE`; VALUE is a bool, int or float when it reads as one in JSON, else a string."""
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        value = jsoncodec.loads(raw.encode())
    except ValueError:
        return key, raw
    return key, value if isinstance(value, bool | int | float) else raw


async def _remote(settings: Settings, args: argparse.Namespace) -> int:
    try:
        client = await FlowsClient.connect(settings)
    except ValueError as exc:  # an unusable --subject-prefix
        return _fail(str(exc), EXIT_DOMAIN)
    async with client:
        reply = await args.call(client, args)
    code = exit_code(reply)
    if getattr(args, "json", False):
        if reply.body is not None:
            print(render.json_text(reply.body))
    elif code == EXIT_OK:
        print(args.show(reply, args))
    if code != EXIT_OK:
        return _fail(render.error_message(reply.status, reply.body), code)
    if args.command == "create" and reply.status == 200:
        print(f"note: a flow named {args.name!r} already existed; left unchanged", file=sys.stderr)
    if args.command == "stats" and reply.body.get("status") != "ok":
        # For scripts and health checks: the report is printed, and the exit says it is bad.
        return _fail(f"the service is {reply.body.get('status')}: see the problems above", 1)
    return code


def _fail(message: str, code: int) -> int:
    print(f"flows: {message}", file=sys.stderr)
    return code


def _flow_filter(args: argparse.Namespace) -> Filters:
    flows: dict[str, Any] = {}
    if args.name_like is not None:
        flows["name"] = {"like_": args.name_like}
    if args.tags:
        flows["tags"] = {"all_": args.tags}
    return Filters(flows=flows) if flows else Filters()


Entry = Callable[..., Coroutine[Any, Any, int]]


def _local(
    load: Callable[[], Entry], *, to_stdout: bool = False, options: tuple[str, ...] = ()
) -> Callable[[Settings, argparse.Namespace], int]:
    """A subcommand run in-process. `load` imports its module only when it runs, so that
    `flows get` does not pay for the service's imports; `options` name the parsed flags passed
    on as keyword arguments."""

    def run(settings: Settings, args: argparse.Namespace) -> int:
        entry = load()
        extra = (sys.stdout,) if to_stdout else ()
        keywords = {name: getattr(args, name) for name in options}
        return asyncio.run(entry(settings, *extra, **keywords))

    return run


# The subcommands' entry points, each imported when its subcommand runs (see `_local`).
def _serve() -> Entry:
    from services.serve import before_run, serve

    before_run()  # installs uvloop before the loop starts
    return serve


def _replay() -> Entry:
    from services.log_tools import replay

    return replay


def _rebuild() -> Entry:
    from services.log_tools import rebuild

    return rebuild


def _verify() -> Entry:
    from services.verify_tool import verify

    return verify


def _asyncapi() -> Entry:
    from services.asyncapi import print_document

    return print_document


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_DOMAIN, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    # Global flags are accepted before or after the subcommand (`flows --json ls`, `flows ls
    # --json`); SUPPRESS keeps a subcommand's absent flag from hiding the one given before it.
    parser = _Parser(prog="flows", description="Prefect flows over NATS.", parents=[_globals()])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(
        name: str, help_: str, call: Call | None = None, show: Show | None = None
    ) -> argparse.ArgumentParser:
        sub = commands.add_parser(
            name,
            help=help_,
            description=help_,
            epilog="The settings flags of `flows --help` are accepted here too.",
            parents=[_globals(in_subcommand=True)],
        )
        sub.set_defaults(call=call, show=show, local=None)
        return sub

    sub = command("create", "create a flow (or get the one with that name)", _create, _record)
    sub.add_argument("name", metavar="NAME")
    sub.add_argument(
        "--tag", dest="tags", action="append", default=[], metavar="T", help="repeatable"
    )
    sub.add_argument(
        "--label",
        dest="labels",
        action="append",
        default=[],
        type=parse_label,
        metavar="K=V",
        help="repeatable; V is a bool/int/float when it reads as one in JSON, else text",
    )

    sub = command("ls", "list flows", _filter, lambda r, a: render.flows_table(r.body))
    sub.add_argument("--limit", type=int)
    sub.add_argument("--offset", type=int)
    sub.add_argument("--sort", type=str.upper, choices=SORTS)
    _add_filter_flags(sub)
    _add_as_of_flag(sub)

    sub = command("count", "count flows", _count, lambda r, a: str(r.body))
    _add_filter_flags(sub)
    _add_as_of_flag(sub)

    sub = command("get", "show one flow, by id or --name", _get, _record)
    which = sub.add_mutually_exclusive_group(required=True)
    which.add_argument("id", nargs="?", metavar="ID")
    which.add_argument("--name")
    _add_as_of_flag(sub)

    sub = command("update", "replace a flow's tags", _update, lambda r, a: f"updated {a.id}")
    sub.add_argument("id", metavar="ID")
    tags = sub.add_mutually_exclusive_group()
    tags.add_argument("--tag", dest="tags", action="append", metavar="T", help="the new tags")
    tags.add_argument("--clear-tags", action="store_true", help="send tags: []")

    sub = command("delete", "delete a flow", _delete, lambda r, a: f"deleted {a.id}")
    sub.add_argument("id", metavar="ID")

    sub = command(
        "history",
        "a flow's events, oldest first",
        _history,
        lambda r, a: render.events_table(r.body),
    )
    sub.add_argument("id", metavar="ID")

    command(
        "stats", "the service's health: read-model lag and parked log messages", _stats, _stats_text
    )

    sub = command("serve", "run the service until SIGTERM/SIGINT")
    sub.add_argument(
        "--metrics-addr",
        default=argparse.SUPPRESS,
        metavar="HOST:PORT",
        help="serve Prometheus /metrics and /healthz there (overrides $FLOWS_METRICS_ADDR)",
    )
    sub.add_argument(
        "--workers",
        default=argparse.SUPPRESS,
        metavar="N",
        help="run N service processes in the queue group (overrides $FLOWS_WORKERS)",
    )
    sub.set_defaults(local=_local(_serve))
    sub = command("replay", "print the event log, one JSON event per line")
    sub.add_argument("--from", dest="start", metavar="POS|TIME", help="first position or time")
    sub.add_argument("--to", dest="end", metavar="POS|TIME", help="last position or time")
    sub.add_argument("--flow", metavar="ID", help="only this flow's events")
    sub.add_argument(
        "--type", dest="types", action="append", metavar="TYPE", help="repeatable, e.g. FlowCreated"
    )
    sub.add_argument(
        "--follow",
        "-f",
        action="store_true",
        help="then keep printing events as they are appended, until Ctrl-C (like tail -f)",
    )
    sub.set_defaults(
        local=_local(
            _replay,
            to_stdout=True,
            options=("start", "end", "flow", "types", "follow"),
        )
    )
    sub = command("asyncapi", "print the service's AsyncAPI document (JSON; --yaml for YAML)")
    sub.add_argument("--yaml", action="store_true", help="YAML instead of JSON")
    sub.set_defaults(local=_local(_asyncapi, to_stdout=True, options=("yaml",)))
    command("rebuild", "rebuild the read model from the event log").set_defaults(
        local=_local(_rebuild)
    )
    command(
        "verify",
        "check the log (no missing sequence, intact chains) and the read model against a replay",
    ).set_defaults(local=_local(_verify, to_stdout=True))
    return parser


def _globals(*, in_subcommand: bool = False) -> _Parser:
    """The settings flags and --json; a subcommand's help lists only --json."""
    flags = _Parser(add_help=False)
    for flag, variable in [
        ("--nats-url", "FLOWS_NATS_URL"),
        ("--database-url", "FLOWS_DATABASE_URL"),
        ("--subject-prefix", "FLOWS_SUBJECT_PREFIX"),
        ("--stream", "FLOWS_STREAM"),
        ("--data-dir", "FLOWS_DATA_DIR"),
    ]:
        shown = argparse.SUPPRESS if in_subcommand else f"overrides ${variable}"
        flags.add_argument(flag, default=argparse.SUPPRESS, help=shown)
    for name in NATS_SECURITY_FLAGS:
        variable = f"FLOWS_{name.upper()}"
        shown = argparse.SUPPRESS if in_subcommand else f"overrides ${variable}"
        flags.add_argument(f"--{name.replace('_', '-')}", default=argparse.SUPPRESS, help=shown)
    flags.add_argument(
        "--json", action="store_true", default=argparse.SUPPRESS, help="print the reply's JSON"
    )
    return flags


def _add_as_of_flag(sub: argparse.ArgumentParser) -> None:
    sub.add_argument(
        "--as-of",
        metavar="POS|TIME",
        help="answer as of this log position or ISO 8601 time (replays the log; slower)",
    )


class _AsOf(TypedDict, total=False):
    as_of: str


def _as_of(args: argparse.Namespace) -> _AsOf:
    """`as_of` for the client when --as-of was given (else the live model answers)."""
    return {} if args.as_of is None else {"as_of": args.as_of}


def _add_filter_flags(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("--name-like", help="name contains this (case-insensitive)")
    sub.add_argument(
        "--tag",
        dest="tags",
        action="append",
        default=[],
        metavar="T",
        help="has every one of these tags",
    )


def _record(reply: Reply, args: argparse.Namespace) -> str:
    return render.flow_record(reply.body)


async def _create(client: FlowsClient, args: argparse.Namespace) -> Reply:
    return await client.create(args.name, tags=args.tags or None, labels=dict(args.labels) or None)


async def _filter(client: FlowsClient, args: argparse.Namespace) -> Reply:
    return await client.filter(
        limit=args.limit,
        offset=args.offset,
        sort=args.sort,
        **_as_of(args),
        **_flow_filter(args),
    )


async def _count(client: FlowsClient, args: argparse.Namespace) -> Reply:
    return await client.count(**_as_of(args), **_flow_filter(args))


async def _get(client: FlowsClient, args: argparse.Namespace) -> Reply:
    if args.name is not None:
        return await client.read_by_name(args.name, **_as_of(args))
    return await client.read(args.id, **_as_of(args))


async def _update(client: FlowsClient, args: argparse.Namespace) -> Reply:
    return await client.update(args.id, tags=[] if args.clear_tags else args.tags)


async def _delete(client: FlowsClient, args: argparse.Namespace) -> Reply:
    return await client.delete(args.id)


async def _history(client: FlowsClient, args: argparse.Namespace) -> Reply:
    return await client.history(args.id)


async def _stats(client: FlowsClient, args: argparse.Namespace) -> Reply:
    return await client.request("audit.stats")


def _stats_text(reply: Reply, args: argparse.Namespace) -> str:
    body = reply.body
    keys = ("status", "position", "log_end", "lag", "projector")
    lines = [f"{key}: {body.get(key)}" for key in keys]
    lines.append(f"parked: {body.get('parked_count')}")
    lines += [
        f"  position {p['position']} on {p['subject']}: {p['reason']}" for p in body["parked"]
    ]
    lines += [f"problem: {problem}" for problem in body.get("problems", [])]
    refused = body.get("refused_requests") or {}
    if refused:
        lines.append(f"refused (reply subject not an inbox): {sum(refused.values())}")
        lines += [f"  {subject}: {count}" for subject, count in sorted(refused.items())]
    return "\n".join(lines)
