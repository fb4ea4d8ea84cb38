"""The service against real nats-servers that demand each kind of credential the settings offer:
user/password, token, NKey, a credentials file (user JWT + seed, operator mode) and mutual TLS.

Each test starts its own nats-server with a config written into the test's directory, runs the
service in-process with only the settings under test, creates and reads a flow through it with a
client that connects with the same settings, and checks that the server really refuses a client
without those credentials (so a server left open by mistake fails the test).
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import os
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import nkeys
import pytest
import trustme

from services.app import create_app
from services.client import FlowsClient
from services.embedded import EmbeddedNats
from services.nats_connection import NatsRefused, connect_nats
from services.settings import Settings

PASSWORD = "pw-" + uuid.uuid4().hex
TOKEN = "tok-" + uuid.uuid4().hex


@dataclasses.dataclass
class Secured:
    """A running nats-server that demands credentials, and the settings that carry them."""

    server: EmbeddedNats
    settings: Settings


# -- servers -----------------------------------------------------------------------------------
@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[Callable[[str], EmbeddedNats]]:
    """Start a nats-server with the given config text (JetStream on, a free loopback port)."""
    servers: list[EmbeddedNats] = []

    def start(config: str) -> EmbeddedNats:
        path = tmp_path / f"nats-{len(servers)}.conf"
        path.write_text(config)
        server = EmbeddedNats(tmp_path / f"nats-{len(servers)}", config=path)
        servers.append(server)
        server.start()
        return server

    yield start
    for server in servers:
        server.stop()


def base_settings(url: str, tmp_path: Path, **auth: Any) -> Settings:
    tag = uuid.uuid4().hex[:10]
    return Settings(
        nats_url=url,
        nats_url_explicit=True,
        subject_prefix=f"s{tag}",
        stream=f"S{tag}",
        data_dir=tmp_path / "data",
        **auth,
    )


# -- credentials for each mode ----------------------------------------------------------------
def new_key(prefix: int) -> nkeys.KeyPair:
    return nkeys.from_seed(nkeys.encode_seed(os.urandom(32), prefix))


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def signed_jwt(signer: nkeys.KeyPair, subject: str, name: str, claims: dict[str, Any]) -> str:
    """A NATS JWT (what `nsc` writes): `subject`'s claims, signed by `signer`'s NKey."""
    import orjson

    body: dict[str, Any] = {
        "iat": int(time.time()),
        "iss": signer.public_key.decode(),
        "name": name,
        "sub": subject,
        "nats": {"version": 2, **claims},
    }
    body["jti"] = base64.b32encode(hashlib.sha256(orjson.dumps(body)).digest()).decode()
    head = _b64(orjson.dumps({"typ": "JWT", "alg": "ed25519-nkey"}))
    payload = _b64(orjson.dumps(body))
    signature = _b64(signer.sign(f"{head}.{payload}".encode()))
    return f"{head}.{payload}.{signature}"


def operator_mode(tmp_path: Path) -> tuple[str, Path]:
    """A decentralised-auth server config (operator, system account, one account with JetStream)
    and a credentials file of a user of that account, built with nkeys alone (no `nsc`)."""
    operator = new_key(nkeys.PREFIX_BYTE_OPERATOR)
    system = new_key(nkeys.PREFIX_BYTE_ACCOUNT)
    account = new_key(nkeys.PREFIX_BYTE_ACCOUNT)
    user = new_key(nkeys.PREFIX_BYTE_USER)
    # -1 is "no limit"; unlimited disk and memory storage switch JetStream on for the account.
    limits = ["subs", "data", "payload", "imports", "exports", "conn", "leaf"]
    limits += ["mem_storage", "disk_storage", "streams", "consumer"]
    unlimited = dict.fromkeys(limits, -1)
    operator_jwt = signed_jwt(operator, operator.public_key.decode(), "op", {"type": "operator"})
    system_jwt = signed_jwt(operator, system.public_key.decode(), "SYS", {"type": "account"})
    account_jwt = signed_jwt(
        operator,
        account.public_key.decode(),
        "FLOWS",
        {"type": "account", "limits": {**unlimited, "wildcards": True}},
    )
    user_jwt = signed_jwt(
        account,
        user.public_key.decode(),
        "flows-service",
        {"type": "user", "pub": {}, "sub": {}, "subs": -1, "data": -1, "payload": -1},
    )
    config = (
        f'operator: "{operator_jwt}"\n'
        f"system_account: {system.public_key.decode()}\n"
        "resolver: MEMORY\n"
        "resolver_preload: {\n"
        f'  {account.public_key.decode()}: "{account_jwt}"\n'
        f'  {system.public_key.decode()}: "{system_jwt}"\n'
        "}\n"
    )
    creds = tmp_path / "flows-service.creds"
    creds.write_text(
        "-----BEGIN NATS USER JWT-----\n"
        f"{user_jwt}\n"
        "------END NATS USER JWT------\n\n"
        "-----BEGIN USER NKEY SEED-----\n"
        f"{user.seed.decode()}\n"
        "------END USER NKEY SEED------\n"
    )
    return config, creds


@pytest.fixture(params=["user_password", "token", "nkey", "creds", "mutual_tls"])
def secured(
    request: pytest.FixtureRequest,
    start_server: Callable[[str], EmbeddedNats],
    tmp_path: Path,
) -> Secured:
    mode: str = request.param
    if mode == "user_password":
        server = start_server(
            f'authorization {{ user: "flows-service", password: "{PASSWORD}" }}\n'
        )
        auth: dict[str, Any] = {"nats_user": "flows-service", "nats_password": PASSWORD}
        return Secured(server, base_settings(server.url, tmp_path, **auth))
    if mode == "token":
        server = start_server(f'authorization {{ token: "{TOKEN}" }}\n')
        return Secured(server, base_settings(server.url, tmp_path, nats_token=TOKEN))
    if mode == "nkey":
        user = new_key(nkeys.PREFIX_BYTE_USER)
        seed = tmp_path / "flows-service.nk"
        seed.write_bytes(user.seed)
        server = start_server(
            f"authorization {{ users: [ {{ nkey: {user.public_key.decode()} }} ] }}\n"
        )
        return Secured(server, base_settings(server.url, tmp_path, nats_nkey_seed=seed))
    if mode == "creds":
        config, creds = operator_mode(tmp_path)
        server = start_server(config)
        return Secured(server, base_settings(server.url, tmp_path, nats_creds=creds))
    assert mode == "mutual_tls"
    ca = trustme.CA()
    pem = tmp_path / "pem"
    pem.mkdir()
    ca.cert_pem.write_to_path(str(pem / "ca.pem"))
    server_cert = ca.issue_cert("127.0.0.1", "localhost")
    server_cert.private_key_and_cert_chain_pem.write_to_path(str(pem / "server.pem"))
    client_cert = ca.issue_cert("flows-service")
    client_cert.cert_chain_pems[0].write_to_path(str(pem / "client.pem"))
    client_cert.private_key_pem.write_to_path(str(pem / "client.key"))
    server = start_server(
        "tls {\n"
        f"  cert_file: {str(pem / 'server.pem')!r}\n"
        f"  key_file: {str(pem / 'server.pem')!r}\n"
        f"  ca_file: {str(pem / 'ca.pem')!r}\n"
        "  verify: true\n"  # a client without a certificate of this CA is refused
        "}\n"
    )
    tls = {
        "nats_tls_ca": pem / "ca.pem",
        "nats_tls_cert": pem / "client.pem",
        "nats_tls_key": pem / "client.key",
    }
    url = server.url.replace("nats://", "tls://")
    return Secured(server, base_settings(url, tmp_path, **tls))


@pytest.fixture
async def secured_service(secured: Secured) -> AsyncIterator[Settings]:
    app = create_app(secured.settings)
    try:
        await app.start()
        yield secured.settings
    finally:
        await app.stop()


# -- tests -------------------------------------------------------------------------------------
async def test_the_service_creates_and_reads_flows_with_each_kind_of_credential(
    secured_service: Settings,
) -> None:
    nc = await connect_nats(secured_service, "security-test-client", retry=False)
    try:
        client = FlowsClient(nc, secured_service.subject_prefix)
        created = await client.create("secured-flow", tags=["auth"])
        assert created.status == 201, created
        read = await client.read(created.body["id"])
        assert read.status == 200, read
        assert read.body["name"] == "secured-flow"
        assert read.body["tags"] == ["auth"]
    finally:
        await nc.close()


async def test_the_server_refuses_a_client_without_the_credentials(secured: Secured) -> None:
    """The same server, the same URL, no credentials (for TLS: the CA, but no client
    certificate): the server must refuse, or the test above proved nothing."""
    bare = dataclasses.replace(
        secured.settings,
        nats_user=None,
        nats_password=None,
        nats_token=None,
        nats_nkey_seed=None,
        nats_creds=None,
        nats_tls_cert=None,
        nats_tls_key=None,
    )
    if secured.settings.nats_tls_cert is not None:
        # The server ends the TLS session of a client without a certificate: the client reads
        # the TLS alert (certificate required), or, if the socket closed first, meets a reset
        # or a broken pipe, whichever way the race goes (all ConnectionErrors). An open server
        # would let the connection through and fail the test.
        with pytest.raises((NatsRefused, ConnectionResetError, BrokenPipeError)):
            await connect_nats(bare, "security-test-bare", retry=False)
        return
    with pytest.raises(NatsRefused) as refused:
        nc = await connect_nats(bare, "security-test-bare", retry=False)
        await nc.close()
    assert "refused the connection security-test-bare" in str(refused.value)
    assert "Authorization Violation" in str(refused.value)


@pytest.mark.parametrize("secured", ["mutual_tls"], indirect=True)
async def test_a_server_certificate_from_another_ca_is_refused(
    secured: Secured, tmp_path: Path
) -> None:
    """The client checks the server too: trusting only another CA, it refuses at once, even
    as the service (which would otherwise retry forever)."""
    stranger = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(stranger))
    distrusting = dataclasses.replace(secured.settings, nats_tls_ca=stranger)
    with pytest.raises(NatsRefused) as refused:
        await connect_nats(distrusting, "security-test-distrusting", retry=True)
    assert "CERTIFICATE_VERIFY_FAILED" in str(refused.value)
