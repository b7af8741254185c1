"""One settings object, filled in this order (later wins):
defaults → config file (JSON/YAML/TOML) → environment (LOCKGATE_*, INNGEST_*) → flags.

Each value remembers where it came from, so `lockgate config` can say so.
"""

from __future__ import annotations

import difflib
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
    postgres_idle_in_transaction_timeout: float = _spec(
        30.0, env=("LOCKGATE_POSTGRES_IDLE_IN_TRANSACTION_TIMEOUT",),
        help="seconds a session may sit inside a transaction sending nothing (a paused replica) before it is"
             " ended and its row locks freed for the peers; 0 ends none")
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
    connect_gateway_url: str | None = _spec(None, env=("LOCKGATE_CONNECT_GATEWAY_URL",),
                                            help="this replica's ws(s)://…/v0/connect URL as workers reach it"
                                                 " (default: ws://<host>:<port>/v0/connect)")
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
    dashboard_password: str | None = _spec(None, env=("LOCKGATE_DASHBOARD_PASSWORD",), secret=True,
                                           help="admin password for the dashboard in `start` (besides the token"
                                                " `lockgate dashboard-token` prints)")
    sqlite_synchronous: str = _spec("NORMAL", env=("LOCKGATE_SQLITE_SYNCHRONOUS",),
                                    help="NORMAL survives killed processes; FULL also power loss")
    quiet: bool = _spec(False, env=("LOCKGATE_QUIET",), help="log only warnings and errors")
    log_format: str | None = _spec(None, env=("LOCKGATE_LOG_FORMAT",),
                                   help="rich (readable, dev default) or json (one object a line, start default)")
    cors_origins: list[str] = _spec(list, env=("LOCKGATE_CORS_ORIGINS",),
                                    help="browser origins allowed to call the APIs (* for any)")

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

    # Outbound policy (lockgate/outbound.py, README "Outbound policy").
    outbound_policy: str | None = _spec(None, env=("LOCKGATE_OUTBOUND_POLICY",),
                                        help="strict (default in start): refuse link-local/metadata and lockgate's "
                                             "own listeners; open (default in dev): only the lists apply")
    outbound_allow: list[str] = _spec(list, env=("LOCKGATE_OUTBOUND_ALLOW",),
                                      help="addresses/CIDR ranges always allowed (checked first)")
    outbound_deny: list[str] = _spec(list, env=("LOCKGATE_OUTBOUND_DENY",), help="addresses/CIDR ranges refused")

    # Keys from files keep them out of `ps` and shell history (read at start-up, whitespace trimmed).
    signing_key_file: str | None = _spec(None, env=("LOCKGATE_SIGNING_KEY_FILE", "INNGEST_SIGNING_KEY_FILE"),
                                         help="file holding the signing key")
    event_key_file: str | None = _spec(None, env=("LOCKGATE_EVENT_KEY_FILE", "INNGEST_EVENT_KEY_FILE"),
                                       help="file holding the event key(s), one per line or comma-separated")

    sources: dict[str, str] = field(default_factory=dict, repr=False)
    warnings: list[str] = field(default_factory=list, repr=False)  # ignored keys, said at start-up

    @classmethod
    def load(cls, *, config_file: str | None = None, flags: dict[str, Any] | None = None,
             environ: dict[str, str] | None = None) -> "Settings":
        settings = cls()
        for f in fields(cls):
            if f.name not in _BOOKKEEPING:
                settings.sources[f.name] = "default"
        env = os.environ if environ is None else environ
        config_file = config_file or find_config_file(env)
        if config_file:
            settings._apply(_read_config_file(config_file), f"file {config_file}")
        for f in fields(cls):
            for name in f.metadata.get("env", ()):
                if name in env and env[name] != "":
                    settings._set(f.name, env[name], f"env {name}")
                    break
        if flags:
            settings._apply({k: v for k, v in flags.items() if v is not None}, "flag")
        settings._read_key_files()
        return settings

    def _read_key_files(self) -> None:
        for path_field, key_field in (("signing_key_file", "signing_key"), ("event_key_file", "event_keys")):
            path = getattr(self, path_field)
            if not path:
                continue
            try:
                text = Path(path).read_text().strip()
            except OSError as exc:
                raise ValueError(f"cannot read {path_field.replace('_', '-')} {path}: {exc.strerror}") from None
            if not text:
                raise ValueError(f"{path_field.replace('_', '-')} {path} is empty")
            self._set(key_field, text.replace("\n", ",") if key_field == "event_keys" else text, f"file {path}")

    def _apply(self, values: dict[str, Any], source: str) -> None:
        """Apply a config file's keys: lockgate's names and the Inngest CLI's. Keys lockgate does
        not use are named in `warnings`, never fatal; a known key with a bad value is."""
        known = {f.name for f in fields(self)} - _BOOKKEEPING
        for key, value in values.items():
            name = key.replace("-", "_").lower()
            if name == "database" and isinstance(value, dict):  # the Inngest dev server's shape
                for sub, sub_value in value.items():
                    if sub == "url":
                        self._set("postgres_uri", sub_value, source)
                    elif sub in ("pool_size", "max_open_conns"):
                        self._set("postgres_pool_size", sub_value, source)
                    else:
                        self.warnings.append(f"setting 'database.{sub}' in {source} is not used by lockgate;"
                                             " ignored (database.url and database.pool_size are)")
                continue
            if name in _NEGATED:  # no-discovery: true -> discovery: false
                target = _NEGATED[name]
                self._set(target, not _coerce(target, value, True), source)
                continue
            if name in _ALIASES:
                name = _ALIASES[name]
                if name == "log_format":
                    value = "json" if _coerce("quiet", value, False) else "rich"
                elif name == "log_level" and key == "verbose":
                    if not _coerce("quiet", value, False):
                        continue
                    value = "debug"
            if name in _INNGEST_UNUSED:
                self.warnings.append(f"setting {key!r} in {source} is an Inngest CLI setting lockgate does not"
                                     f" use; ignored ({_INNGEST_UNUSED[name]})")
                continue
            if name not in known:
                close = difflib.get_close_matches(name, sorted(known | set(_ALIASES) | set(_NEGATED)), n=1)
                hint = f" (did you mean {close[0].replace('_', '-')!r}?)" if close else ""
                self.warnings.append(f"unknown setting {key!r} in {source}: ignored{hint};"
                                     " `lockgate config` lists every setting")
                continue
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
            if f.name in _BOOKKEEPING:
                continue
            value = getattr(self, f.name)
            shown = "****" if f.metadata.get("secret") and value else repr(value)
            rows.append((f.name, shown, self.sources.get(f.name, "default")))
        return rows


_BOOKKEEPING = {"sources", "warnings"}
_BOOL_NAMES = {"in_memory", "discovery", "poll", "quiet", "realtime_progress"}
_INT_NAMES = {"port", "workers", "postgres_pool_size", "qstash_port", "connect_lease_interval",
              "connect_heartbeat_interval", "realtime_retention_messages", "realtime_max_message_bytes",
              *Limits.names()}
_FLOAT_NAMES = {"poll_interval", "retry_interval", "lease_timeout", "qstash_backoff_scale", "housekeeping_interval",
                "realtime_retention_seconds", "realtime_token_ttl", "postgres_idle_in_transaction_timeout"}
_LIST_NAMES = {"sdk_urls", "event_keys", "cors_origins", "outbound_allow", "outbound_deny"}

# The Inngest CLI's config-file keys (`inngest dev` / `inngest start`), as lockgate settings.
_ALIASES = {
    "sdk_url": "sdk_urls",
    "event_key": "event_keys",
    "queue_workers": "workers",
    "postgres_max_open_conns": "postgres_pool_size",
    "sqlite_dir": "data_dir",
    "json": "log_format",
    "verbose": "log_level",
    "cors_origin": "cors_origins",
}
_NEGATED = {"no_discovery": "discovery", "no_poll": "poll"}
_INNGEST_UNUSED = {
    "tick": "lockgate sleeps until the next due job instead of ticking",
    "no_ui": "the dashboard is served on the same port",
    "connect_gateway_port": "connect workers reach lockgate on its API port",
    "connect_gateway_grpc_port": "connect workers reach lockgate on its API port",
    "connect_executor_grpc_port": "connect workers reach lockgate on its API port",
    "postgres_max_idle_conns": "the pool keeps what it opened",
    "postgres_conn_max_idle_time": "the pool recycles connections itself",
    "postgres_conn_max_lifetime": "the pool recycles connections itself",
    "persist": "lockgate dev always persists unless --in-memory",
}

CONFIG_FILE_NAMES = ("inngest.json", "inngest.yaml", "inngest.yml")


def find_config_file(env: Any) -> str | None:
    """As the Inngest CLI: INNGEST_CONFIG (or LOCKGATE_CONFIG), else inngest.json/.yaml/.yml here."""
    for name in ("LOCKGATE_CONFIG", "INNGEST_CONFIG"):
        if env.get(name):
            return env[name]
    for name in CONFIG_FILE_NAMES:
        if os.path.isfile(name):
            return name
    return None


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
    try:
        if p.suffix in (".yaml", ".yml"):
            data = yaml.safe_load(text) or {}
        elif p.suffix == ".toml":
            data = tomllib.loads(text)
        else:
            data = json.loads(text)
    except (yaml.YAMLError, tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        first = str(exc).strip().splitlines()[0]
        raise ValueError(f"config file {path} is not valid {p.suffix.lstrip('.').upper() or 'JSON'}: {first}")
    if not isinstance(data, dict):
        raise ValueError(f"config file {path} must hold a mapping of settings")
    return data
