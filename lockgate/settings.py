"""One settings object, filled in this order (later wins):
defaults → config file (JSON/YAML/TOML) → environment (LOCKGATE_*, INNGEST_*) → flags.

Each value remembers where it came from, so `lockgate config` can say so.
"""

from __future__ import annotations

import json
import os
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from lockgate.limits import DEFAULT as LIMITS, Limits


def _spec(default: Any, *, env: tuple[str, ...] = (), help: str = "", secret: bool = False) -> Any:
    return field(default_factory=lambda: default() if callable(default) else default,
                 metadata={"env": env, "help": help, "secret": secret})


@dataclass
class Settings:
    host: str = _spec("127.0.0.1", env=("LOCKGATE_HOST", "INNGEST_HOST"), help="address to listen on")
    port: int = _spec(8288, env=("LOCKGATE_PORT", "INNGEST_PORT"), help="port for every API and the dashboard")
    data_dir: str = _spec(".lockgate", env=("LOCKGATE_DATA_DIR",), help="where the SQLite store lives")
    in_memory: bool = _spec(False, env=("LOCKGATE_IN_MEMORY",), help="keep nothing after exit")
    postgres_uri: str | None = _spec(None, env=("LOCKGATE_POSTGRES_URI", "INNGEST_POSTGRES_URI"), secret=True,
                                     help="use PostgreSQL instead of SQLite")
    postgres_pool_size: int = _spec(8, env=("LOCKGATE_POSTGRES_POOL_SIZE",),
                                    help="connections each replica may hold (plus one for LISTEN)")
    redis_uri: str | None = _spec(None, env=("LOCKGATE_REDIS_URI", "INNGEST_REDIS_URI"), secret=True,
                                  help="Redis Streams carry realtime messages across replicas")
    realtime_retention_seconds: float = _spec(3600.0, env=("LOCKGATE_REALTIME_RETENTION_SECONDS",),
                                              help="how long a realtime channel keeps messages for resuming")
    realtime_retention_messages: int = _spec(10_000, env=("LOCKGATE_REALTIME_RETENTION_MESSAGES",),
                                             help="most messages a realtime channel keeps for resuming")
    realtime_max_message_bytes: int = _spec(512 * 1024, env=("LOCKGATE_REALTIME_MAX_MESSAGE_BYTES",),
                                            help="largest realtime message accepted (413 above)")
    realtime_progress: bool = _spec(True, env=("LOCKGATE_REALTIME_PROGRESS",),
                                    help="publish every run's progress to lockgate:run:<id> and lockgate:runs")
    realtime_token_ttl: float = _spec(3600.0, env=("LOCKGATE_REALTIME_TOKEN_TTL",),
                                      help="seconds a realtime subscription token stays valid")
    sdk_urls: list[str] = _spec(list, env=("LOCKGATE_SDK_URL", "INNGEST_SDK_URL"), help="apps to sync")
    discovery: bool = _spec(True, env=("LOCKGATE_DISCOVERY",), help="look for apps on local ports")
    poll: bool = _spec(True, env=("LOCKGATE_POLL",), help="re-sync apps every poll interval")
    poll_interval: float = _spec(5.0, env=("LOCKGATE_POLL_INTERVAL", "INNGEST_POLL_INTERVAL"),
                                 help="seconds between sync rounds")
    retry_interval: float | None = _spec(None, env=("LOCKGATE_RETRY_INTERVAL", "INNGEST_RETRY_INTERVAL"),
                                         help="fixed retry delay in seconds instead of the backoff table")
    workers: int = _spec(100, env=("LOCKGATE_WORKERS", "INNGEST_QUEUE_WORKERS"), help="calls in flight at once")
    signing_key: str | None = _spec(None, env=("LOCKGATE_SIGNING_KEY", "INNGEST_SIGNING_KEY"), secret=True,
                                    help="signs requests to apps and authenticates SDK calls")
    signing_key_fallback: str | None = _spec(None, env=("LOCKGATE_SIGNING_KEY_FALLBACK",
                                                        "INNGEST_SIGNING_KEY_FALLBACK"), secret=True,
                                             help="previous signing key, accepted during rotation")
    event_keys: list[str] = _spec(list, env=("LOCKGATE_EVENT_KEY", "INNGEST_EVENT_KEY"), secret=True,
                                  help="accepted event keys (empty: any)")
    lease_timeout: float = _spec(10.0, env=("LOCKGATE_LEASE_TIMEOUT",),
                                 help="seconds a call's lease lasts without a heartbeat; a replica silent for half"
                                      " of it is taken over")
    replica_name: str | None = _spec(None, env=("LOCKGATE_REPLICA_NAME",),
                                     help="this replica's name, stable across restarts (default host:port)")
    connect_lease_interval: int = _spec(5, env=("LOCKGATE_CONNECT_LEASE_INTERVAL",),
                                        help="seconds between a Connect worker's lease extensions; a call is"
                                             " retried after four missed")
    connect_heartbeat_interval: int = _spec(10, env=("LOCKGATE_CONNECT_HEARTBEAT_INTERVAL",),
                                            help="seconds between Connect heartbeats; silent for three: gone")
    log_level: str = _spec("info", env=("LOCKGATE_LOG_LEVEL",), help="debug, info, warning or error")
    qstash_port: int | None = _spec(None, env=("LOCKGATE_QSTASH_PORT", "QSTASH_DEV_PORT"),
                                    help="also serve every API on this port (8080: where QStash dev settings look)")
    qstash_token: str | None = _spec(None, env=("LOCKGATE_QSTASH_TOKEN", "QSTASH_TOKEN"), secret=True,
                                     help="Bearer token of the QStash API (dev: the QStash dev server's)")
    qstash_current_signing_key: str | None = _spec(None, env=("LOCKGATE_QSTASH_CURRENT_SIGNING_KEY",
                                                              "QSTASH_CURRENT_SIGNING_KEY"), secret=True,
                                                   help="signs QStash deliveries (dev: the dev server's)")
    qstash_next_signing_key: str | None = _spec(None, env=("LOCKGATE_QSTASH_NEXT_SIGNING_KEY",
                                                           "QSTASH_NEXT_SIGNING_KEY"), secret=True,
                                                help="the next QStash signing key, for rotation")
    qstash_backoff_scale: float = _spec(1.0, env=("LOCKGATE_QSTASH_BACKOFF_SCALE",),
                                        help="shrinks QStash's default retry backoff (tests, dev)")
    sqlite_synchronous: str = _spec("NORMAL", env=("LOCKGATE_SQLITE_SYNCHRONOUS",),
                                    help="NORMAL survives killed processes; FULL also power loss")

    # Input limits (lockgate/limits.py, README "Limits"): bad or huge input is refused before parsing.
    max_request_bytes: int = _spec(LIMITS.max_request_bytes, env=("LOCKGATE_MAX_REQUEST_BYTES",),
                                   help="largest events-API or app-sync body")
    max_checkpoint_bytes: int = _spec(LIMITS.max_checkpoint_bytes, env=("LOCKGATE_MAX_CHECKPOINT_BYTES",),
                                      help="largest JS step-checkpoint body")
    max_qstash_body_bytes: int = _spec(LIMITS.max_qstash_body_bytes, env=("LOCKGATE_MAX_QSTASH_BODY_BYTES",),
                                       help="largest QStash message body")
    max_json_depth: int = _spec(LIMITS.max_json_depth, env=("LOCKGATE_MAX_JSON_DEPTH",),
                                help="deepest nesting of objects/arrays in a JSON body")
    max_event_id_length: int = _spec(LIMITS.max_event_id_length, env=("LOCKGATE_MAX_EVENT_ID_LENGTH",),
                                     help="longest event id")
    max_functions_per_sync: int = _spec(LIMITS.max_functions_per_sync, env=("LOCKGATE_MAX_FUNCTIONS_PER_SYNC",),
                                        help="most functions one app may register")
    max_graphql_bytes: int = _spec(LIMITS.max_graphql_bytes, env=("LOCKGATE_MAX_GRAPHQL_BYTES",),
                                   help="largest /v0/gql request")
    max_graphql_depth: int = _spec(LIMITS.max_graphql_depth, env=("LOCKGATE_MAX_GRAPHQL_DEPTH",),
                                   help="deepest GraphQL selection")
    max_graphql_aliases: int = _spec(LIMITS.max_graphql_aliases, env=("LOCKGATE_MAX_GRAPHQL_ALIASES",),
                                     help="most aliases in one GraphQL query")
    max_graphql_fields: int = _spec(LIMITS.max_graphql_fields, env=("LOCKGATE_MAX_GRAPHQL_FIELDS",),
                                    help="most fields selected by one GraphQL query (its cost)")
    retention: str | None = _spec(None, env=("LOCKGATE_RETENTION",),
                                  help="how long finished runs and their events are kept, e.g. 7d, 24h; 0 keeps"
                                       " forever (default 7d for start, 24h for dev)")
    housekeeping_interval: float = _spec(60.0, env=("LOCKGATE_HOUSEKEEPING_INTERVAL",),
                                         help="seconds between retention and expiry sweeps")

    sources: dict[str, str] = field(default_factory=dict, repr=False)

    @classmethod
    def load(cls, *, config_file: str | None = None, flags: dict[str, Any] | None = None,
             environ: dict[str, str] | None = None) -> "Settings":
        settings = cls()
        for f in fields(cls):
            if f.name != "sources":
                settings.sources[f.name] = "default"
        if config_file:
            settings._apply(_read_config_file(config_file), f"file {config_file}")
        env = os.environ if environ is None else environ
        for f in fields(cls):
            for name in f.metadata.get("env", ()):
                if name in env and env[name] != "":
                    settings._set(f.name, env[name], f"env {name}")
                    break
        if flags:
            settings._apply({k: v for k, v in flags.items() if v is not None}, "flag")
        return settings

    def _apply(self, values: dict[str, Any], source: str) -> None:
        known = {f.name for f in fields(self)} - {"sources"}
        for key, value in values.items():
            name = key.replace("-", "_")
            if name == "sdk_url":
                name = "sdk_urls"
            if name == "event_key":
                name = "event_keys"
            if name == "database" and isinstance(value, dict):  # the Inngest dev server's shape
                if value.get("url"):
                    self._set("postgres_uri", value["url"], source)
                continue
            if name not in known:
                raise ValueError(f"unknown setting {key!r} in {source}")
            self._set(name, value, source)

    def _set(self, name: str, value: Any, source: str) -> None:
        current = getattr(self, name)
        setattr(self, name, _coerce(name, value, current))
        self.sources[name] = source

    def limits(self) -> Limits:
        return Limits(**{name: getattr(self, name) for name in Limits.names()})

    def retention_seconds(self, kind: str) -> float:
        """The retention period in seconds for a server of this kind ("dev" or "cloud"); 0 is forever."""
        from lockgate.protocol.timeparse import parse_duration

        text = self.retention if self.retention is not None else ("24h" if kind == "dev" else "7d")
        try:
            seconds = parse_duration(str(text))
        except ValueError:
            raise ValueError(f"retention {text!r} is not a duration: use e.g. 7d, 24h, 30m, or 0 to keep forever")
        if seconds < 0:
            raise ValueError(f"retention {text!r} is negative: use e.g. 7d, or 0 to keep forever")
        return seconds

    def describe(self) -> list[tuple[str, str, str]]:
        rows = []
        for f in fields(self):
            if f.name == "sources":
                continue
            value = getattr(self, f.name)
            shown = "****" if f.metadata.get("secret") and value else repr(value)
            rows.append((f.name, shown, self.sources.get(f.name, "default")))
        return rows


_BOOL_NAMES = {"in_memory", "discovery", "poll", "realtime_progress"}
_INT_NAMES = {"port", "workers", "postgres_pool_size", "qstash_port", "connect_lease_interval",
              "connect_heartbeat_interval", "realtime_retention_messages", "realtime_max_message_bytes",
              *Limits.names()}
_FLOAT_NAMES = {"poll_interval", "retry_interval", "lease_timeout", "qstash_backoff_scale", "housekeeping_interval",
                "realtime_retention_seconds", "realtime_token_ttl"}
_LIST_NAMES = {"sdk_urls", "event_keys"}


def _coerce(name: str, value: Any, current: Any) -> Any:
    try:
        if name in _BOOL_NAMES:
            if isinstance(value, str):
                return value.strip().lower() not in ("", "0", "false", "no", "off")
            return bool(value)
        if name in _INT_NAMES:
            return int(value)
        if name in _FLOAT_NAMES:
            return None if value is None else float(value)
        if name in _LIST_NAMES:
            if isinstance(value, str):
                return [v.strip() for v in value.split(",") if v.strip()]
            return list(value)
    except (TypeError, ValueError):
        raise ValueError(f"setting {name!r} cannot be {value!r}") from None
    return value


def _read_config_file(path: str) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"config file {path} does not exist")
    text = p.read_text()
    if p.suffix in (".yaml", ".yml"):
        data = yaml.safe_load(text) or {}
    elif p.suffix == ".toml":
        data = tomllib.loads(text)
    else:
        data = json.loads(text)
    if not isinstance(data, dict):
        raise ValueError(f"config file {path} must hold a mapping of settings")
    return data
