"""PostgreSQL for tests: fresh databases on the shared server, or a private cluster to restart."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import uuid
from pathlib import Path

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

ADMIN_URI = os.environ.get("LOCKGATE_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
# CI sets this so an unreachable PostgreSQL fails the run instead of skipping half of it.
REQUIRE_ENV = "LOCKGATE_REQUIRE_POSTGRES"


def unreachable_reason(uri: str = ADMIN_URI) -> str | None:
    try:
        with psycopg.connect(uri, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        return f"PostgreSQL is unreachable at {uri} ({exc.__class__.__name__}: {str(exc).strip()[:200]})"
    return None


def create_database(admin_uri: str = ADMIN_URI) -> str:
    # LOCKGATE_TEST_DB_TAG goes into the name, so whoever shares the server can tell whose it is.
    tag = "".join(ch for ch in os.environ.get("LOCKGATE_TEST_DB_TAG", "").lower() if ch.isalnum())[:16]
    name = "lockgate_t_" + (tag + "_" if tag else "") + uuid.uuid4().hex[:12]
    with psycopg.connect(admin_uri, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return make_conninfo(admin_uri, dbname=name) if "=" in admin_uri else _with_db(admin_uri, name)


def drop_database(uri: str, admin_uri: str = ADMIN_URI) -> None:
    name = conninfo_to_dict(uri)["dbname"]
    with psycopg.connect(admin_uri, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def _with_db(uri: str, name: str) -> str:
    base, _, _ = uri.rpartition("/")
    return f"{base}/{name}"


class PrivateCluster:
    """A throw-away PostgreSQL cluster in a temp dir, so a test may restart it freely."""

    def __init__(self, root: Path, port: int) -> None:
        bins = sorted(glob.glob("/usr/lib/postgresql/*/bin"))
        if not bins:
            raise RuntimeError("no PostgreSQL server binaries under /usr/lib/postgresql")
        self.bin = Path(bins[-1])
        self.root = root
        self.data = root / "pgdata"
        self.port = port
        self.uri = f"postgresql://postgres@127.0.0.1:{port}/postgres"

    def _run(self, *args: str) -> None:
        cmd = [str(self.bin / args[0]), *args[1:]]
        if os.geteuid() == 0:  # initdb refuses to run as root
            shutil.chown(self.root, "postgres")
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        subprocess.run(cmd, check=True, capture_output=True, timeout=120)

    def init(self) -> "PrivateCluster":
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8")
        return self

    def start(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.root / "pg.log"), "-w", "-t", "60",
                  "-o", f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1", "start")

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")

    def restart(self) -> None:
        self.stop("immediate")
        self.start()
