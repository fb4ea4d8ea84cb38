"""Settings of the flows service: environment variables, overridden by command-line flags.

Built once by the composition root (`flows serve`, the CLI, tests) and passed down; nothing
reads the environment anywhere else.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

__all__ = ["DEFAULT_NATS_URL", "Settings"]

DEFAULT_NATS_URL = "nats://127.0.0.1:4222"

# (attribute, environment variable) for every setting the contract names, plus operational knobs.
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
}


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
    # Whether `nats_url` was given explicitly: only the default URL may fall back to an
    # embedded nats-server.
    nats_url_explicit: bool = False

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


def _coerce(attribute: str, raw: str) -> object:
    if attribute == "data_dir":
        return Path(raw)
    if attribute in {"stream_replicas", "default_limit", "max_in_flight"}:
        try:
            return int(raw)
        except ValueError:
            raise ValueError(f"setting {attribute} must be an integer, got {raw!r}") from None
    if attribute == "duplicate_window_s":
        return float(raw)
    return raw
