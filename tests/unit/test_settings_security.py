"""Settings for NATS authentication and TLS: read from the environment and flags, checked for
combinations that cannot work, and never printed with their secrets."""

from __future__ import annotations

from pathlib import Path

import pytest

from services import cli
from services.settings import Settings, redact_url


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    made = {}
    for name in ("seed.nk", "user.creds", "ca.pem", "client.pem", "client.key"):
        made[name] = tmp_path / name
        made[name].write_text("x")
    return made


def test_every_security_setting_is_read_from_its_variable(files: dict[str, Path]) -> None:
    settings = Settings.from_env(
        {
            "FLOWS_NATS_USER": "svc",
            "FLOWS_NATS_PASSWORD": "pw",
            "FLOWS_NATS_TLS_CA": str(files["ca.pem"]),
            "FLOWS_NATS_TLS_CERT": str(files["client.pem"]),
            "FLOWS_NATS_TLS_KEY": str(files["client.key"]),
            "FLOWS_NATS_TLS_HOSTNAME": "nats.internal",
        }
    )
    assert (settings.nats_user, settings.nats_password) == ("svc", "pw")
    assert settings.nats_tls_ca == files["ca.pem"]
    assert settings.nats_tls_cert == files["client.pem"]
    assert settings.nats_tls_key == files["client.key"]
    assert settings.nats_tls_hostname == "nats.internal"
    assert Settings.from_env({"FLOWS_NATS_TOKEN": "t"}).nats_token == "t"
    seed = Settings.from_env({"FLOWS_NATS_NKEY_SEED": str(files["seed.nk"])})
    assert seed.nats_nkey_seed == files["seed.nk"]
    creds = Settings.from_env({"FLOWS_NATS_CREDS": str(files["user.creds"])})
    assert creds.nats_creds == files["user.creds"]


def test_a_file_setting_must_name_a_file(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.creds"
    with pytest.raises(ValueError, match="FLOWS_NATS_CREDS / --nats-creds: no file at") as error:
        Settings.from_env({"FLOWS_NATS_CREDS": str(missing)})
    assert str(missing) in str(error.value)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"nats_user": "svc"}, "NATS user and password go together"),
        ({"nats_password": "pw"}, "NATS user and password go together"),
        ({"nats_user": "svc", "nats_password": "pw", "nats_token": "t"}, "more than one way"),
        ({"nats_token": "t", "nats_url": "nats://u:p@host:4222"}, "more than one way"),
        ({"nats_tls_cert": Path("c.pem")}, "needs its key"),
        ({"nats_tls_key": Path("c.key")}, "needs its key"),
    ],
)
def test_combinations_that_cannot_work_are_refused(values: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Settings(**values)  # type: ignore[arg-type]


def test_the_refusal_names_every_way_authentication_was_set() -> None:
    with pytest.raises(ValueError) as error:
        Settings(nats_token="t", nats_creds=Path("u.creds"))
    assert "FLOWS_NATS_TOKEN / --nats-token" in str(error.value)
    assert "FLOWS_NATS_CREDS / --nats-creds" in str(error.value)
    assert "'t'" not in str(error.value)


def test_repr_never_shows_a_secret() -> None:
    settings = Settings(
        nats_url="nats://127.0.0.1:4222",
        database_url="postgresql+asyncpg://flows:db-secret@db:5432/flows",
        nats_user="svc",
        nats_password="pw-secret",
    )
    shown = repr(settings)
    assert "pw-secret" not in shown
    assert "db-secret" not in shown
    assert "nats_password='***'" in shown
    assert "nats_user='svc'" in shown
    token = repr(Settings(nats_token="tok-secret"))
    assert "tok-secret" not in token
    in_url = repr(Settings(nats_url="nats://svc:url-secret@host:4222"))
    assert "url-secret" not in in_url
    assert "nats://***@host:4222" in in_url


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("nats://svc:pw@host:4222", "nats://***@host:4222"),
        ("tls://a-token@host:4443", "tls://***@host:4443"),
        ("nats://host:4222", "nats://host:4222"),
        ("postgresql+asyncpg://u:p@db/flows", "postgresql+asyncpg://***@db/flows"),
    ],
)
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_cli_flags_set_the_security_settings(files: dict[str, Path]) -> None:
    args = cli.build_parser().parse_args(
        [
            "--nats-user",
            "svc",
            "--nats-password",
            "pw",
            "ls",
            "--nats-tls-ca",
            str(files["ca.pem"]),
        ]
    )
    flags = {
        name: getattr(args, name, None) for name in cli.SETTING_FLAGS + cli.NATS_SECURITY_FLAGS
    }
    settings = Settings.from_env({}).with_overrides(**flags)
    assert (settings.nats_user, settings.nats_password) == ("svc", "pw")
    assert settings.nats_tls_ca == files["ca.pem"]


def test_the_cli_refuses_an_unusable_combination_without_printing_the_secret(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLOWS_NATS_TOKEN", "tok-secret")
    code = cli.main(["--nats-user", "svc", "--nats-password", "pw-secret", "ls"])
    err = capsys.readouterr().err
    assert code == cli.EXIT_DOMAIN
    assert "more than one way" in err
    assert "tok-secret" not in err
    assert "pw-secret" not in err
