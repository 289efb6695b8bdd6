"""PostgreSQL access shared by the cloud services: migrations, pools, partitions."""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime
from importlib import resources

import asyncpg

from cloud import MigrationError

log = logging.getLogger("fusebox.cloud.db")

_MIGRATION_LOCK = 0x46_55_53_45  # "FUSE": one migrator at a time across processes
_PARTITION_LOCK = 0x46_55_53_50
_MIGRATION_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


def migrations() -> list[tuple[int, str, str]]:
    """``(version, name, sql)`` of every migration shipped, in order."""
    found = []
    for entry in resources.files("cloud.migrations").iterdir():
        m = _MIGRATION_NAME.match(entry.name)
        if m:
            found.append((int(m.group(1)), entry.name, entry.read_text()))
    return sorted(found)


async def migrate(dsn: str) -> list[str]:
    """Bring the schema up to date; safe to run from several processes at once.
    Returns the names of the migrations applied now."""
    try:
        conn = await asyncpg.connect(dsn, timeout=10)
    except (OSError, asyncpg.PostgresError) as exc:
        raise MigrationError(
            f"cannot reach PostgreSQL ({exc}); check FUSEBOX_DATABASE_URL"
        ) from exc
    applied: list[str] = []
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", _MIGRATION_LOCK)
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version integer PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {
            r["version"]
            for r in await conn.fetch("SELECT version FROM schema_migrations")
        }
        for version, name, sql in migrations():
            if version in done:
                continue
            try:
                async with conn.transaction():
                    await conn.execute(sql)
                    await conn.execute(
                        "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                        version,
                        name,
                    )
            except asyncpg.PostgresError as exc:
                raise MigrationError(f"migration {name} failed: {exc}") from exc
            log.info("applied migration %s", name)
            applied.append(name)
    finally:
        await conn.close()
    return applied


def month_start(ts_ms: int) -> datetime:
    """The first instant (UTC) of the month holding ``ts_ms`` (epoch ms)."""
    t = datetime.fromtimestamp(ts_ms / 1000, tz=UTC)
    return datetime(t.year, t.month, 1, tzinfo=UTC)


def next_month(d: datetime) -> datetime:
    """The first instant (UTC) of the month after ``d``'s."""
    return datetime(d.year + (d.month == 12), d.month % 12 + 1, 1, tzinfo=UTC)


class Partitions:
    """Creates monthly partitions of ``readings`` on demand, once per process."""

    def __init__(self) -> None:
        self._known: set[datetime] = set()

    async def ensure(
        self, conn: asyncpg.Connection, min_ts_ms: int, max_ts_ms: int
    ) -> None:
        """Create any missing monthly partition covering
        ``min_ts_ms``..``max_ts_ms``."""
        month = month_start(min_ts_ms)
        last = month_start(max_ts_ms)
        while month <= last:
            if month not in self._known:
                await self._create(conn, month)
                self._known.add(month)
            month = next_month(month)

    async def _create(self, conn: asyncpg.Connection, month: datetime) -> None:
        name = f"readings_y{month.year:04d}m{month.month:02d}"
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _PARTITION_LOCK)
            exists = await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", name)
            if not exists:
                start, end = month.isoformat(), next_month(month).isoformat()
                await conn.execute(
                    f"CREATE TABLE {name} PARTITION OF readings "
                    f"FOR VALUES FROM ('{start}') TO ('{end}')"
                )
                log.info("created partition %s", name)
