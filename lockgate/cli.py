"""The `lockgate` command line."""

from __future__ import annotations

import errno
import logging
import sys

import click

from lockgate.settings import Settings

log = logging.getLogger("lockgate.server")


def _fail(message: str) -> None:
    click.echo(f"lockgate: {message}", err=True)
    sys.exit(2)


def _load(config: str | None, flags: dict) -> Settings:
    try:
        return Settings.load(config_file=config, flags=flags)
    except ValueError as exc:
        _fail(str(exc))
        raise  # unreachable


def _run_server(settings: Settings, kind: str, *, create_db: bool = False, example: bool = False) -> None:
    from lockgate.portinfo import port_holder
    from lockgate.server import bind_socket, build_app, serve
    from lockgate.startup import StartupProblem, check_store
    from lockgate.terminal import ALWAYS, setup_logging

    setup_logging(log_format=settings.log_format or ("rich" if kind == "dev" else "json"),
                  level=settings.log_level, quiet=settings.quiet)
    for warning in settings.warnings:
        log.warning(warning)
    if settings.log_level.lower() not in ("debug", "info", "warning", "error", "critical"):
        _fail(f"--log-level {settings.log_level!r} is not a level: use debug, info, warning or error")
    try:
        check_store(settings, create_db=create_db)
    except StartupProblem as exc:
        _fail(str(exc))
    try:
        sock = bind_socket(settings.host, settings.port)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            holder = port_holder(settings.port) or "another process"
            _fail(
                f"port {settings.port} on {settings.host} is already in use by {holder}.\n"
                f"Stop that process, or pick another port: `lockgate {'dev' if kind == 'dev' else 'start'}"
                f" --port <n>` (`--port 0` picks a free one)."
            )
        _fail(f"cannot listen on {settings.host}:{settings.port}: {exc.strerror}")
    port = sock.getsockname()[1]
    sockets = [sock]
    if settings.qstash_port is not None:
        try:
            sockets.append(bind_socket(settings.host, settings.qstash_port))
        except OSError as exc:
            _fail(f"cannot listen on {settings.host}:{settings.qstash_port} for --qstash-port: {exc.strerror}")
    try:
        settings.retention_seconds(kind)
    except ValueError as exc:
        _fail(str(exc))
    _prepare_schema(settings)
    wait_for = []
    if example:
        wait_for.append(_start_example_app(port))
        settings.sdk_urls = [*settings.sdk_urls, *wait_for]

    def ready() -> None:
        # Printed once the store is open and migrated and --example's app is synced: an event sent
        # after this line finds its functions. Tools wait for this line (and parse the port from it).
        log.info("lockgate %s server listening on http://%s:%s (store: %s)", kind, settings.host, port,
                 engine.store.description, extra=ALWAYS)
        if kind == "dev":
            log.info("dashboard: http://%s:%s/  ·  send events to http://%s:%s/e/dev", _browsable(settings.host),
                     port, _browsable(settings.host), port)
        if len(sockets) > 1:
            log.info("QStash API also on http://%s:%s/v2", settings.host, sockets[1].getsockname()[1], extra=ALWAYS)

    try:
        app, engine = build_app(settings, kind=kind, own_port=port, on_ready=ready, wait_for_apps=wait_for)
    except OSError as exc:
        _fail(f"cannot set up the store: {exc}")
    except ValueError as exc:  # a setting that only makes sense once combined (limits, outbound lists)
        _fail(str(exc))
    try:
        serve(app, sockets, log_level=settings.log_level)
    except SystemExit:
        if app.problem:
            _fail(app.problem)
        raise
    if app.problem:
        _fail(app.problem)


def _browsable(host: str) -> str:
    """An address a browser on this machine can open (a wildcard bind is not one)."""
    if host in ("0.0.0.0", "", "::"):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


def _terminal_options(command):
    """Options shared by `dev` and `start`: how the activity log looks, and browser access."""
    command = click.option("--cors-origin", "cors_origins", multiple=True,
                           help="Let browser pages from this origin call the APIs (repeatable; * for any).")(command)
    command = click.option("--log-format", type=click.Choice(["rich", "json"]), default=None,
                           help="Terminal log: rich (readable, the dev default) or json (one object a line,"
                                " the start default).")(command)
    command = click.option("-q", "--quiet", is_flag=True, default=None,
                           help="Log only warnings and errors (and the listening line).")(command)
    return command


def _migrate(settings: Settings, *, apply: bool):
    """Bring the store's schema up to this release (or only look, when apply is False)."""
    from lockgate.store import migrations

    try:
        if settings.postgres_uri:
            from lockgate.store.postgres import migrate_uri

            return migrate_uri(settings.postgres_uri, apply=apply)
        from lockgate.store.sqlite import migrate_data_dir

        return migrate_data_dir(settings.data_dir, apply=apply)
    except migrations.SchemaTooNew as exc:
        _fail(str(exc))
    except ConnectionError as exc:
        _fail(f"{exc}. Check --postgres-uri and that the database server is running.")
    raise AssertionError("unreachable")


def _prepare_schema(settings: Settings) -> None:
    """Migrate before serving, so a schema problem is one clear line rather than a failed start-up."""
    if settings.in_memory and not settings.postgres_uri:
        return  # a fresh private store: opening it applies every migration
    if not settings.postgres_uri:
        from lockgate.store.sqlite import DataDirInUse, data_dir_lock

        try:
            with data_dir_lock(settings.data_dir, purpose="a server"):
                pass
        except DataDirInUse as exc:
            _fail(str(exc))
    state, applied = _migrate(settings, apply=True)
    if applied and not state.applied:  # a new store: one line, not one per migration
        where = "the PostgreSQL database" if settings.postgres_uri else f"SQLite in {settings.data_dir}"
        log.info("set up a new store in %s (schema %s, %d migrations)", where, applied[-1].label, len(applied))
        return
    for migration in applied:
        log.info("applied schema migration %s", migration.label)


@click.group()
@click.version_option(package_name="lockgate")
def main() -> None:
    """lockgate: durable execution for your apps — Inngest SDK protocol and QStash API."""


@main.command()
@click.option("-u", "--sdk-url", "sdk_urls", multiple=True, help="App serve URL to sync (repeatable).")
@click.option("-p", "--port", type=int, default=None, help="Port for the APIs (default 8288; 0 picks a free one).")
@click.option("--host", default=None, help="Address to listen on (default 127.0.0.1).")
@click.option("--no-discovery", is_flag=True, default=None, help="Do not look for apps on local ports.")
@click.option("--no-poll", is_flag=True, default=None, help="Do not re-sync healthy apps.")
@click.option("--poll-interval", type=float, default=None, help="Seconds between sync rounds (default 5).")
@click.option("--retry-interval", type=float, default=None, help="Fixed retry delay in seconds.")
@click.option("--config", "config", type=click.Path(), default=None, help="Config file (JSON, YAML or TOML).")
@click.option("--data-dir", default=None, help="Directory for the SQLite store (default .lockgate).")
@click.option("--in-memory", is_flag=True, default=None, help="Keep nothing after exit.")
@click.option("--postgres-uri", default=None, help="Use this PostgreSQL database instead of SQLite.")
@click.option("--redis-uri", default=None, help="Redis: realtime messages ride Redis Streams (else in-process/PostgreSQL).")
@click.option("--workers", type=int, default=None, help="Calls to apps in flight at once (default 100).")
@click.option("--log-level", default=None, help="debug, info, warning or error.")
@click.option("--qstash-port", type=int, default=None,
              help="Also serve the APIs on this port, e.g. 8080 where QStash dev settings point.")
@click.option("--retention", default=None,
              help="Keep finished runs and their events this long, e.g. 7d, 24h; 0 keeps forever.")
@click.option("--example", is_flag=True, default=False, help="Also serve the example app (examples/app.py).")
@click.option("--create-db", is_flag=True, default=False,
              help="Create the --postgres-uri database when it does not exist yet.")
@_terminal_options
def dev(sdk_urls, port, host, no_discovery, no_poll, poll_interval, retry_interval, config, data_dir, in_memory,
        postgres_uri, redis_uri, workers, log_level, qstash_port, retention, example, create_db, quiet, log_format,
        cors_origins) -> None:
    """Run the development server on an embedded SQLite store (or --postgres-uri)."""
    flags = {
        "sdk_urls": list(sdk_urls) or None,
        "port": port,
        "host": host,
        "discovery": False if no_discovery else None,
        "poll": False if no_poll else None,
        "poll_interval": poll_interval,
        "retry_interval": retry_interval,
        "data_dir": data_dir,
        "in_memory": in_memory,
        "postgres_uri": postgres_uri,
        "redis_uri": redis_uri,
        "workers": workers,
        "log_level": log_level,
        "qstash_port": qstash_port,
        "quiet": quiet,
        "log_format": log_format,
        "cors_origins": list(cors_origins) or None,
        "retention": retention,
    }
    _run_server(_load(config, flags), "dev", create_db=create_db, example=example)


@main.command()
@click.option("-u", "--sdk-url", "sdk_urls", multiple=True, help="App serve URL to sync (repeatable).")
@click.option("-p", "--port", type=int, default=None, help="Port for the APIs (default 8288; 0 picks a free one).")
@click.option("--host", default=None, help="Address to listen on (default 127.0.0.1).")
@click.option("--postgres-uri", default=None, help="PostgreSQL database shared by all replicas.")
@click.option("--redis-uri", default=None, help="Redis: realtime messages ride Redis Streams across replicas.")
@click.option("--signing-key", default=None, help="Signs requests to apps; apps authenticate with it.")
@click.option("--signing-key-fallback", default=None, help="Previous signing key, accepted while rotating.")
@click.option("--event-key", "event_keys", multiple=True, help="Accepted event key (repeatable).")
@click.option("--signing-key-file", type=click.Path(), default=None,
              help="Read the signing key from this file (keeps it out of `ps`).")
@click.option("--event-key-file", type=click.Path(), default=None,
              help="Read the event key(s) from this file, one per line.")
@click.option("--poll-interval", type=float, default=None, help="Seconds between sync rounds (default 5).")
@click.option("--retry-interval", type=float, default=None, help="Fixed retry delay in seconds.")
@click.option("--config", "config", type=click.Path(), default=None, help="Config file (JSON, YAML or TOML).")
@click.option("--data-dir", default=None, help="SQLite directory, when no PostgreSQL URI is given.")
@click.option("--workers", type=int, default=None, help="Calls to apps in flight at once (default 100).")
@click.option("--log-level", default=None, help="debug, info, warning or error.")
@click.option("--replica-name", default=None,
              help="Name of this replica, kept across restarts (default host:port): a restart takes back its calls.")
@click.option("--retention", default=None,
              help="Keep finished runs and their events this long, e.g. 7d, 24h; 0 keeps forever.")
@click.option("--dashboard-password", default=None,
              help="Admin password for the dashboard (the token from `lockgate dashboard-token` works too).")
@_terminal_options
def start(sdk_urls, port, host, postgres_uri, redis_uri, signing_key, signing_key_fallback, event_keys,
          signing_key_file, event_key_file, poll_interval, retry_interval, config, data_dir, workers, log_level,
          replica_name, retention, quiet, log_format, cors_origins, dashboard_password) -> None:
    """Run the production server: keys required, replicas share one PostgreSQL database."""
    flags = {
        "sdk_urls": list(sdk_urls) or None,
        "port": port,
        "host": host,
        "postgres_uri": postgres_uri,
        "redis_uri": redis_uri,
        "signing_key": signing_key,
        "signing_key_fallback": signing_key_fallback,
        "event_keys": list(event_keys) or None,
        "signing_key_file": signing_key_file,
        "event_key_file": event_key_file,
        "poll_interval": poll_interval,
        "retry_interval": retry_interval,
        "data_dir": data_dir,
        "workers": workers,
        "replica_name": replica_name,
        "log_level": log_level,
        "dashboard_password": dashboard_password,
        "quiet": quiet,
        "log_format": log_format,
        "cors_origins": list(cors_origins) or None,
        "retention": retention,
    }
    settings = _load(config, flags)
    for name, flag in (("signing_key", "--signing-key"), ("signing_key_fallback", "--signing-key-fallback"),
                       ("event_keys", "--event-key"), ("postgres_uri", "--postgres-uri")):
        value = getattr(settings, name)
        if name == "postgres_uri" and value and not _has_password(value):
            continue
        if settings.sources[name] == "flag" and value:
            # Said through the log once it is set up, so `--log-format json` stays one object a line.
            settings.warnings.append(f"{flag} on the command line is visible to every user of this machine "
                                     f"(ps, shell history); use {_SAFER[name]} instead")
    if settings.sources["discovery"] == "default":
        settings.discovery = False  # production apps are named, never guessed from local ports
    if settings.sources["poll"] == "default":
        settings.poll = False  # as `inngest start`: only apps in error are synced again
    from lockgate.keys import KeyProblem, check_production_keys

    try:
        check_production_keys(settings)
    except KeyProblem as exc:
        for warning in settings.warnings:  # the log is not set up yet: say them before stopping
            click.echo(f"lockgate: warning: {warning}", err=True)
        _fail(str(exc))
    _run_server(settings, "cloud")


@main.command("dashboard-token")
@click.option("--signing-key", default=None, help="The server's signing key (default: INNGEST_SIGNING_KEY).")
@click.option("--config", "config", type=click.Path(), default=None, help="Config file (JSON, YAML or TOML).")
def dashboard_token_command(signing_key, config) -> None:
    """Print the dashboard login token of a `lockgate start` server with this signing key."""
    from lockgate.interfaces.dashboard.session import dashboard_token

    settings = _load(config, {"signing_key": signing_key})
    if not settings.signing_key:
        _fail("no signing key: pass --signing-key or set INNGEST_SIGNING_KEY (the server's key)")
    click.echo(dashboard_token(settings.signing_key))


def _has_password(uri: str) -> bool:
    from urllib.parse import urlsplit

    try:
        return bool(urlsplit(uri).password) or "password=" in uri
    except ValueError:
        return False


_SAFER = {"signing_key": "--signing-key-file or INNGEST_SIGNING_KEY",
          "signing_key_fallback": "INNGEST_SIGNING_KEY_FALLBACK",
          "event_keys": "--event-key-file or INNGEST_EVENT_KEY",
          "postgres_uri": "LOCKGATE_POSTGRES_URI (when it holds a password)"}


def _start_example_app(server_port: int) -> str:
    """Serve examples/app.py with uvicorn beside the server; it stops when the server does."""
    import atexit
    import os
    import socket
    import subprocess

    if not os.path.isfile(os.path.join("examples", "app.py")):
        _fail("--example needs the examples/ folder of the lockgate repository in the working directory")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        app_port = s.getsockname()[1]
    env = {**os.environ, "INNGEST_DEV": f"http://127.0.0.1:{server_port}", "PYTHONPATH": os.getcwd()}
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "examples.app:app", "--port", str(app_port), "--log-level", "warning"],
        env=env,
    )
    atexit.register(proc.terminate)
    url = f"http://127.0.0.1:{app_port}/api/inngest"
    log.info("example app (examples/app.py) starting at %s", url, extra={"url": url})
    return url


@main.command()
@click.option("-u", "--sdk-url", "sdk_urls", multiple=True, help="App serve URL to check (repeatable).")
@click.option("-p", "--port", type=int, default=None, help="Port the server listens on (default 8288).")
@click.option("--host", default=None, help="Address the server listens on.")
@click.option("--postgres-uri", default=None, help="PostgreSQL database to check.")
@click.option("--redis-uri", default=None, help="Redis used for realtime, to check.")
@click.option("--data-dir", default=None, help="SQLite directory to check.")
@click.option("--signing-key", default=None, help="Signing key the apps should hold.")
@click.option("--config", "config", type=click.Path(), default=None, help="Config file (JSON, YAML or TOML).")
def doctor(sdk_urls, port, host, postgres_uri, redis_uri, data_dir, signing_key, config) -> None:
    """Check the port, the database and every app; say what to fix. Exits 1 on problems."""
    from lockgate import doctor as checks

    flags = {"sdk_urls": list(sdk_urls) or None, "port": port, "host": host, "postgres_uri": postgres_uri,
             "redis_uri": redis_uri, "data_dir": data_dir, "signing_key": signing_key}
    report = checks.run(_load(config, flags))
    for status, text in report.lines:
        click.echo(f"{status.ljust(4)}  {text}")
    if report.problems:
        click.echo(report.summary(), err=True)
        sys.exit(1)
    click.echo(report.summary())


@main.command()
@click.option("--check", is_flag=True, default=False,
              help="Only report; exit 1 when migrations are pending (2 when the database is newer).")
@click.option("--postgres-uri", default=None, help="PostgreSQL database to migrate.")
@click.option("--data-dir", default=None, help="SQLite data folder to migrate (default .lockgate).")
@click.option("--config", "config", type=click.Path(), default=None, help="Config file (JSON, YAML or TOML).")
def migrate(check, postgres_uri, data_dir, config) -> None:
    """Apply the schema migrations this release ships (servers also do this when they start)."""
    settings = _load(config, {"postgres_uri": postgres_uri, "data_dir": data_dir})
    target = "PostgreSQL database" if settings.postgres_uri else f"SQLite data folder {settings.data_dir}"
    state, applied = _migrate(settings, apply=not check)
    for version, name in state.applied:
        click.echo(f"applied  {version:04d}_{name}")
    for migration in state.pending:
        click.echo(f"{'applied ' if migration in applied else 'pending '} {migration.label}"
                   f"{'  (now)' if migration in applied else ''}")
    if check and state.pending:
        click.echo(f"{len(state.pending)} migration(s) pending on the {target}: run `lockgate migrate`"
                   " (or start the server, which applies them).", err=True)
        sys.exit(1)
    click.echo(f"The {target} is up to date.", err=True)


def _sqlite_only(settings: Settings, command: str) -> None:
    if settings.postgres_uri:
        _fail(f"`lockgate {command}` works on a SQLite data folder; for PostgreSQL use pg_dump and pg_restore"
              " (see lockgate/store/README.md, section Backups).")


@main.command()
@click.argument("path", type=click.Path(dir_okay=False))
@click.option("--data-dir", default=None, help="SQLite data folder to back up (default .lockgate).")
@click.option("--config", "config", type=click.Path(), default=None, help="Config file (JSON, YAML or TOML).")
def backup(path, data_dir, config) -> None:
    """Copy a SQLite data folder's database to PATH, consistently, while the server runs."""
    from lockgate.store.sqlite_backup import BackupError, backup as take_backup

    settings = _load(config, {"data_dir": data_dir})
    _sqlite_only(settings, "backup")

    def report(done: dict) -> None:  # printed before writes resume: what was acknowledged until now is in it
        click.echo(f"backed up {done['runs']} run(s), {done['bytes']} bytes, to {done['path']} in {done['seconds']}s")
        sys.stdout.flush()

    try:
        take_backup(settings.data_dir, path, on_done=report)
    except BackupError as exc:
        _fail(str(exc))


@main.command()
@click.argument("path", type=click.Path(dir_okay=False))
@click.option("--data-dir", default=None, help="SQLite data folder to restore into (default .lockgate).")
@click.option("--config", "config", type=click.Path(), default=None, help="Config file (JSON, YAML or TOML).")
def restore(path, data_dir, config) -> None:
    """Replace a SQLite data folder's database with the backup at PATH (stop the server first)."""
    from lockgate.store.sqlite import DataDirInUse
    from lockgate.store.sqlite_backup import BackupError, restore as put_back

    settings = _load(config, {"data_dir": data_dir})
    _sqlite_only(settings, "restore")
    try:
        done = put_back(path, settings.data_dir)
    except (BackupError, DataDirInUse) as exc:
        _fail(str(exc))
        return
    if done["previous"]:
        click.echo(f"the database it replaced is kept at {done['previous']}")
    click.echo(f"restored {path} into {done['path']}; start the server to resume its runs")


@main.command("config")
@click.option("--config", "config", type=click.Path(), default=None, help="Config file (JSON, YAML or TOML).")
def show_config(config) -> None:
    """Print every effective setting and where its value came from."""
    settings = _load(config, {})
    width = max(len(name) for name, _, _ in settings.describe())
    for name, value, source in settings.describe():
        click.echo(f"{name.ljust(width)}  {value}  ({source})")
    for warning in settings.warnings:
        click.echo(f"warning: {warning}", err=True)


if __name__ == "__main__":
    main()
