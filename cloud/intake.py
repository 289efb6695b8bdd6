"""The durable intake of manual meter readings (issue 11).

A reading typed into the app is not written to PostgreSQL inside the request:
the API validates it, puts it into a durable intake and answers 202 with a
submission id (``cloud.api.manual_readings``). A consumer takes it from the
intake, decides it under the plausibility rules and stores it (``decide``),
recording the outcome (``stored`` or ``refused`` with the reason) in
``manual_submissions`` in the same transaction, and only then acknowledges it to
the intake. A crash between the two delivers it again; the recorded outcome
makes the second delivery a no-op, so nothing is lost and nothing doubled.

The id is a UUID made from the reading itself (gateway, meter, instant, value,
idempotency key): the same reading sent again gets the same id, and is decided
once. The same key with a different reading is another submission, refused
("the key was already used for a different reading").

Two intakes, one interface (``Intake``):

* ``JetStreamIntake`` (the cluster): publishes to ``fusebox.intake.manual.<gw>.
  <id>`` in the stream ``FUSEBOX_INTAKE`` (created if absent: file storage,
  limits retention for ``max_age_s``, at most ``max_msgs`` messages, discard new
  when full: a full intake answers 503, it never drops what it accepted) and
  returns after JetStream's PubAck, i.e. once the stream stored it. The consumer
  is the durable pull consumer ``intake``, so any number of API processes share
  the work and a stopped consumer catches up from where it was.
* ``SqliteIntake`` (one node, the demo: no NATS): an append-only SQLite file in
  WAL mode with ``synchronous=FULL``, so a submission is on disk (fsync) before
  the 202, survives a crash of the process and of the machine, and is drained by
  a task in the same API process. An MQTT QoS1 publish to the broker was the
  alternative and was not chosen: a PUBACK does not prove the broker will keep
  the message (ARCHITECTURE, decision 1).

Errors: ``IntakeFull`` (no room: 503 with ``Retry-After``) and ``IntakeDown``
(the intake cannot be reached: 503), both ``IntakeError``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import sqlite3
import uuid
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, Protocol
from urllib.parse import urlsplit

import asyncpg
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = [
    "INTAKE_STREAM",
    "INTAKE_SUBJECT_PREFIX",
    "Delivery",
    "Intake",
    "IntakeConsumer",
    "IntakeDown",
    "IntakeError",
    "IntakeFull",
    "IntakeSettings",
    "JetStreamIntake",
    "Outcome",
    "SqliteIntake",
    "Submission",
    "decide",
    "intake_from_settings",
]

log = logging.getLogger("fusebox.cloud.intake")

INTAKE_STREAM = "FUSEBOX_INTAKE"
INTAKE_SUBJECT_PREFIX = "fusebox.intake.manual"
CONSUMER_NAME = "intake"
_ID_NAMESPACE = uuid.UUID("6c1b2f4e-6d0e-4bb5-9a53-4a9c7c1f0b11")

# a household supply rarely imports more than this on average (100 A at 230 V is
# 23 kW): a manual reading implying more since the last is a typo
MAX_AVERAGE_IMPORT_W = 25_000.0
# meter displays show whole kWh: allow that much on top of the average
READING_SLACK_WH = 1_000.0


class IntakeError(RuntimeError):
    """The intake did not take the submission: answer 503 with ``Retry-After``."""

    retry_after_s = 2


class IntakeFull(IntakeError):
    """The intake is at its limit (it refuses new, never drops accepted ones)."""

    retry_after_s = 10


class IntakeDown(IntakeError):
    """The intake could not be reached or did not confirm in time."""


@dataclass(frozen=True, slots=True)
class Submission:
    """A manual reading accepted into the intake, not yet decided."""

    id: str
    gateway_id: str
    meter_id: str
    ts: datetime
    register_wh: float
    idempotency_key: str | None
    submitted_by: int | None
    accepted_at: datetime

    @classmethod
    def new(
        cls,
        gateway_id: str,
        meter_id: str,
        ts: datetime,
        register_wh: float,
        idempotency_key: str | None,
        submitted_by: int | None,
        now: datetime,
    ) -> Submission:
        """A submission whose id the reading itself determines (see the module)."""
        ts = ts.astimezone(UTC)
        name = json.dumps(
            [gateway_id, meter_id, ts.isoformat(), register_wh, idempotency_key]
        )
        return cls(
            str(uuid.uuid5(_ID_NAMESPACE, name)),
            gateway_id,
            meter_id,
            ts,
            register_wh,
            idempotency_key,
            submitted_by,
            now,
        )

    def to_bytes(self) -> bytes:
        """The JSON the intake keeps."""
        return json.dumps(
            {
                "id": self.id,
                "gateway_id": self.gateway_id,
                "meter_id": self.meter_id,
                "ts": self.ts.isoformat(),
                "register_wh": self.register_wh,
                "idempotency_key": self.idempotency_key,
                "submitted_by": self.submitted_by,
                "accepted_at": self.accepted_at.isoformat(),
            }
        ).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> Submission:
        """Parse what ``to_bytes`` wrote; ``ValueError`` (or ``KeyError``,
        ``TypeError``) for anything else."""
        d = json.loads(data)
        return cls(
            str(uuid.UUID(d["id"])),
            str(d["gateway_id"]),
            str(d["meter_id"]),
            datetime.fromisoformat(d["ts"]).astimezone(UTC),
            float(d["register_wh"]),
            None if d["idempotency_key"] is None else str(d["idempotency_key"]),
            None if d["submitted_by"] is None else int(d["submitted_by"]),
            datetime.fromisoformat(d["accepted_at"]).astimezone(UTC),
        )


@dataclass(frozen=True, slots=True)
class Delivery:
    """One submission handed to the consumer; ``ack`` once it is decided."""

    submission: Submission | None  # None: unreadable (acked and counted)
    ack: Callable[[], Awaitable[None]]
    raw: bytes = b""


class Intake(Protocol):
    """Where submissions wait, durably, until the consumer has decided them."""

    async def start(self) -> None:
        """Open files or connections (and create the stream if absent)."""

    async def close(self) -> None:
        """Release them."""

    async def accept(self, sub: Submission) -> None:
        """Keep ``sub`` durably; returns only once it is kept. Raises
        ``IntakeFull`` or ``IntakeDown``."""

    async def pending(self, gateway_id: str, submission_id: str) -> Submission | None:
        """``submission_id`` of ``gateway_id`` if it is in the intake."""

    async def fetch(self, max_n: int, wait_s: float) -> list[Delivery]:
        """Up to ``max_n`` undecided submissions, waiting up to ``wait_s`` for one."""


# ------------------------------------------------------------ the decision

_PREV_REGISTER = """
SELECT ts, wh FROM (
    SELECT ts, register_wh AS wh FROM manual_readings
    WHERE gateway_id = $1 AND meter_id = $2 AND ts < $3
    UNION ALL
    (SELECT r.ts, r.value FROM readings r JOIN streams s ON s.id = r.stream_id
     WHERE s.gateway_id = $1 AND s.device_id = $2 AND s.name = 'import_energy_wh'
       AND r.ts < $3 ORDER BY r.ts DESC LIMIT 1)
) x ORDER BY ts DESC LIMIT 1
"""

_NEXT_REGISTER = """
SELECT ts, wh FROM (
    SELECT ts, register_wh AS wh FROM manual_readings
    WHERE gateway_id = $1 AND meter_id = $2 AND ts > $3
    UNION ALL
    (SELECT r.ts, r.value FROM readings r JOIN streams s ON s.id = r.stream_id
     WHERE s.gateway_id = $1 AND s.device_id = $2 AND s.name = 'import_energy_wh'
       AND r.ts > $3 ORDER BY r.ts LIMIT 1)
) x ORDER BY ts LIMIT 1
"""


@dataclass(frozen=True, slots=True)
class Outcome:
    """How a submission was decided: ``stored`` (``reading_id``) or ``refused``
    (``reason``); ``new`` is False when it had been decided before."""

    state: Literal["stored", "refused"]
    reason: str | None
    reading_id: int | None
    new: bool


async def _implausible(conn: asyncpg.Connection, sub: Submission) -> str | None:
    """Why the register value is implausible next to the readings before and
    after it (one sentence), or None."""
    gw, meter, ts, wh = sub.gateway_id, sub.meter_id, sub.ts, sub.register_wh
    prev = await conn.fetchrow(_PREV_REGISTER, gw, meter, ts)
    if prev is not None:
        if wh < prev["wh"]:
            return (
                f"register_kwh: below the last reading ({prev['wh'] / 1000:g} kWh at "
                f"{prev['ts'].isoformat()}); a register never runs backwards"
            )
        hours = (ts - prev["ts"]).total_seconds() / 3600
        if wh - prev["wh"] > MAX_AVERAGE_IMPORT_W * hours + READING_SLACK_WH:
            return (
                f"register_kwh: implausible: {(wh - prev['wh']) / 1000:g} kWh since "
                f"the last reading ({prev['wh'] / 1000:g} kWh at "
                f"{prev['ts'].isoformat()}) is more than "
                f"{MAX_AVERAGE_IMPORT_W / 1000:g} kW on average; check the digits"
            )
    nxt = await conn.fetchrow(_NEXT_REGISTER, gw, meter, ts)
    if nxt is not None and wh > nxt["wh"]:
        return (
            f"register_kwh: above a later reading ({nxt['wh'] / 1000:g} kWh at "
            f"{nxt['ts'].isoformat()})"
        )
    return None


async def _store(
    conn: asyncpg.Connection, sub: Submission
) -> tuple[Literal["stored", "refused"], str | None, int | None]:
    """Store ``sub`` unless it contradicts a stored reading or is implausible."""
    same = await conn.fetchrow(
        "SELECT * FROM manual_readings WHERE gateway_id = $1 AND"
        " (($3::text IS NOT NULL AND idempotency_key = $3)"
        " OR (meter_id = $2 AND ts = $4))",
        sub.gateway_id,
        sub.meter_id,
        sub.idempotency_key,
        sub.ts,
    )
    if same is not None:
        if (
            same["meter_id"] == sub.meter_id
            and same["ts"] == sub.ts
            and abs(same["register_wh"] - sub.register_wh) < 1e-6
        ):
            return "stored", None, same["id"]
        if sub.idempotency_key and same["idempotency_key"] == sub.idempotency_key:
            return (
                "refused",
                "idempotency_key was already used for a different reading",
                None,
            )
        return (
            "refused",
            f"meter {sub.meter_id!r} already has a different reading at "
            f"{sub.ts.isoformat()}",
            None,
        )
    problem = await _implausible(conn, sub)
    if problem is not None:
        return "refused", problem, None
    reading_id: int = await conn.fetchval(
        "INSERT INTO manual_readings (gateway_id, meter_id, ts, register_wh,"
        " idempotency_key, submitted_by) VALUES ($1, $2, $3, $4, $5,"
        " (SELECT id FROM users WHERE id = $6)) RETURNING id",
        sub.gateway_id,
        sub.meter_id,
        sub.ts,
        sub.register_wh,
        sub.idempotency_key,
        sub.submitted_by,
    )
    return "stored", None, reading_id


async def decide(conn: asyncpg.Connection, sub: Submission) -> Outcome | None:
    """Decide ``sub`` once: store it (or refuse it) and record the outcome in one
    transaction. A submission decided before returns that outcome (``new``
    False); one whose gateway is gone returns None (nothing to record it on)."""
    async with conn.transaction():
        # one decision per meter at a time, so two cannot both pass the checks
        await conn.execute(
            "SELECT pg_advisory_xact_lock(hashtext('fusebox-manual:' || $1 || '/' "
            "|| $2))",
            sub.gateway_id,
            sub.meter_id,
        )
        done = await conn.fetchrow(
            "SELECT state, reason, reading_id FROM manual_submissions WHERE id = $1",
            uuid.UUID(sub.id),
        )
        if done is not None:
            return Outcome(done["state"], done["reason"], done["reading_id"], False)
        if not await conn.fetchval(
            "SELECT 1 FROM gateways WHERE id = $1", sub.gateway_id
        ):
            return None
        state, reason, reading_id = await _store(conn, sub)
        await conn.execute(
            "INSERT INTO manual_submissions (id, gateway_id, meter_id, ts, register_wh,"
            " idempotency_key, state, reason, reading_id, submitted_by, accepted_at)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9,"
            " (SELECT id FROM users WHERE id = $10), $11)",
            uuid.UUID(sub.id),
            sub.gateway_id,
            sub.meter_id,
            sub.ts,
            sub.register_wh,
            sub.idempotency_key,
            state,
            reason,
            reading_id,
            sub.submitted_by,
            sub.accepted_at,
        )
        return Outcome(state, reason, reading_id, True)


# --------------------------------------------------------- SQLite (one node)


class SqliteIntake:
    """The single-node intake: an append-only SQLite file (WAL,
    ``synchronous=FULL``) used from one thread of its own, so the event loop
    never waits on an fsync. ``max_pending``: refuse (``IntakeFull``) beyond it."""

    def __init__(self, path: Path, *, max_pending: int = 1_000_000) -> None:
        self.path = path
        self.max_pending = max_pending
        self._db: sqlite3.Connection | None = None
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="intake")
        self._arrived = asyncio.Event()

    async def _call(self, fn: Callable[[sqlite3.Connection], Any]) -> Any:
        def run() -> Any:
            assert self._db is not None, "SqliteIntake.start() first"
            return fn(self._db)

        return await asyncio.get_running_loop().run_in_executor(self._thread, run)

    async def start(self) -> None:
        """Open (or create) the file."""

        def open_db() -> sqlite3.Connection:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(
                self.path, check_same_thread=False, isolation_level=None
            )
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.execute(
                "CREATE TABLE IF NOT EXISTS intake (n INTEGER PRIMARY KEY, id TEXT"
                " NOT NULL UNIQUE, gateway_id TEXT NOT NULL, body BLOB NOT NULL,"
                " done INTEGER NOT NULL DEFAULT 0)"
            )
            db.execute("CREATE INDEX IF NOT EXISTS intake_todo ON intake (done, n)")
            return db

        self._db = await asyncio.get_running_loop().run_in_executor(
            self._thread, open_db
        )

    async def close(self) -> None:
        """Close the file."""
        if self._db is not None:
            await self._call(lambda db: db.close())
            self._db = None
        self._thread.shutdown(wait=False)

    async def accept(self, sub: Submission) -> None:
        """Append ``sub`` (a replay of a waiting one is kept once); fsynced."""

        def append(db: sqlite3.Connection) -> bool:
            waiting = db.execute("SELECT count(*) FROM intake WHERE done = 0")
            if waiting.fetchone()[0] >= self.max_pending:
                return False
            db.execute(
                "INSERT OR IGNORE INTO intake (id, gateway_id, body) VALUES (?, ?, ?)",
                (sub.id, sub.gateway_id, sub.to_bytes()),
            )
            return True

        try:
            room = await self._call(append)
        except sqlite3.Error as exc:
            raise IntakeDown(f"the intake file failed: {exc}") from exc
        if not room:
            raise IntakeFull(f"{self.max_pending} submissions waiting")
        self._arrived.set()

    async def pending(self, gateway_id: str, submission_id: str) -> Submission | None:
        """The waiting submission, if it is this gateway's."""
        row = await self._call(
            lambda db: db.execute(
                "SELECT body FROM intake WHERE id = ? AND gateway_id = ?",
                (submission_id, gateway_id),
            ).fetchone()
        )
        return None if row is None else Submission.from_bytes(row[0])

    async def fetch(self, max_n: int, wait_s: float) -> list[Delivery]:
        """The oldest undecided submissions; ack marks them done (and prunes)."""
        rows = await self._todo(max_n)
        if not rows:
            self._arrived.clear()
            try:
                async with asyncio.timeout(wait_s):
                    await self._arrived.wait()
            except TimeoutError:
                return []
            rows = await self._todo(max_n)
        return [self._delivery(n, body) for n, body in rows]

    async def _todo(self, max_n: int) -> list[tuple[int, bytes]]:
        rows: list[tuple[int, bytes]] = await self._call(
            lambda db: db.execute(
                "SELECT n, body FROM intake WHERE done = 0 ORDER BY n LIMIT ?",
                (max_n,),
            ).fetchall()
        )
        return rows

    def _delivery(self, n: int, body: bytes) -> Delivery:
        async def ack() -> None:
            # decided rows go: the outcome lives in PostgreSQL from now on
            await self._call(
                lambda db: db.execute("DELETE FROM intake WHERE n = ?", (n,))
            )

        try:
            sub: Submission | None = Submission.from_bytes(body)
        except (ValueError, KeyError, TypeError):
            sub = None
        return Delivery(sub, ack, body)


# --------------------------------------------------------- JetStream (cluster)


def subject_for(gateway_id: str, submission_id: str) -> str:
    """The subject of a submission: gateway ids may hold dots (a subject's token
    separator), written as ``~``, which no gateway id holds."""
    return f"{INTAKE_SUBJECT_PREFIX}.{gateway_id.replace('.', '~')}.{submission_id}"


class JetStreamIntake:
    """The cluster intake: the JetStream stream ``FUSEBOX_INTAKE`` and its
    durable pull consumer ``intake`` (see the module)."""

    def __init__(
        self,
        servers: list[str],
        *,
        replicas: int = 1,
        max_msgs: int = 10_000_000,
        max_age_s: float = 7 * 86400,
        publish_timeout_s: float = 5.0,
        ack_wait_s: float = 30.0,
    ) -> None:
        self.servers = servers
        self.ack_wait_s = ack_wait_s
        self.replicas = replicas
        self.max_msgs = max_msgs
        self.max_age_s = max_age_s
        self.publish_timeout_s = publish_timeout_s
        self._nc: Any = None
        self._js: Any = None
        self._sub: Any = None
        self._retrying: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Connect and create the stream (and the consumer) if absent; if the
        backbone cannot be reached, keep trying in the background, answering
        ``IntakeDown`` (503) meanwhile, so the API serves everything else."""
        try:
            await self._connect()
        except Exception as exc:  # nats-py raises several unrelated types here
            log.warning("intake: backbone not reachable (%r); retrying", exc)
            self._retrying = asyncio.create_task(self._connect_until_done())

    async def _connect_until_done(self) -> None:
        delay_s = 1.0
        while self._js is None:
            await asyncio.sleep(delay_s)
            try:
                await self._connect()
            except Exception as exc:
                log.debug("intake: backbone still not reachable: %r", exc)
                delay_s = min(delay_s * 2, 30.0)
        log.info("intake: connected to the backbone")

    async def _connect(self) -> None:
        from nats.aio.client import Client
        from nats.js import api
        from nats.js.errors import NotFoundError

        nc = Client()
        try:
            # nats-py retries the first connect as often as later reconnects
            # (for ever here): bound it, and retry in _connect_until_done
            async with asyncio.timeout(self.publish_timeout_s):
                await nc.connect(
                    servers=self.servers,
                    max_reconnect_attempts=-1,
                    connect_timeout=2,
                    allow_reconnect=True,
                )
        except BaseException:
            await nc.close()
            raise
        js = nc.jetstream(timeout=self.publish_timeout_s)
        config = api.StreamConfig(
            name=INTAKE_STREAM,
            subjects=[f"{INTAKE_SUBJECT_PREFIX}.>"],
            retention=api.RetentionPolicy.LIMITS,
            storage=api.StorageType.FILE,
            discard=api.DiscardPolicy.NEW,
            max_msgs=self.max_msgs,
            max_age=self.max_age_s,
            num_replicas=self.replicas,
            duplicate_window=120.0,
        )
        try:
            try:
                await js.stream_info(INTAKE_STREAM)
            except NotFoundError:
                await js.add_stream(config)
        except BaseException:
            await nc.close()
            raise
        self._nc, self._js = nc, js

    def _stream(self) -> Any:
        if self._js is None:
            raise IntakeDown("the backbone is not reachable")
        return self._js

    async def close(self) -> None:
        """Stop retrying; close the connection."""
        if self._retrying is not None:
            self._retrying.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._retrying
        if self._nc is not None:
            await self._nc.close()
            self._nc = None
            self._js = None

    async def accept(self, sub: Submission) -> None:
        """Publish and wait for the PubAck (stored by the stream); the id is the
        message id, so a replay within two minutes is stored once."""
        from nats.errors import Error as NatsError
        from nats.js.errors import APIError

        try:
            await self._stream().publish(
                subject_for(sub.gateway_id, sub.id),
                sub.to_bytes(),
                stream=INTAKE_STREAM,
                headers={"Nats-Msg-Id": sub.id},
            )
        except APIError as exc:
            if "maximum" in str(exc).lower() or "full" in str(exc).lower():
                raise IntakeFull(f"the intake stream is full: {exc}") from exc
            raise IntakeDown(f"the intake stream refused: {exc}") from exc
        except (NatsError, TimeoutError, OSError) as exc:
            raise IntakeDown(f"the intake stream did not confirm: {exc!r}") from exc

    async def pending(self, gateway_id: str, submission_id: str) -> Submission | None:
        """The submission from the stream, if it is there."""
        from nats.errors import Error as NatsError
        from nats.js.errors import NotFoundError

        try:
            msg = await self._stream().get_last_msg(
                INTAKE_STREAM, subject_for(gateway_id, submission_id)
            )
        except NotFoundError:
            return None
        except (NatsError, TimeoutError) as exc:
            raise IntakeDown(f"the intake stream did not answer: {exc!r}") from exc
        return Submission.from_bytes(msg.data)

    async def fetch(self, max_n: int, wait_s: float) -> list[Delivery]:
        """Up to ``max_n`` messages of the durable consumer ``intake``."""
        from nats.errors import Error as NatsError
        from nats.errors import TimeoutError as NatsTimeout
        from nats.js import api

        if self._sub is None:
            self._sub = await self._stream().pull_subscribe(
                f"{INTAKE_SUBJECT_PREFIX}.>",
                durable=CONSUMER_NAME,
                stream=INTAKE_STREAM,
                config=api.ConsumerConfig(
                    ack_wait=self.ack_wait_s, max_ack_pending=1000
                ),
            )
        try:
            msgs = await self._sub.fetch(max_n, timeout=wait_s)
        except (NatsTimeout, TimeoutError):
            return []
        except NatsError as exc:
            raise IntakeDown(f"the intake stream did not deliver: {exc!r}") from exc
        out = []
        for m in msgs:
            try:
                sub: Submission | None = Submission.from_bytes(m.data)
            except (ValueError, KeyError, TypeError):
                sub = None
            out.append(Delivery(sub, m.ack, m.data))
        return out


# -------------------------------------------------------------- the consumer


class IntakeConsumer:
    """Takes submissions from an ``Intake`` and decides them into PostgreSQL;
    acks each only after its transaction committed. A database error leaves the
    batch unacknowledged (delivered again) and backs off."""

    def __init__(self, intake: Intake, pool: asyncpg.Pool, *, batch: int = 100) -> None:
        self.intake = intake
        self.pool = pool
        self.batch = batch
        self.decided = 0
        self.unreadable = 0

    async def drain_once(self, wait_s: float = 0.5) -> int:
        """Decide one batch; returns how many were delivered."""
        deliveries = await self.intake.fetch(self.batch, wait_s)
        for d in deliveries:
            if d.submission is None:
                self.unreadable += 1
                log.error("intake: unreadable submission dropped: %r", d.raw[:200])
            else:
                async with self.pool.acquire() as conn:
                    outcome = await decide(conn, d.submission)
                if outcome is None:
                    log.warning("intake: %s: gateway gone", d.submission.id)
                elif outcome.new:
                    self.decided += 1
            await d.ack()
        return len(deliveries)

    async def run(self) -> None:
        """Decide submissions until cancelled."""
        delay_s = 0.5
        while True:
            try:
                await self.drain_once()
                delay_s = 0.5
            except (asyncpg.PostgresError, OSError, IntakeError) as exc:
                log.warning("intake: %s; retrying in %.1f s", exc, delay_s)
                await asyncio.sleep(delay_s)
                delay_s = min(delay_s * 2, 30.0)


class IntakeSettings(BaseSettings):
    """``FUSEBOX_BACKBONE_URL`` (``nats://...``, comma-separated, as for ingest:
    the JetStream intake on the backbone; unset: the
    SQLite one at ``FUSEBOX_INTAKE_PATH``, default ``intake-<database>.sqlite3``
    in ``FUSEBOX_STATE_DIR``, one file per database it drains into) and
    ``FUSEBOX_INTAKE_CONSUMER`` (``on``: this API process runs the consumer)."""

    model_config = SettingsConfigDict(env_prefix="FUSEBOX_", extra="ignore")

    backbone_url: str | None = None
    state_dir: Path = Path("var/cloud")
    intake_path: Path | None = None
    intake_replicas: int = Field(default=1, ge=1, le=5)
    intake_consumer: Literal["on", "off"] = "on"


def intake_from_settings(s: IntakeSettings | None = None, dsn: str = "") -> Intake:
    """The intake the settings (the environment) describe, for the database at
    ``dsn``."""
    s = s or IntakeSettings()
    if s.backbone_url:
        servers = [u.strip() for u in s.backbone_url.split(",") if u.strip()]
        return JetStreamIntake(servers, replicas=s.intake_replicas)
    if s.intake_path is not None:
        return SqliteIntake(s.intake_path)
    parts = urlsplit(dsn)
    name = f"{parts.hostname or 'local'}-{parts.port or 5432}{parts.path}"
    safe = re.sub(r"[^A-Za-z0-9_.\-]", "_", name)[:120]
    return SqliteIntake(s.state_dir / f"intake-{safe}.sqlite3")
