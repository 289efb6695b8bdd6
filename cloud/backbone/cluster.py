"""Run the backbone's nats-server processes: start, stop, kill, reload, readiness.

:class:`NatsNode` is one nats-server subprocess whose config, log and JetStream store
live in one dir; :class:`BackboneCluster` is 1..N of them on loopback, with ports
picked once (kept across restarts) and the users they all share. Typical use::

    cluster = BackboneCluster.create(data_dir, nodes=3, users=[...])
    cluster.start()                      # all nodes, then waits until JetStream is up
    ...
    cluster.set_users([...])             # rewrite every config, SIGHUP every node
    cluster.kill(1); cluster.start_node(1); cluster.stop()

Readiness is the monitoring endpoint ``/healthz?js-enabled-only=true`` of each node
(200 once JetStream is enabled on it; in a cluster JetStream's meta leader must also
exist before streams can be created: ``cloud.backbone.streams.wait_jetstream``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

from cloud.backbone.config import (
    BackboneUser,
    ClusterSpec,
    NodeSpec,
    render_node_config,
)

__all__ = [
    "BackboneCluster",
    "BackboneStartError",
    "NatsNode",
    "NatsServerNotFoundError",
    "find_nats_server",
    "free_tcp_ports",
]

log = logging.getLogger(__name__)

_NATS_SERVER_CANDIDATES = ("/usr/sbin/nats-server", "/usr/bin/nats-server")


class BackboneStartError(RuntimeError):
    """A nats-server did not come up; the message holds its log tail."""


class NatsServerNotFoundError(BackboneStartError, FileNotFoundError):
    """nats-server is not installed."""


def find_nats_server() -> str | None:
    """The nats-server binary: ``$FUSEBOX_NATS_SERVER``, ``PATH``, Debian's path."""
    explicit = os.environ.get("FUSEBOX_NATS_SERVER")
    if explicit:
        return explicit
    on_path = shutil.which("nats-server")
    if on_path:
        return on_path
    for candidate in _NATS_SERVER_CANDIDATES:
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def _ephemeral_low() -> int:
    """The lowest port Linux hands out to outgoing connections (32768 elsewhere)."""
    try:
        text = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text()
        return int(text.split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_tcp_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """``count`` distinct ports free on ``host`` right now, below the ephemeral
    range: a node restarted after a kill must bind its ports again, and a port
    from the ephemeral range may meanwhile be the local end of some outgoing
    connection. Held open together while picking, so all differ."""
    low = max(1024, min(_ephemeral_low(), 65536) - 12000)
    high = max(low + 1000, min(_ephemeral_low(), 65536))
    sockets: list[socket.socket] = []
    try:
        tries = 0
        while len(sockets) < count:
            tries += 1
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            port = random.randrange(low, high) if tries < 50 * count else 0
            try:
                sock.bind((host, port))
            except OSError:
                sock.close()
                continue
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _tail(path: Path, n: int) -> str:
    if not path.exists():
        return f"({path} does not exist)"
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    return "\n".join(lines[-n:])


def _term_with_parent() -> None:
    """In the child before exec: ask Linux for SIGTERM when the parent dies."""
    import ctypes

    pr_set_pdeathsig = 1
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def http_ok(url: str, *, timeout_s: float = 1.0) -> bool:
    """True when GET ``url`` answers 200."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return bool(response.status == 200)
    except (OSError, urllib.error.URLError):
        return False


@dataclass(eq=False)
class NatsNode:
    """One nats-server process: config, log and store under ``spec.store_dir``'s
    parent (``<node dir>/nats.conf``, ``nats.log``, ``jetstream/``)."""

    spec: NodeSpec
    binary: str
    # SIGTERM the node when the thread that started it exits (Linux); for a command
    # in the foreground, so a killed supervisor leaves no node behind
    die_with_parent: bool = False
    _process: subprocess.Popen[bytes] | None = field(default=None, init=False)

    @property
    def node_dir(self) -> Path:
        """The node's own dir (config, log, store)."""
        return self.spec.store_dir.parent

    @property
    def conf_path(self) -> Path:
        """Its generated config file."""
        return self.node_dir / "nats.conf"

    @property
    def log_path(self) -> Path:
        """Its stdout/stderr (nats-server logs to stderr)."""
        return self.node_dir / "nats.log"

    @property
    def pid(self) -> int | None:
        """The process id while it runs."""
        return self._process.pid if self._process else None

    @property
    def is_running(self) -> bool:
        """True while the process lives."""
        return self._process is not None and self._process.poll() is None

    def write_config(self, cluster: ClusterSpec, users: Sequence[BackboneUser]) -> None:
        """Write the config atomically (a reload never reads half a file)."""
        self.node_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.conf_path.with_suffix(".conf.tmp")
        tmp.write_text(render_node_config(self.spec, cluster, users), encoding="utf-8")
        os.chmod(tmp, 0o600)
        tmp.replace(self.conf_path)

    def start(self) -> None:
        """Start the process (returns at once; see :meth:`wait_ready`)."""
        if self.is_running:
            return
        with self.log_path.open("ab") as out:
            self._process = subprocess.Popen(
                [self.binary, "-c", str(self.conf_path)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_term_with_parent if self.die_with_parent else None,
            )

    def wait_ready(self, timeout_s: float) -> None:
        """Wait until the node's JetStream is enabled (``/healthz``)."""
        url = f"{self.spec.monitor_url}/healthz?js-enabled-only=true"
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self.is_running:
                break
            if http_ok(url):
                return
            time.sleep(0.05)
        code = self._process.poll() if self._process else None
        raise BackboneStartError(
            f"nats-server {self.spec.name} was not ready within {timeout_s} s "
            f"(exit code {code}); config {self.conf_path}; log tail:\n"
            f"{self.log_tail(30)}"
        )

    def reload(self) -> None:
        """SIGHUP: nats-server re-reads its config (users, permissions)."""
        if self._process is not None and self.is_running:
            self._process.send_signal(signal.SIGHUP)

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM (clean shutdown: JetStream flushes), wait; SIGKILL if stuck."""
        process = self._process
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            log.warning("nats-server %s did not stop; killing it", self.spec.name)
            self.kill()

    def kill(self) -> None:
        """SIGKILL, as in a crash."""
        process = self._process
        if process is None or process.poll() is not None:
            return
        process.kill()
        process.wait()

    def log_tail(self, n: int = 50) -> str:
        """The last ``n`` lines of its log."""
        return _tail(self.log_path, n)


@dataclass(eq=False)
class BackboneCluster:
    """1..N nats-server nodes on loopback sharing one set of users."""

    spec: ClusterSpec
    nodes: list[NatsNode]
    users: list[BackboneUser]
    start_timeout_s: float = 30.0

    @classmethod
    def create(
        cls,
        data_dir: Path,
        *,
        nodes: int = 1,
        users: Sequence[BackboneUser] = (),
        base_port: int | None = None,
        binary: str | None = None,
        start_timeout_s: float = 30.0,
        die_with_parent: bool = False,
    ) -> Self:
        """Lay out ``nodes`` nodes under ``data_dir/n<i>/`` with free ports (or, with
        ``base_port``, the client ports ``base_port + i``, MQTT ``base_port + 100 +
        i``, routes ``+ 200 + i``, monitor ``+ 300 + i``). Raises
        :class:`NatsServerNotFoundError` when nats-server is missing.
        ``die_with_parent``: see :class:`NatsNode`."""
        if nodes < 1:
            raise ValueError("a backbone needs at least one node")
        found = binary or find_nats_server()
        if found is None:
            raise NatsServerNotFoundError(
                "nats-server is not installed: run `apt-get install -y nats-server` "
                "(Debian/Ubuntu) or set FUSEBOX_NATS_SERVER to its path"
            )
        if base_port is None:
            ports = free_tcp_ports(4 * nodes)
        else:
            ports = [
                base_port + offset + i
                for i in range(nodes)
                for offset in (0, 100, 200, 300)
            ]
        specs = tuple(
            NodeSpec(
                name=f"fusebox-n{i}",
                client_port=ports[4 * i],
                mqtt_port=ports[4 * i + 1],
                cluster_port=ports[4 * i + 2] if nodes > 1 else None,
                monitor_port=ports[4 * i + 3],
                store_dir=data_dir / f"n{i}" / "jetstream",
            )
            for i in range(nodes)
        )
        spec = ClusterSpec(nodes=specs)
        return cls(
            spec=spec,
            nodes=[
                NatsNode(node_spec, found, die_with_parent=die_with_parent)
                for node_spec in specs
            ],
            users=list(users),
            start_timeout_s=start_timeout_s,
        )

    @property
    def nats_urls(self) -> list[str]:
        """One ``nats://`` URL per node."""
        return [node.spec.nats_url for node in self.nodes]

    @property
    def mqtt_urls(self) -> list[str]:
        """One ``mqtt://`` URL per node."""
        return [node.spec.mqtt_url for node in self.nodes]

    def start(self) -> Self:
        """Write every config, start every node not running, wait until all ready.

        On failure the nodes started here are killed and the error raised."""
        for node in self.nodes:
            node.write_config(self.spec, self.users)
        try:
            for node in self.nodes:
                node.start()
            for node in self.nodes:
                node.wait_ready(self.start_timeout_s)
        except BaseException:
            self.kill_all()
            raise
        return self

    def start_node(self, index: int, attempts: int = 5) -> None:
        """(Re)start node ``index`` with the current users and wait until ready.

        Its ports must stay the same (the other nodes' routes name them): if one is
        still taken (a connection lingering from before the crash), try again a
        second later, ``attempts`` times in all."""
        node = self.nodes[index]
        node.write_config(self.spec, self.users)
        for attempt in range(attempts):
            node.start()
            try:
                node.wait_ready(self.start_timeout_s)
                return
            except BackboneStartError:
                in_use = "address already in use" in node.log_tail(5)
                if not in_use or attempt == attempts - 1:
                    raise
                log.warning("%s: a port is still in use; retrying", node.spec.name)
                time.sleep(1.0)

    def kill(self, index: int) -> None:
        """SIGKILL node ``index``."""
        self.nodes[index].kill()

    def stop_node(self, index: int, timeout_s: float = 10.0) -> None:
        """Stop node ``index`` cleanly."""
        self.nodes[index].stop(timeout_s)

    def set_users(self, users: Sequence[BackboneUser]) -> None:
        """Replace the users: rewrite every node's config and reload the running
        ones (no restart; connected clients whose permissions changed are
        re-checked by nats-server, removed users are disconnected)."""
        self.users = list(users)
        for node in self.nodes:
            node.write_config(self.spec, self.users)
            node.reload()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop every node cleanly (SIGTERM to all, then wait)."""
        for node in self.nodes:
            if node.is_running and node._process is not None:
                with contextlib.suppress(ProcessLookupError):
                    node._process.send_signal(signal.SIGTERM)
        for node in self.nodes:
            node.stop(timeout_s)

    def kill_all(self) -> None:
        """SIGKILL every node."""
        for node in self.nodes:
            node.kill()

    def log_tails(self, n: int = 30) -> str:
        """Every node's log tail, headed by its name."""
        return "\n".join(
            f"--- {node.spec.name} ({node.log_path}) ---\n{node.log_tail(n)}"
            for node in self.nodes
        )
