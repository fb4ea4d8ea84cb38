"""The one builder of NATS connect options: what nats-py receives for each setting, and the same
values handed to FastStream's broker."""

from __future__ import annotations

import ssl
from pathlib import Path
from urllib.parse import urlparse

import pytest
import trustme
from faststream.nats.security import (
    NatsCredentials,
    NatsNKey,
    NatsSecurity,
    NatsToken,
    NatsUserPassword,
)
from nats.aio.client import Server as NatsServer

from services.nats_options import ServerChoice, broker_security, connect_options, inbox_prefix
from services.settings import Settings


@pytest.fixture
def pem(tmp_path: Path) -> dict[str, Path]:
    ca = trustme.CA()
    cert = ca.issue_cert("flows-service")
    paths = {"ca": tmp_path / "ca.pem", "cert": tmp_path / "c.pem", "key": tmp_path / "c.key"}
    ca.cert_pem.write_to_path(str(paths["ca"]))
    cert.cert_chain_pems[0].write_to_path(str(paths["cert"]))
    cert.private_key_pem.write_to_path(str(paths["key"]))
    return paths


def test_an_open_server_needs_no_options() -> None:
    assert connect_options(Settings()) == {}
    assert broker_security(Settings()) is None


def test_user_and_password() -> None:
    settings = Settings(nats_user="svc", nats_password="pw")
    # A named user reads its replies on its own inbox prefix.
    assert connect_options(settings) == {
        "user": "svc",
        "password": "pw",
        "inbox_prefix": "_INBOX.svc",
    }
    security = broker_security(settings)
    assert isinstance(security, NatsUserPassword)
    assert (security.username, security.password) == ("svc", "pw")


def test_token() -> None:
    settings = Settings(nats_token="tok")
    assert connect_options(settings) == {"token": "tok"}
    security = broker_security(settings)
    assert isinstance(security, NatsToken)
    assert security.token == "tok"


def test_nkey_seed_file(tmp_path: Path) -> None:
    settings = Settings(nats_nkey_seed=tmp_path / "svc.nk")
    assert connect_options(settings) == {"nkeys_seed": str(tmp_path / "svc.nk")}
    security = broker_security(settings)
    assert isinstance(security, NatsNKey)
    assert (security.seed, security.seed_is_file) == (str(tmp_path / "svc.nk"), True)


def test_credentials_file(tmp_path: Path) -> None:
    settings = Settings(nats_creds=tmp_path / "svc.creds")
    assert connect_options(settings) == {"user_credentials": str(tmp_path / "svc.creds")}
    security = broker_security(settings)
    assert isinstance(security, NatsCredentials)
    assert security.credentials == str(tmp_path / "svc.creds")


def test_tls_with_a_ca_and_a_client_certificate(pem: dict[str, Path]) -> None:
    settings = Settings(
        nats_tls_ca=pem["ca"],
        nats_tls_cert=pem["cert"],
        nats_tls_key=pem["key"],
        nats_tls_hostname="nats.internal",
    )
    options = connect_options(settings)
    context = options["tls"]
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname
    assert len(context.get_ca_certs()) == 1  # the configured CA, not the system's
    assert options["tls_hostname"] == "nats.internal"
    security = broker_security(settings)
    assert type(security) is NatsSecurity
    assert isinstance(security.ssl_context, ssl.SSLContext)
    assert security.tls_hostname == "nats.internal"


def test_tls_goes_with_any_credential(pem: dict[str, Path]) -> None:
    security = broker_security(Settings(nats_token="tok", nats_tls_ca=pem["ca"]))
    assert isinstance(security, NatsToken)
    assert isinstance(security.ssl_context, ssl.SSLContext)


def test_a_file_that_is_not_pem_is_refused_with_its_setting(tmp_path: Path) -> None:
    broken = tmp_path / "ca.pem"
    broken.write_text("not a certificate")
    with pytest.raises(ValueError, match="FLOWS_NATS_TLS_CA") as error:
        connect_options(Settings(nats_tls_ca=broken))
    assert str(broken) in str(error.value)


class TestTwoRoles:
    """The connection that answers requests and the one that owns the log may sign in as two
    users (deploy/nats/nats-server.conf); each reads replies on its own inbox prefix."""

    def test_the_log_uses_its_own_credentials_when_given(self) -> None:
        settings = Settings(
            nats_user="flows-service",
            nats_password="a",
            nats_log_user="flows-log",
            nats_log_password="b",
        )
        assert connect_options(settings, "log") == {
            "user": "flows-log",
            "password": "b",
            "inbox_prefix": "_INBOX.flows-log",
        }
        assert connect_options(settings, "requests") == {
            "user": "flows-service",
            "password": "a",
            "inbox_prefix": "_INBOX.flows-service",
        }

    def test_without_its_own_the_log_uses_the_main_credentials(self) -> None:
        settings = Settings(nats_token="tok")
        assert connect_options(settings, "log") == connect_options(settings) == {"token": "tok"}

    def test_the_log_may_use_a_credentials_file_of_its_own(self, tmp_path: Path) -> None:
        creds = tmp_path / "log.creds"
        creds.write_text("-----BEGIN NATS USER JWT-----\n")
        settings = Settings.from_env(
            {"FLOWS_NATS_USER": "svc", "FLOWS_NATS_PASSWORD": "pw", "FLOWS_NATS_LOG_CREDS": str(creds)}
        )
        assert connect_options(settings, "log") == {"user_credentials": str(creds)}

    def test_an_explicit_inbox_prefix_wins_for_the_main_credentials(self) -> None:
        settings = Settings(nats_user="svc", nats_password="pw", nats_inbox_prefix="_INBOX.app7")
        assert inbox_prefix(settings) == "_INBOX.app7"
        assert connect_options(settings)["inbox_prefix"] == "_INBOX.app7"

    @pytest.mark.parametrize("user", ["a.b", "two words", "x*", "y>"])
    def test_a_user_name_that_is_no_subject_token_keeps_the_shared_inbox(self, user: str) -> None:
        settings = Settings(nats_user=user, nats_password="pw")
        assert "inbox_prefix" not in connect_options(settings)

    def test_log_credentials_are_checked_like_the_main_ones(self) -> None:
        with pytest.raises(ValueError, match="FLOWS_NATS_LOG_PASSWORD"):
            Settings(nats_log_user="flows-log")
        with pytest.raises(ValueError, match="more than one way"):
            Settings(nats_log_user="flows-log", nats_log_password="x", nats_log_token="t")

    def test_log_secrets_stay_out_of_the_repr(self) -> None:
        settings = Settings(nats_log_user="flows-log", nats_log_password="s3cret", nats_log_token=None)
        assert "s3cret" not in repr(settings)


class TestServerChoice:
    """After a lost connection the other servers are tried first: a hung one accepts TCP in its
    kernel and costs a whole connect timeout."""

    @staticmethod
    def pool(*reconnects: int) -> list[NatsServer]:
        return [
            NatsServer(uri=urlparse(f"nats://127.0.0.1:{4222 + n}"), reconnects=r)
            for n, r in enumerate(reconnects)
        ]

    @staticmethod
    def choice_on(server: NatsServer) -> ServerChoice:
        choice = ServerChoice(reconnect_time_wait_s=0.5)

        class Connected:
            connected_url = server.uri

        choice.connected_to(Connected())  # type: ignore[arg-type]
        return choice

    def test_the_lost_server_is_never_tried_first(self) -> None:
        servers = self.pool(0, 0, 0)
        choice = self.choice_on(servers[0])
        picked = {choice(servers, {})[0].uri.port for _ in range(200)}  # type: ignore[union-attr]
        assert picked == {4223, 4224}  # both others, at random: instances spread

    def test_once_the_others_failed_the_lost_one_is_tried_too_after_a_wait(self) -> None:
        servers = self.pool(0, 1, 1)
        choice = self.choice_on(servers[0])
        ports = {choice(servers, {})[0].uri.port for _ in range(200)}  # type: ignore[union-attr]
        assert ports == {4222, 4223, 4224}
        servers = self.pool(1, 1, 1)
        chosen, wait = choice(servers, {})
        assert chosen is not None and wait == 0.5

    def test_a_server_never_tried_is_asked_at_once(self) -> None:
        servers = self.pool(0, 0)
        choice = self.choice_on(servers[1])
        assert choice(servers, {}) == (servers[0], 0.0)
