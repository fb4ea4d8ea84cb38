"""Settings of the flows service: environment variables, overridden by command-line flags.

Built once by the composition root (`flows serve`, the CLI, tests) and passed down; nothing
reads the environment anywhere else.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from urllib.parse import urlsplit

from services.seeds import check_seed_urls, hide_credentials, seed_urls

__all__ = ["DEFAULT_NATS_URL", "Settings", "redact_url"]

DEFAULT_NATS_URL = "nats://127.0.0.1:4222"

# (attribute, environment variable) for every setting the contract names, plus operational knobs.
# Each setting's command-line flag is its attribute with dashes: nats_tls_ca is --nats-tls-ca.
_ENVIRONMENT = {
    "nats_url": "FLOWS_NATS_URL",
    "database_url": "FLOWS_DATABASE_URL",
    "subject_prefix": "FLOWS_SUBJECT_PREFIX",
    "stream": "FLOWS_STREAM",
    "data_dir": "FLOWS_DATA_DIR",
    "stream_replicas": "FLOWS_STREAM_REPLICAS",
    "duplicate_window_s": "FLOWS_DUPLICATE_WINDOW_S",
    "default_limit": "FLOWS_DEFAULT_LIMIT",
    "queue_group": "FLOWS_QUEUE_GROUP",
    "max_in_flight": "FLOWS_MAX_IN_FLIGHT",
    "log_level": "FLOWS_LOG_LEVEL",
    "startup_timeout_s": "FLOWS_STARTUP_TIMEOUT_S",
    # How the service proves who it is to NATS, and how it checks NATS (services/nats_options.py).
    "nats_user": "FLOWS_NATS_USER",
    "nats_password": "FLOWS_NATS_PASSWORD",
    "nats_token": "FLOWS_NATS_TOKEN",
    "nats_nkey_seed": "FLOWS_NATS_NKEY_SEED",
    "nats_creds": "FLOWS_NATS_CREDS",
    "nats_tls_ca": "FLOWS_NATS_TLS_CA",
    "nats_tls_cert": "FLOWS_NATS_TLS_CERT",
    "nats_tls_key": "FLOWS_NATS_TLS_KEY",
    "nats_tls_hostname": "FLOWS_NATS_TLS_HOSTNAME",
    # The log connection may sign in as a user of its own (the shipped permission layout's
    # `flows-log`): the only user allowed to write the stream and call its JetStream API.
    "nats_log_user": "FLOWS_NATS_LOG_USER",
    "nats_log_password": "FLOWS_NATS_LOG_PASSWORD",
    "nats_log_token": "FLOWS_NATS_LOG_TOKEN",
    "nats_log_nkey_seed": "FLOWS_NATS_LOG_NKEY_SEED",
    "nats_log_creds": "FLOWS_NATS_LOG_CREDS",
    # Where this process's own replies arrive (nats-py's inbox prefix); see inbox_prefix().
    "nats_inbox_prefix": "FLOWS_NATS_INBOX_PREFIX",
    # The subjects the service may answer on (services/reply_policy.py).
    "reply_prefixes": "FLOWS_REPLY_PREFIXES",
    "max_waiting": "FLOWS_MAX_WAITING",
    # Where to serve Prometheus metrics and /healthz (host:port); off when unset.
    "metrics_addr": "FLOWS_METRICS_ADDR",
    # What one Flows-As-Of answer may cost: log positions replayed, scratch models kept.
    "as_of_max_events": "FLOWS_AS_OF_MAX_EVENTS",
    "as_of_cached_models": "FLOWS_AS_OF_CACHED_MODELS",
    # Snapshots as-of answers replay from, and the worker process that builds them.
    "as_of_snapshot_every": "FLOWS_AS_OF_SNAPSHOT_EVERY",
    "as_of_snapshot_max_mb": "FLOWS_AS_OF_SNAPSHOT_MAX_MB",
    "as_of_worker_nice": "FLOWS_AS_OF_WORKER_NICE",
    "nats_ping_interval_s": "FLOWS_NATS_PING_INTERVAL_S",
    # Service processes `flows serve` runs in the queue group (services/workers.py).
    "workers": "FLOWS_WORKERS",
    # Shared PostgreSQL model: how often a follower tries to take over the projector
    # (projections/leadership.py).
    "leader_retry_s": "FLOWS_LEADER_RETRY_S",
}

# Settings that name a file the service reads (checked when the setting is given).
_FILES = {
    "nats_nkey_seed",
    "nats_creds",
    "nats_log_nkey_seed",
    "nats_log_creds",
    "nats_tls_ca",
    "nats_tls_cert",
    "nats_tls_key",
}
# Settings never printed: a repr or a log line shows only whether they are set.
_SECRETS = {"nats_password", "nats_token", "nats_log_password", "nats_log_token"}
# Settings that may carry a password inside a URL.
_URLS = {"nats_url", "database_url"}


def _source(attribute: str) -> str:
    """Where a person sets `attribute`: its variable and its flag."""
    return f"{_ENVIRONMENT[attribute]} / --{attribute.replace('_', '-')}"


@dataclass(frozen=True, slots=True)
class Settings:
    nats_url: str = DEFAULT_NATS_URL
    # None means the SQLite file `flows.db` in the data dir.
    database_url: str | None = None
    subject_prefix: str = "flows"
    stream: str = "FLOWS"
    data_dir: Path = field(default_factory=lambda: Path(".flows"))
    stream_replicas: int = 1
    # JetStream's own duplicate window for Nats-Msg-Id; the service's stored replies make
    # retries exact for far longer (they never expire).
    duplicate_window_s: float = 120.0
    # Prefect's PREFECT_SERVER_API_DEFAULT_LIMIT: the default and the maximum page size.
    default_limit: int = 200
    queue_group: str = "flows"
    # Requests one process works on at once (per subscription).
    max_in_flight: int = 256
    # How long a command waits for JetStream before answering 503.
    log_timeout_s: float = 5.0
    log_level: str = "INFO"
    # How long start-up waits for each dependency (NATS, JetStream's cluster, the database) to
    # become ready before giving up with exit code 3 (services/startup.py).
    startup_timeout_s: float = 60.0
    # Whether `nats_url` was given explicitly: only the default URL may fall back to an
    # embedded nats-server.
    nats_url_explicit: bool = False
    # NATS authentication: at most one of user/password, token, NKey seed file, credentials
    # file (user JWT + seed). Credentials inside nats_url (nats://user:pass@host) work too.
    nats_user: str | None = None
    nats_password: str | None = None
    nats_token: str | None = None
    nats_nkey_seed: Path | None = None
    nats_creds: Path | None = None
    # TLS: the CA that signed the server's certificate, and this client's certificate and key
    # when the server asks for one. A `tls://` URL asks for TLS with the system's CAs.
    nats_tls_ca: Path | None = None
    nats_tls_cert: Path | None = None
    nats_tls_key: Path | None = None
    # The name the server's certificate must carry, when it differs from the URL's host.
    nats_tls_hostname: str | None = None
    # The log connection's own credentials (same forms as above); unset, it uses those above.
    nats_log_user: str | None = None
    nats_log_password: str | None = None
    nats_log_token: str | None = None
    nats_log_nkey_seed: Path | None = None
    nats_log_creds: Path | None = None
    # The inbox prefix of this process's request connections (clients, the CLI); None derives
    # it from the user: `_INBOX.<user>`, the private prefix a per-user permission can grant.
    nats_inbox_prefix: str | None = None
    # Reply subjects the service answers on must start with one of these (an allow-list: see
    # services/reply_policy.py for why not a deny-list).
    reply_prefixes: tuple[str, ...] = ("_INBOX.",)
    # Queries waiting for the read model to reach a position, at once, in one process: past
    # it they answer 503 at once. Waiting requests hold no handler slot, only this.
    max_waiting: int = 10_000
    # host:port of the HTTP endpoint with /metrics and /healthz (services/metrics_server.py).
    metrics_addr: str | None = None
    # A Flows-As-Of query replays the log up to its position into a scratch model: the highest
    # position answered, and how many such models are kept for the next queries.
    as_of_max_events: int = 200_000
    as_of_cached_models: int = 3
    # As-of models are built by a worker process (started by the first as-of query) that also
    # snapshots the read model every `as_of_snapshot_every` positions (0: no snapshots) into
    # the data dir, within `as_of_snapshot_max_mb` (thinned evenly past it); it runs at this
    # much lower CPU priority (os.nice) than the service, so live requests come first.
    as_of_snapshot_every: int = 100
    as_of_snapshot_max_mb: int = 1024
    as_of_worker_nice: int = 10
    # How often the service's connections PING their server; two PINGs unanswered and the
    # connection moves to another server of the seed list. nats-py's default (120 s) leaves a
    # hung server (stopped, partitioned: its TCP connections stay open) unnoticed for minutes.
    nats_ping_interval_s: float = 2.0
    # `flows serve --workers N`: N service processes under one parent (1: the service itself).
    workers: int = 1
    # On a shared PostgreSQL read model one instance projects (it holds an advisory lock); the
    # others try to take over this often, which bounds the takeover after the leader dies, and
    # read the shared checkpoint this often in case a notification was missed.
    leader_retry_s: float = 1.0

    def __post_init__(self) -> None:
        check_seed_urls(self.nats_url, _source("nats_url"))
        _check_nats_auth(self)
        _check_nats_auth(self, log=True)
        _check_reply_prefixes(self)
        if self.workers < 1:
            raise ValueError(f"{_source('workers')}: give 1 or more, got {self.workers}")
        if not self.leader_retry_s > 0:
            raise ValueError(f"{_source('leader_retry_s')}: give seconds > 0")

    def __repr__(self) -> str:
        shown = []
        for item in fields(self):
            value = getattr(self, item.name)
            if item.name in _SECRETS and value is not None:
                value = "***"
            elif item.name in _URLS and isinstance(value, str):
                value = redact_url(value)
            shown.append(f"{item.name}={value!r}")
        return f"Settings({', '.join(shown)})"

    def environment(self) -> dict[str, str]:
        """These settings as the FLOWS_* variables that give them (for child processes:
        `flows serve --workers`); unset ones are left out."""
        found: dict[str, str] = {}
        for attribute, variable in _ENVIRONMENT.items():
            value = getattr(self, attribute)
            if value is None:
                continue
            found[variable] = ",".join(value) if isinstance(value, tuple) else str(value)
        return found

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'flows.db').resolve()}"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        values: dict[str, object] = {}
        for attribute, variable in _ENVIRONMENT.items():
            raw = env.get(variable)
            if raw is None or raw == "":
                continue
            values[attribute] = _coerce(attribute, raw)
        if "nats_url" in values:
            values["nats_url_explicit"] = True
        return cls(**values)  # type: ignore[arg-type]

    def with_overrides(self, **overrides: object) -> Settings:
        """Apply command-line flags (None means "not given")."""
        given = {k: _coerce(k, v) if isinstance(v, str) else v for k, v in overrides.items()}
        given = {k: v for k, v in given.items() if v is not None}
        if "nats_url" in given:
            given["nats_url_explicit"] = True
        return replace(self, **given)  # type: ignore[arg-type]


def redact_url(url: str) -> str:
    """A URL, or a comma-separated list of them (a NATS seed list), fit for a log line or an
    error message: any user, password or token replaced, in every URL of the list."""
    return ",".join(hide_credentials(part) for part in url.split(","))


def _check_nats_auth(settings: Settings, *, log: bool = False) -> None:
    """Refuse combinations nats-py would silently resolve one way or another (for the log
    connection's own credentials when `log`)."""
    kind = "nats_log_" if log else "nats_"
    user, password = f"{kind}user", f"{kind}password"
    if (getattr(settings, user) is None) != (getattr(settings, password) is None):
        raise ValueError(
            f"NATS user and password go together: set both {_source(user)} and "
            f"{_source(password)}, or neither"
        )
    chosen = [
        f"{kind}{name}"
        for name in ("user", "token", "nkey_seed", "creds")
        if getattr(settings, f"{kind}{name}") is not None
    ]
    if not log and any("@" in urlsplit(url).netloc for url in seed_urls(settings.nats_url)):
        chosen.append("nats_url")
    if len(chosen) > 1:
        raise ValueError(
            "NATS authentication is set more than one way ("
            + ", ".join(_source(attribute) for attribute in chosen)
            + "): keep exactly one"
        )
    if (settings.nats_tls_cert is None) != (settings.nats_tls_key is None):
        raise ValueError(
            f"a TLS client certificate needs its key: set both {_source('nats_tls_cert')} and "
            f"{_source('nats_tls_key')}, or neither"
        )


def _check_reply_prefixes(settings: Settings) -> None:
    """A reply prefix must not reach the subjects the service must never publish on: its
    stream's (the event log), its own request subjects, or any `$` subject (JetStream's API,
    the system account's)."""
    prefix = settings.subject_prefix
    protected = [f"{prefix}.{kind}." for kind in ("events", "names", "replies", "cmd", "query")]
    protected.append(f"{prefix}.audit.")
    for reply_prefix in settings.reply_prefixes:
        if (
            not reply_prefix
            or reply_prefix.startswith("$")
            or any(reply_prefix.startswith(p) or p.startswith(reply_prefix) for p in protected)
        ):
            raise ValueError(
                f"{_source('reply_prefixes')}: {reply_prefix!r} would let a request make the "
                f"service publish on its own log or request subjects ({prefix}.*) or on a `$` "
                "subject; give inbox prefixes only, such as _INBOX."
            )


def _coerce(attribute: str, raw: str) -> object:
    if attribute == "data_dir":
        return Path(raw)
    if attribute == "reply_prefixes":
        return tuple(part.strip() for part in raw.split(",") if part.strip())
    if attribute in _FILES:
        path = Path(raw).expanduser()
        if not path.is_file():
            raise ValueError(f"{_source(attribute)}: no file at {str(path)!r}")
        return path
    if attribute in {
        "stream_replicas",
        "default_limit",
        "max_in_flight",
        "max_waiting",
        "as_of_max_events",
        "as_of_cached_models",
        "as_of_snapshot_every",
        "as_of_snapshot_max_mb",
        "as_of_worker_nice",
        "workers",
    }:
        try:
            return int(raw)
        except ValueError:
            raise ValueError(f"setting {attribute} must be an integer, got {raw!r}") from None
    if attribute in {
        "duplicate_window_s",
        "startup_timeout_s",
        "nats_ping_interval_s",
        "leader_retry_s",
    }:
        try:
            return float(raw)
        except ValueError:
            raise ValueError(f"setting {attribute} must be a number, got {raw!r}") from None
    return raw
