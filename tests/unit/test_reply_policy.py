"""Where the service may answer (services/reply_policy.py), and the settings that shape it."""

from __future__ import annotations

import logging

import pytest

from events.contract.subjects import Subjects
from services.reply_policy import RefusedReplies, ReplyPolicy
from services.settings import Settings

POLICY = ReplyPolicy(Subjects("flows"), ("_INBOX.",))


@pytest.mark.parametrize(
    "reply",
    ["_INBOX.abc", "_INBOX.flows-client.xyz.1", "_INBOX.a.b.c", ""],
)
def test_inboxes_and_no_reply_are_allowed(reply: str) -> None:
    assert POLICY.refusal(reply) is None


@pytest.mark.parametrize(
    ("reply", "why"),
    [
        ("flows.events.0aa9d71d-1625-43f2-84f9-824e303066ee", "own log or request"),
        ("flows.names.abc", "own log or request"),
        ("flows.replies.abc", "own log or request"),
        ("flows.cmd.create", "own log or request"),
        ("flows.query.read", "own log or request"),
        ("flows.audit.history", "own log or request"),
        ("$JS.API.CONSUMER.DELETE.FLOWS.x", "`$` subject"),
        ("$JS.API.STREAM.DELETE.FLOWS", "`$` subject"),
        ("$SYS.REQ.SERVER.PING", "`$` subject"),
        ("$KV.bucket.key", "`$` subject"),
        ("other.app.subject", "reply prefix"),
        ("_INBOXES.x", "reply prefix"),
        ("_INBOX", "reply prefix"),
        ("_INBOX.*", "not a subject one can publish to"),
        ("_INBOX.>", "not a subject one can publish to"),
        ("_INBOX..x", "not a subject one can publish to"),
        ("_INBOX.x.", "not a subject one can publish to"),
        ("_INBOX.a b", "not a subject one can publish to"),
    ],
)
def test_everything_else_is_refused_with_a_reason(reply: str, why: str) -> None:
    refusal = POLICY.refusal(reply)
    assert refusal is not None
    assert why in refusal


def test_the_own_subjects_stay_refused_whatever_the_prefixes_say() -> None:
    # Settings refuse such a prefix (below); the policy holds even if one slipped through.
    wide = ReplyPolicy(Subjects("flows"), ("flows.", "$JS.", "_INBOX."))
    assert wide.refusal("flows.events.x") is not None
    assert wide.refusal("$JS.API.INFO") is not None
    assert wide.refusal("flows.other.x") is None


@pytest.mark.parametrize("prefix", ["flows.", "flows.events.", "flows.cmd.x", "$JS.", "", "f"])
def test_settings_refuse_reply_prefixes_that_reach_the_services_own_subjects(prefix: str) -> None:
    with pytest.raises(ValueError, match="FLOWS_REPLY_PREFIXES"):
        Settings(reply_prefixes=("_INBOX.", prefix))


def test_reply_prefixes_come_from_a_comma_separated_variable() -> None:
    settings = Settings.from_env({"FLOWS_REPLY_PREFIXES": "_INBOX., _R_. ,"})
    assert settings.reply_prefixes == ("_INBOX.", "_R_.")
    assert ReplyPolicy(Subjects("flows"), settings.reply_prefixes).refusal("_R_.abc") is None


def test_refusals_are_counted_each_but_logged_once_per_interval(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [0.0]
    refused = RefusedReplies(interval_s=10.0, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="services.reply_policy"):
        for _ in range(1000):
            refused.record("flows.query.read", "flows.events.x", "why", None)
        now[0] = 11.0
        refused.record("flows.cmd.create", "$JS.API.INFO", "why", None)
    assert refused.total == 1001
    assert refused.by_subject == {"flows.query.read": 1000, "flows.cmd.create": 1}
    lines = [record.getMessage() for record in caplog.records]
    assert len(lines) == 2
    assert "flows.events.x" in lines[0]
    assert "999 more refused since the last such line" in lines[1]


def test_the_log_line_names_the_sender_when_nats_does(caplog: pytest.LogCaptureFixture) -> None:
    refused = RefusedReplies()
    info = '{"acc":"CLIENTS","user":"mallory","name":"probe-7","host":"127.0.0.1"}'
    with caplog.at_level(logging.WARNING, logger="services.reply_policy"):
        refused.record("flows.query.read", "flows.events.x", "why", {"Nats-Request-Info": info})
    assert "user='mallory'" in caplog.text
    assert "name='probe-7'" in caplog.text
