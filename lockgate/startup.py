"""Start-up checks that turn configuration and connection problems into one clear line.

The CLI runs `check_store` before it binds the port, so a wrong database URI or an unwritable
data directory stops lockgate at once with the fix in words (exit code 2), instead of a
server that answers nothing and dies later with a traceback.
"""

from __future__ import annotations

import logging
import os

from lockgate.settings import Settings

log = logging.getLogger("lockgate.server")


class StartupProblem(Exception):
    """A problem the user fixes in their configuration; the message names the fix."""


def check_store(settings: Settings, *, create_db: bool = False) -> None:
    if settings.postgres_uri:
        check_postgres(settings.postgres_uri, create_db=create_db)
    elif not settings.in_memory:
        check_data_dir(settings.data_dir)


def check_data_dir(path: str) -> None:
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as exc:
        raise StartupProblem(f"cannot create the data directory {path}: {exc.strerror}. Pick another with"
                             " --data-dir, or use --in-memory") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise StartupProblem(f"the data directory {path} is not writable by this user. Fix its permissions,"
                             " or pick another with --data-dir")


def _where(uri: str) -> tuple[str, str, str]:
    """(host:port, database, user) of a PostgreSQL URI, without the password."""
    import psycopg

    scheme = uri.split("://", 1)[0].lower() if "://" in uri else None
    if scheme is not None and scheme not in ("postgresql", "postgres"):
        raise StartupProblem(f"--postgres-uri must start with postgresql:// (it starts with {scheme}://);"
                             " expected postgresql://user[:password]@host[:port]/database")
    if scheme is None and "=" not in uri:
        raise StartupProblem("--postgres-uri is not a PostgreSQL URI (no postgresql:// in front);"
                             " expected postgresql://user[:password]@host[:port]/database")
    try:
        info = psycopg.conninfo.conninfo_to_dict(uri)
    except psycopg.ProgrammingError as exc:
        raise StartupProblem(f"--postgres-uri is not a valid PostgreSQL URI ({str(exc).strip()});"
                             " expected postgresql://user[:password]@host[:port]/database") from None
    host = f"{info.get('host') or 'localhost'}:{info.get('port') or 5432}"
    return host, str(info.get("dbname") or info.get("user") or "postgres"), str(info.get("user") or "")


def check_postgres(uri: str, *, create_db: bool = False) -> None:
    """Connect once (5 s at most) and explain what went wrong; create a missing database if asked."""
    import psycopg

    host, database, user = _where(uri)
    try:
        psycopg.connect(uri, connect_timeout=5).close()
        return
    except psycopg.OperationalError as exc:
        text = str(exc).strip()
    lowered = text.lower()
    if f'database "{database}" does not exist' in lowered:
        if create_db:
            _create_database(uri, database, host)
            return
        raise StartupProblem(
            f'PostgreSQL database "{database}" does not exist on {host}. Create it (`createdb -h'
            f' {host.split(":")[0]} -p {host.rsplit(":", 1)[1]}{" -U " + user if user else ""} {database}`),'
            " or start `lockgate dev --create-db` to have lockgate create it")
    if "password authentication failed" in lowered or ("role" in lowered and "does not exist" in lowered):
        raise StartupProblem(f"PostgreSQL at {host} refused user {user or '(default)'!r}: {_last_line(text)}."
                             " Fix the user and password in --postgres-uri (or LOCKGATE_POSTGRES_URI)")
    if "connection refused" in lowered or "could not connect" in lowered or "timeout" in lowered:
        raise StartupProblem(f"cannot connect to PostgreSQL at {host} ({_last_line(text)}). Is the server"
                             " running and is that host:port right? Fix --postgres-uri (or LOCKGATE_POSTGRES_URI)")
    raise StartupProblem(f"cannot use PostgreSQL at {host}: {_last_line(text)}. Check --postgres-uri")


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    # psycopg prefixes 'connection failed: connection to server at ... failed:'; the cause is last.
    return lines[-1] if lines else text


def _create_database(uri: str, database: str, host: str) -> None:
    import psycopg
    from psycopg import sql

    maintenance = psycopg.conninfo.make_conninfo(uri, dbname="postgres")
    try:
        with psycopg.connect(maintenance, connect_timeout=5, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
    except psycopg.Error as exc:
        raise StartupProblem(f'could not create PostgreSQL database "{database}" on {host}:'
                             f" {_last_line(str(exc))}. Create it yourself, or fix --postgres-uri") from None
    log.info('created PostgreSQL database "%s" on %s', database, host, extra={"database": database})
