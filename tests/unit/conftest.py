import pytest

from lockgate.store.postgres import PostgresStore
from lockgate.store.sqlite import SQLiteStore


@pytest.fixture
async def store(tmp_path, backend):
    """An open store on each backend: a SQLite file, or a fresh PostgreSQL database."""
    if backend.name == "postgres":
        s = PostgresStore(backend.new_database(), pool_size=4)
    else:
        s = SQLiteStore(str(tmp_path))
    await s.open()
    yield s
    await s.close()
