"""Processes and network faults for end-to-end tests.

* :class:`Proc` runs a command (``fusebox ...`` or ``python -m ...``) as a subprocess
  with its output in a log file; the ``procs`` fixture kills every Proc a test started
  and prints the log tails when the test failed or a process died unexpectedly.
* :class:`TcpProxy` forwards a TCP port (127.0.0.1, free port) to a TCP or unix-socket
  target from a background thread, so it keeps working while the test's event loop is
  busy and for clients in other processes. ``pause()`` cuts every connection and
  refuses (or silently holds) new ones: the server looks unreachable without stopping
  it. ``url_for(url)`` rewrites a ``postgresql://`` or ``mqtt://`` URL to go through
  the proxy. The ``tcp_proxy_factory`` fixture makes started proxies and stops them.

Typical end-to-end test::

    async def test_outage(procs, pg_dsn, mosquitto, tcp_proxy_factory):
        db = tcp_proxy_factory(pg_dsn)
        cloud = procs.start(["fusebox", "cloud", "run", "--database-url",
                             db.url_for(pg_dsn)], name="cloud")
        db.pause()
        ...
        db.resume()
        await eventually(..., timeout_s=timeout(10), message="backlog drained")
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Callable, Coroutine, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Self, TypeVar

import pytest

from tests.harness.timing import timeout

__all__ = [
    "REPO_ROOT",
    "Proc",
    "Procs",
    "ProxyFactory",
    "TcpProxy",
    "fusebox_command",
    "procs",
    "tcp_proxy_factory",
]

REPO_ROOT = Path(__file__).resolve().parents[2]

_T = TypeVar("_T")

# Every Proc ever started in this pytest process, so that the `procs` fixture can kill
# those a test made directly with Proc(...) as well as through procs.start(...).
_STARTED: list[Proc] = []
# Where Procs without an explicit log_dir write their logs; set per test by `procs`.
_default_log_dir: Path | None = None


def fusebox_command() -> list[str]:
    """The argv prefix that runs the ``fusebox`` CLI in this environment.

    The console script next to this interpreter (the venv's ``bin``), else one on
    ``PATH``, else ``python -m fusebox``.
    """
    beside_python = Path(sys.executable).with_name("fusebox")
    if beside_python.is_file() and os.access(beside_python, os.X_OK):
        return [str(beside_python)]
    on_path = shutil.which("fusebox")
    if on_path:
        return [on_path]
    return [sys.executable, "-m", "fusebox"]


def _safe_file_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "proc"


class Proc:
    """One subprocess of an end-to-end test, with stdout and stderr in a log file.

    ``argv`` starting with ``"fusebox"`` runs the CLI of this checkout (see
    :func:`fusebox_command`). ``env`` entries are added to (and override) this
    process's environment; ``PYTHONUNBUFFERED=1`` is set so logs are live. The log is
    ``<log_dir>/<name>.log``: the test's artifacts dir under the ``procs`` fixture.

    Call :meth:`start`, then :meth:`terminate` (graceful), :meth:`kill` (crash) or
    :meth:`wait`. A Proc can be started again after it exited; the log is appended.
    """

    def __init__(
        self,
        argv: Sequence[str],
        *,
        name: str | None = None,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        log_dir: Path | None = None,
    ) -> None:
        if not argv:
            raise ValueError("Proc needs a command: argv is empty")
        argv = list(argv)
        if argv[0] == "fusebox":
            argv = fusebox_command() + argv[1:]
        self.argv = argv
        self.name = name or Path(argv[0]).name
        self.env = dict(env or {})
        self.cwd = cwd or REPO_ROOT
        self._log_dir = log_dir
        self._process: subprocess.Popen[bytes] | None = None
        self._stopped_on_purpose = False

    def __repr__(self) -> str:
        return f"Proc({self.name!r}, pid={self.pid}, returncode={self.returncode})"

    @property
    def log_path(self) -> Path:
        log_dir = self._log_dir or _default_log_dir
        if log_dir is None:
            log_dir = Path(tempfile.mkdtemp(prefix="fusebox-proc-"))
        self._log_dir = log_dir
        return log_dir / f"{_safe_file_name(self.name)}.log"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    @property
    def returncode(self) -> int | None:
        """The exit code (negative: killed by that signal), ``None`` while running."""
        return self._process.poll() if self._process else None

    @property
    def is_running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def failed_unexpectedly(self) -> bool:
        """Exited non-zero without the test stopping it."""
        code = self.returncode
        return code not in (None, 0) and not self._stopped_on_purpose

    def start(self) -> Self:
        """Start the process (its own session, so kill() reaches its children)."""
        if self.is_running:
            raise RuntimeError(f"{self!r} is already running: stop it first")
        log_path = self.log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.env}
        with log_path.open("ab") as log_file:
            stamp = time.strftime("%H:%M:%S")
            log_file.write(f"=== {stamp} start: {' '.join(self.argv)}\n".encode())
            log_file.flush()
            self._process = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=self.cwd,
                start_new_session=True,
            )
        self._stopped_on_purpose = False
        _STARTED.append(self)
        return self

    def terminate(self, *, timeout_s: float | None = None) -> int | None:
        """SIGTERM, wait up to ``timeout_s`` (default ``timeout(10)``), then SIGKILL.

        Returns the exit code. Leftover children in its process group are killed.
        """
        process = self._process
        if process is None:
            return None
        self._stopped_on_purpose = True
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=timeout(10) if timeout_s is None else timeout_s)
            except subprocess.TimeoutExpired:
                self._write_note("did not exit after SIGTERM: SIGKILL")
                self._kill_group()
                process.wait()
        self._kill_group()
        return process.returncode

    def kill(self) -> int | None:
        """SIGKILL the process and its process group, as in a crash; wait for it."""
        process = self._process
        if process is None:
            return None
        self._stopped_on_purpose = True
        self._kill_group()
        return process.wait()

    def wait(self, *, timeout_s: float | None = None) -> int:
        """Wait for the process to exit by itself (default ``timeout(30)``).

        Raises ``AssertionError`` with the log tail when it is still running.
        """
        process = self._require_process()
        limit_s = timeout(30) if timeout_s is None else timeout_s
        try:
            return process.wait(timeout=limit_s)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"{self!r} still running after {limit_s:.1f} s; log tail:\n"
                f"{self.log_tail(30)}"
            ) from None

    async def wait_async(self, *, timeout_s: float | None = None) -> int:
        """:meth:`wait` without blocking the event loop."""
        return await asyncio.to_thread(self.wait, timeout_s=timeout_s)

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, n: int = 50) -> str:
        """The last ``n`` lines of the process's output."""
        return "\n".join(self.log_text().splitlines()[-n:])

    def _kill_group(self) -> None:
        process = self._process
        if process is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                process.kill()

    def _write_note(self, note: str) -> None:
        with self.log_path.open("a") as log_file:
            log_file.write(f"=== harness: {note}\n")

    def _require_process(self) -> subprocess.Popen[bytes]:
        if self._process is None:
            raise RuntimeError(f"{self!r} was never started: call start() first")
        return self._process


class Procs:
    """The ``procs`` fixture: starts Procs with logs in the test's artifacts dir."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.started: list[Proc] = []

    def start(
        self,
        argv: Sequence[str],
        *,
        name: str | None = None,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> Proc:
        """Start ``argv`` (``["fusebox", ...]`` runs the CLI) and return its Proc."""
        proc = Proc(argv, name=name, env=env, cwd=cwd, log_dir=self.log_dir).start()
        self.started.append(proc)
        return proc

    def report(self, *, test_failed: bool) -> str:
        """Log tails of the processes worth a look (all of them if the test failed)."""
        sections = []
        for proc in self.started:
            if test_failed or proc.failed_unexpectedly:
                sections.append(
                    f"----- {proc.name} (pid {proc.pid}, exit {proc.returncode}, "
                    f"log {proc.log_path}) -----\n{proc.log_tail(40)}"
                )
        return "\n".join(sections)


@pytest.fixture
def procs(request: pytest.FixtureRequest, artifacts_dir: Path) -> Iterator[Procs]:
    """Start processes for a test; at teardown they are all killed.

    Logs go to ``test-artifacts/<test>/<name>.log``. When the test failed, or a process
    exited non-zero without the test stopping it, their log tails are printed (pytest
    shows them under "Captured stdout teardown").
    """
    global _default_log_dir
    first_new = len(_STARTED)
    failures_before = request.session.testsfailed
    group = Procs(artifacts_dir)
    _default_log_dir = artifacts_dir
    try:
        yield group
    finally:
        _default_log_dir = None
        for proc in _STARTED[first_new:]:
            if proc not in group.started:
                group.started.append(proc)
        del _STARTED[first_new:]
        test_failed = request.session.testsfailed > failures_before
        # Report before killing so that exit codes show how they ended by themselves.
        report = group.report(test_failed=test_failed)
        for proc in group.started:
            if proc.is_running:
                proc.kill()
        if report:
            print(f"\n{report}")


# --------------------------------------------------------------------------- proxy


PauseMode = Literal["refuse", "blackhole"]
ProxyFactory = Callable[[str], "TcpProxy"]
"""The type of the ``tcp_proxy_factory`` fixture, for test annotations."""


@dataclass(eq=False)
class _Link:
    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def abort(self) -> None:
        for task in self.tasks:
            task.cancel()
        for writer in (self.client, self.upstream):
            if writer is not None:
                writer.transport.abort()


class TcpProxy:
    """A TCP forwarder on ``listen_host`` (free port) to a TCP or unix-socket target.

    Give ``target_host`` and ``target_port``, or ``target_unix_path``; or build one from
    a server URL with :meth:`for_url`. :meth:`start` it (or use ``with``), hand clients
    :meth:`url_for` URLs, and :meth:`pause` / :meth:`resume` to cut the link.

    Runs its own event loop in a daemon thread: it keeps forwarding while the test's
    loop is blocked, and serves clients in other processes.
    """

    def __init__(
        self,
        target_host: str | None = None,
        target_port: int | None = None,
        *,
        target_unix_path: Path | str | None = None,
        listen_host: str = "127.0.0.1",
        listen_port: int | None = None,
        name: str = "proxy",
    ) -> None:
        if (target_unix_path is None) == (target_host is None or target_port is None):
            raise ValueError(
                "give either target_host and target_port, or target_unix_path"
            )
        self.target_host = target_host
        self.target_port = target_port
        self.target_unix_path = (
            Path(target_unix_path) if target_unix_path is not None else None
        )
        self.host = listen_host
        self._port = listen_port
        self.name = name
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._links: set[_Link] = set()
        self._handlers: set[asyncio.Task[Any]] = set()
        self._paused: PauseMode | None = None
        self.connections_accepted = 0

    @classmethod
    def for_url(cls, url: str, *, name: str = "proxy") -> TcpProxy:
        """A proxy (not started) to the server of a ``postgresql://``/``mqtt://`` URL.

        A PostgreSQL DSN whose ``host`` query parameter is a directory (unix socket, as
        with embedded PostgreSQL) targets ``<dir>/.s.PGSQL.<port>``.
        """
        parts = urllib.parse.urlsplit(url)
        query = dict(urllib.parse.parse_qsl(parts.query))
        host = parts.hostname or query.get("host", "")
        port_text = query.get("port")
        port = parts.port or (int(port_text) if port_text else None)
        if host.startswith("/"):
            socket_port = port or 5432
            return cls(
                target_unix_path=Path(host) / f".s.PGSQL.{socket_port}", name=name
            )
        if not host:
            raise ValueError(f"{url!r} names no host to proxy to")
        if port is None:
            default_ports = {"mqtt": 1883, "mqtts": 8883}
            port = default_ports.get(parts.scheme, 5432)
        return cls(host, port, name=name)

    @property
    def port(self) -> int:
        """The proxy's own port; valid once started."""
        if self._port is None:
            raise RuntimeError(f"{self.name} has no port yet: call start() first")
        return self._port

    @property
    def is_paused(self) -> bool:
        return self._paused is not None

    @property
    def open_connections(self) -> int:
        return len(self._links)

    def url_for(self, url: str) -> str:
        """``url`` with its server replaced by this proxy (user, path, query kept).

        ``host``/``port`` query parameters (unix-socket DSNs) are dropped, so
        ``postgresql://postgres@/db?host=/run/pg`` becomes
        ``postgresql://postgres@127.0.0.1:<proxy port>/db``.
        """
        parts = urllib.parse.urlsplit(url)
        userinfo, at, _ = parts.netloc.rpartition("@")
        netloc = f"{userinfo}{at}{self.host}:{self.port}"
        query = urllib.parse.urlencode(
            [
                (key, value)
                for key, value in urllib.parse.parse_qsl(
                    parts.query, keep_blank_values=True
                )
                if key not in ("host", "port")
            ]
        )
        return urllib.parse.urlunsplit(
            (parts.scheme, netloc, parts.path, query, parts.fragment)
        )

    # ---- control (any thread except the proxy's own)

    def start(self) -> Self:
        """Start forwarding; returns once the port accepts connections."""
        if self._thread is not None:
            return self
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.close()

        self._thread = threading.Thread(
            target=run, name=f"tcp-proxy-{self.name}", daemon=True
        )
        self._thread.start()
        ready.wait()
        self._call(self._listen())
        return self

    def stop(self) -> None:
        """Close every connection and the listener; end the thread."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        with contextlib.suppress(RuntimeError):
            self._call(self._shutdown())
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout(5))
        self._loop = self._thread = None

    def pause(self, *, mode: PauseMode = "refuse") -> None:
        """Cut every open connection; until :meth:`resume`, new ones are refused.

        ``mode="blackhole"`` instead accepts new connections and never answers, as a
        dead network does: clients then hit their own timeouts.
        """
        self._call(self._pause(mode))

    def resume(self) -> None:
        """Forward again (held blackhole connections are closed first)."""
        self._call(self._resume())

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _call(self, coro: Coroutine[Any, Any, _T]) -> _T:
        loop = self._loop
        if loop is None:
            coro.close()
            raise RuntimeError(f"{self.name} is not running: call start() first")
        return asyncio.run_coroutine_threadsafe(coro, loop).result(timeout(10))

    # ---- the proxy's loop

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(
            self._accept, self.host, self._port or 0, reuse_address=True
        )
        if self._port is None:
            self._port = self._server.sockets[0].getsockname()[1]

    async def _close_listener(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
            # Python >= 3.12 waits for handlers here; they are aborted already.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(server.wait_closed(), 1.0)

    def _abort_all(self) -> None:
        for link in list(self._links):
            link.abort()
        self._links.clear()

    async def _pause(self, mode: PauseMode) -> None:
        self._paused = mode
        if mode == "refuse":
            await self._close_listener()
        elif self._server is None:
            await self._listen()
        self._abort_all()

    async def _resume(self) -> None:
        self._abort_all()
        self._paused = None
        if self._server is None:
            await self._listen()

    async def _shutdown(self) -> None:
        await self._close_listener()
        self._abort_all()
        # Let the aborted handlers finish so the loop closes without pending tasks.
        if self._handlers:
            await asyncio.wait(self._handlers, timeout=1.0)

    async def _accept(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.connections_accepted += 1
        link = _Link(client=writer)
        self._links.add(link)
        handler = asyncio.current_task()
        if handler is not None:
            self._handlers.add(handler)
            handler.add_done_callback(self._handlers.discard)
        try:
            if self._paused is not None:
                # Blackhole: swallow whatever the client sends, never answer.
                while await reader.read(65536):
                    pass
                return
            try:
                up_reader, up_writer = await self._open_upstream()
            except OSError:
                return  # target down: the client sees its connection closed
            link.upstream = up_writer
            link.tasks = [
                asyncio.create_task(self._pump(reader, up_writer)),
                asyncio.create_task(self._pump(up_reader, writer)),
            ]
            # Either direction ending (EOF or error) ends the link, as TCP would.
            await asyncio.wait(link.tasks, return_when=asyncio.FIRST_COMPLETED)
        except OSError:
            pass
        finally:
            link.abort()
            self._links.discard(link)

    async def _open_upstream(
        self,
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self.target_unix_path is not None:
            return await asyncio.open_unix_connection(str(self.target_unix_path))
        assert self.target_host is not None and self.target_port is not None
        return await asyncio.open_connection(self.target_host, self.target_port)

    @staticmethod
    async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
            if writer.can_write_eof():
                writer.write_eof()


@pytest.fixture
def tcp_proxy_factory() -> Iterator[Callable[[str], TcpProxy]]:
    """Make started :class:`TcpProxy` objects for server URLs; all stop at teardown.

    ``proxy = tcp_proxy_factory(pg_dsn)``; give clients ``proxy.url_for(pg_dsn)``.
    """
    proxies: list[TcpProxy] = []

    def make(url: str) -> TcpProxy:
        proxy = TcpProxy.for_url(url, name=f"proxy{len(proxies)}").start()
        proxies.append(proxy)
        return proxy

    yield make
    for proxy in proxies:
        proxy.stop()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (for servers a test
    starts; a tiny race with other processes is accepted)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
