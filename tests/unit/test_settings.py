"""Production settings: precedence of every source, key lists, secrets kept out of `lockgate config`."""

from __future__ import annotations

import pytest

from lockgate.keys import KeyProblem, check_production_keys
from lockgate.settings import Settings

KEY = "signkey-prod-" + "ab" * 32


@pytest.mark.parametrize(
    "file_value, env, flag, expected, source",
    [
        (None, {}, None, None, "default"),
        ("postgresql://file/db", {}, None, "postgresql://file/db", "file"),
        ("postgresql://file/db", {"INNGEST_POSTGRES_URI": "postgresql://inngest-env/db"}, None,
         "postgresql://inngest-env/db", "env INNGEST_POSTGRES_URI"),
        ("postgresql://file/db", {"LOCKGATE_POSTGRES_URI": "postgresql://ours/db",
                                  "INNGEST_POSTGRES_URI": "postgresql://inngest-env/db"}, None,
         "postgresql://ours/db", "env LOCKGATE_POSTGRES_URI"),  # our own name wins over the Inngest one
        ("postgresql://file/db", {"LOCKGATE_POSTGRES_URI": "postgresql://ours/db"}, "postgresql://flag/db",
         "postgresql://flag/db", "flag"),
    ],
)
def test_postgres_uri_precedence(tmp_path, file_value, env, flag, expected, source):
    config = tmp_path / "lockgate.toml"
    config.write_text(f'postgres-uri = "{file_value}"\n' if file_value else "")
    s = Settings.load(config_file=str(config), environ=env, flags={"postgres_uri": flag})
    assert s.postgres_uri == expected
    assert s.sources["postgres_uri"].startswith(source)


def test_keys_from_env_and_flags():
    s = Settings.load(environ={"INNGEST_SIGNING_KEY": KEY, "INNGEST_EVENT_KEY": "one, two",
                               "LOCKGATE_LEASE_TIMEOUT": "7.5", "LOCKGATE_POSTGRES_POOL_SIZE": "3"})
    assert (s.signing_key, s.event_keys, s.lease_timeout, s.postgres_pool_size) == (KEY, ["one", "two"], 7.5, 3)
    s = Settings.load(environ={"INNGEST_EVENT_KEY": "env"}, flags={"event_keys": ["a", "b"]})
    assert (s.event_keys, s.sources["event_keys"]) == (["a", "b"], "flag")


def test_config_listing_hides_secrets_but_says_where_they_came_from():
    s = Settings.load(environ={"INNGEST_SIGNING_KEY": KEY, "LOCKGATE_POSTGRES_URI": "postgresql://u:pw@h/db"})
    rows = {name: (value, source) for name, value, source in s.describe()}
    assert rows["signing_key"] == ("****", "env INNGEST_SIGNING_KEY")
    assert rows["postgres_uri"] == ("****", "env LOCKGATE_POSTGRES_URI")
    assert rows["redis_uri"] == ("None", "default")
    assert KEY not in repr(rows)


@pytest.mark.parametrize(
    "env, fragment",
    [
        ({}, "needs a signing key"),
        ({"INNGEST_SIGNING_KEY": "signkey-prod-abc", "INNGEST_EVENT_KEY": "k"}, "even number"),
        ({"INNGEST_SIGNING_KEY": KEY}, "at least one event key"),
        ({"INNGEST_SIGNING_KEY": KEY, "INNGEST_EVENT_KEY": "has space"}, "may only hold"),
    ],
)
def test_production_key_checks(env, fragment):
    with pytest.raises(KeyProblem, match=fragment):
        check_production_keys(Settings.load(environ=env))


def test_good_production_keys_pass():
    check_production_keys(Settings.load(environ={"INNGEST_SIGNING_KEY": KEY, "INNGEST_EVENT_KEY": "k1,k2"}))
    check_production_keys(Settings.load(environ={"INNGEST_SIGNING_KEY": "ab" * 32, "INNGEST_EVENT_KEY": "k"}))
