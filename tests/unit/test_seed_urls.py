"""FLOWS_NATS_URL as a seed list (issue 13): split, checked when read, redacted in every URL,
and accepted by the CLI's flag and variable alike (no sockets)."""

from __future__ import annotations

import pytest

from services.cli import main
from services.embedded import nats_answers
from services.seeds import seed_urls
from services.settings import Settings, redact_url

SEEDS = "nats://127.0.0.1:4001,nats://127.0.0.1:4002,nats://127.0.0.1:4003"


def test_a_seed_list_is_split_in_order_without_blanks() -> None:
    assert seed_urls(" nats://a:1 , tls://b:2,, ") == ["nats://a:1", "tls://b:2"]
    assert seed_urls("nats://a:1") == ["nats://a:1"]


def test_a_seed_list_is_a_valid_setting_from_the_environment() -> None:
    settings = Settings.from_env({"FLOWS_NATS_URL": SEEDS})
    assert seed_urls(settings.nats_url) == SEEDS.split(",")
    assert settings.nats_url_explicit


@pytest.mark.parametrize(
    ("url", "message"),
    [
        (
            "nats://127.0.0.1:4001,nats://127.0.0.1:abc",
            "seed 2 of 2 (nats://127.0.0.1:...) has a port",
        ),
        ("nats://127.0.0.1:4001,127.0.0.1:4002", "seed 2 of 2 is not a URL of the form"),
        ("nats://:4222", "names no host"),
        ("nats://a:1,ws://b:2", "mixes websocket"),
        (" , ", "is empty"),
    ],
)
def test_a_malformed_seed_is_refused_naming_it(url: str, message: str) -> None:
    with pytest.raises(ValueError, match="FLOWS_NATS_URL / --nats-url") as error:
        Settings(nats_url=url)
    assert message in str(error.value)


def test_a_refused_seed_never_shows_a_password_or_the_tail_of_one() -> None:
    # An unescaped comma in a password splits it across two "seeds".
    with pytest.raises(ValueError) as error:
        Settings(nats_url="nats://svc:first,half@host:4222")
    assert "first" not in str(error.value) and "half" not in str(error.value)
    assert "%2C" in str(error.value)
    with pytest.raises(ValueError) as error:
        Settings(nats_url="nats://svc:secret@host:port")
    assert "secret" not in str(error.value)
    assert "(nats://host:...) has a port" in str(error.value)


def test_every_url_of_a_list_is_redacted() -> None:
    listed = "nats://svc:pw1@a:4001,nats://b:4002,tls://tok@c:4003"
    assert redact_url(listed) == "nats://***@a:4001,nats://b:4002,tls://***@c:4003"
    shown = repr(Settings(nats_url=listed.replace("tls://tok@", "nats://svc:pw2@")))
    assert "pw1" not in shown and "pw2" not in shown
    assert "nats://***@a:4001,nats://b:4002,nats://***@c:4003" in shown


def test_credentials_in_any_seed_conflict_with_another_way_of_signing_in() -> None:
    with pytest.raises(ValueError, match="more than one way"):
        Settings(nats_url="nats://a:4001,nats://svc:pw@b:4002", nats_token="t")


def test_nats_answers_a_seed_list_without_raising() -> None:
    # The crash of issue 13: urlparse of the whole list had no integer port. Port 1 on
    # loopback refuses connections (nothing unprivileged listens there).
    assert not nats_answers("nats://127.0.0.1:1,nats://127.0.0.1:1")


def test_startup_timeout_is_read_from_its_variable() -> None:
    assert Settings().startup_timeout_s == 60.0
    assert Settings.from_env({"FLOWS_STARTUP_TIMEOUT_S": "2.5"}).startup_timeout_s == 2.5
    with pytest.raises(ValueError, match="startup_timeout_s must be a number"):
        Settings.from_env({"FLOWS_STARTUP_TIMEOUT_S": "soon"})


class TestCli:
    def test_a_malformed_seed_list_exits_1_with_the_reason(
        self, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        monkeypatch.setenv("FLOWS_NATS_URL", "nats://127.0.0.1:4001,nats://127.0.0.1:x")
        assert main(["serve"]) == 1
        err = capsys.readouterr().err
        assert "seed 2 of 2 (nats://127.0.0.1:...) has a port that is not a number" in err
        assert "Traceback" not in err
