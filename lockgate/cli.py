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
    wait_for = []
    if example:
        wait_for.append(_start_example_app(port))
        settings.sdk_urls = [*settings.sdk_urls, *wait_for]

    def ready() -> None:
        # Printed once the store is open and migrated and --example's app is synced: an event sent
        # after this line finds its functions. Tools wait for this line (and parse the port from it).
        log.info("lockgate %s server listening on http://%s:%s (store: %s)", kind, settings.host, port,
                 engine.store.description, extra=ALWAYS)
        if len(sockets) > 1:
            log.info("QStash API also on http://%s:%s/v2", settings.host, sockets[1].getsockname()[1], extra=ALWAYS)

    try:
        app, engine = build_app(settings, kind=kind, own_port=port, on_ready=ready, wait_for_apps=wait_for)
    except (OSError, ValueError) as exc:
        _fail(f"cannot set up the store: {exc}")
    try:
        serve(app, sockets, log_level=settings.log_level)
    except SystemExit:
        if app.problem:
            _fail(app.problem)
        raise
    if app.problem:
        _fail(app.problem)


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
@click.option("--workers", type=int, default=None, help="Calls to apps in flight at once (default 100).")
@click.option("--log-level", default=None, help="debug, info, warning or error.")
@click.option("--qstash-port", type=int, default=None,
              help="Also serve the APIs on this port, e.g. 8080 where QStash dev settings point.")
@click.option("--example", is_flag=True, default=False, help="Also serve the example app (examples/app.py).")
@click.option("--create-db", is_flag=True, default=False,
              help="Create the --postgres-uri database when it does not exist yet.")
@_terminal_options
def dev(sdk_urls, port, host, no_discovery, no_poll, poll_interval, retry_interval, config, data_dir, in_memory,
        postgres_uri, workers, log_level, qstash_port, example, create_db, quiet, log_format,
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
        "workers": workers,
        "log_level": log_level,
        "qstash_port": qstash_port,
        "quiet": quiet,
        "log_format": log_format,
        "cors_origins": list(cors_origins) or None,
    }
    _run_server(_load(config, flags), "dev", create_db=create_db, example=example)


@main.command()
@click.option("-u", "--sdk-url", "sdk_urls", multiple=True, help="App serve URL to sync (repeatable).")
@click.option("-p", "--port", type=int, default=None, help="Port for the APIs (default 8288; 0 picks a free one).")
@click.option("--host", default=None, help="Address to listen on (default 127.0.0.1).")
@click.option("--postgres-uri", default=None, help="PostgreSQL database shared by all replicas.")
@click.option("--redis-uri", default=None, help="Redis, reserved for realtime fan-out across replicas (not used yet).")
@click.option("--signing-key", default=None, help="Signs requests to apps; apps authenticate with it.")
@click.option("--signing-key-fallback", default=None, help="Previous signing key, accepted while rotating.")
@click.option("--event-key", "event_keys", multiple=True, help="Accepted event key (repeatable).")
@click.option("--poll-interval", type=float, default=None, help="Seconds between sync rounds (default 5).")
@click.option("--retry-interval", type=float, default=None, help="Fixed retry delay in seconds.")
@click.option("--config", "config", type=click.Path(), default=None, help="Config file (JSON, YAML or TOML).")
@click.option("--data-dir", default=None, help="SQLite directory, when no PostgreSQL URI is given.")
@click.option("--workers", type=int, default=None, help="Calls to apps in flight at once (default 100).")
@click.option("--log-level", default=None, help="debug, info, warning or error.")
@_terminal_options
def start(sdk_urls, port, host, postgres_uri, redis_uri, signing_key, signing_key_fallback, event_keys,
          poll_interval, retry_interval, config, data_dir, workers, log_level, quiet, log_format,
          cors_origins) -> None:
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
        "poll_interval": poll_interval,
        "retry_interval": retry_interval,
        "data_dir": data_dir,
        "workers": workers,
        "log_level": log_level,
        "quiet": quiet,
        "log_format": log_format,
        "cors_origins": list(cors_origins) or None,
    }
    settings = _load(config, flags)
    if settings.sources["discovery"] == "default":
        settings.discovery = False  # production apps are named, never guessed from local ports
    if settings.sources["poll"] == "default":
        settings.poll = False  # as `inngest start`: only apps in error are synced again
    from lockgate.keys import KeyProblem, check_production_keys

    try:
        check_production_keys(settings)
    except KeyProblem as exc:
        _fail(str(exc))
    _run_server(settings, "cloud")


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
@click.option("--data-dir", default=None, help="SQLite directory to check.")
@click.option("--signing-key", default=None, help="Signing key the apps should hold.")
@click.option("--config", "config", type=click.Path(), default=None, help="Config file (JSON, YAML or TOML).")
def doctor(sdk_urls, port, host, postgres_uri, data_dir, signing_key, config) -> None:
    """Check the port, the database and every app; say what to fix. Exits 1 on problems."""
    from lockgate import doctor as checks

    flags = {"sdk_urls": list(sdk_urls) or None, "port": port, "host": host, "postgres_uri": postgres_uri,
             "data_dir": data_dir, "signing_key": signing_key}
    report = checks.run(_load(config, flags))
    for status, text in report.lines:
        click.echo(f"{status.ljust(4)}  {text}")
    if report.problems:
        click.echo(f"{report.problems} problem(s) found.", err=True)
        sys.exit(1)
    click.echo("No problems found.")


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
