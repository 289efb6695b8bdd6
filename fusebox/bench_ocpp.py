"""``fusebox bench ocpp``: many chargers on one edge process.

N chargers connect (OCPP-J 1.6, Basic auth, no compression), boot, report status,
then each sends MeterValues every ``--meter-interval`` seconds and a Heartbeat every
``--heartbeat-interval`` seconds, spread evenly. Measured over the steady window:
messages per second answered, request-to-CallResult latency (p50/p99), answers
that were CallErrors or missing, the edge's RSS and the RSS each connection costs.

Baseline in the same run: the same load against a bare websocket server that
answers every CALL with an empty CallResult (no OCPP, no outbox), so
``p99_vs_baseline`` shows what the edge's own work adds.

The load generator is the fleet simulator's chargers (``simulators.fleet``: a
minimal websocket client, raw OCPP-J frames) in ``--client-processes`` worker
processes (default one per 5,000 chargers, at least two), so it is not the
bottleneck being measured; their own RSS is printed beside the server's. Every
connection is a file descriptor on both sides: the bench raises its open-file
limit (RLIMIT_NOFILE) to the chargers plus 256 before it starts the servers,
which inherit it (above the hard limit only where the process may: root with
CAP_SYS_RESOURCE); if the limit stays short it refuses at once and says so.

The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil

from simulators.fleet import Fleet, FleetConfig, raise_fd_limit

PASSWORD = "bench-password-0123"

_ECHO_SERVER = r"""
import asyncio, json, sys, websockets
async def handle(ws):
    async for frame in ws:
        msg = json.loads(frame)
        if msg[0] == 2:
            await ws.send(json.dumps([3, msg[1], {}]))
async def main():
    async with websockets.serve(handle, "127.0.0.1", int(sys.argv[1]),
                                subprotocols=["ocpp1.6"], compression=None,
                                ping_interval=None):
        await asyncio.Future()
asyncio.run(main())
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _say(text: str) -> None:
    print(f"[bench] {text}", file=sys.stderr, flush=True)


async def _bring_up(fleet: Fleet, n: int, label: str) -> float:
    """Until every charger is connected and booted (Boot and Status answered);
    returns the seconds it took. Fails if the chargers cannot all connect."""
    t0 = time.perf_counter()
    deadline = t0 + max(120.0, n / 50.0)
    last_print = t0
    while True:
        s = await fleet.stats()
        if s.chargers_connected >= n and s.charger_answers >= 2 * n:
            return time.perf_counter() - t0
        now = time.perf_counter()
        if now > deadline:
            raise SystemExit(
                f"[bench] {label}: only {s.chargers_connected:,} of {n:,} chargers "
                f"connected ({s.charger_connect_failures:,} attempts failed) "
                f"after {now - t0:.0f} s: see the log lines above"
            )
        if now - last_print >= 10:
            _say(
                f"{label}: {s.chargers_connected:,} of {n:,} connected "
                f"({s.charger_connect_failures:,} attempts failed, retrying)"
            )
            last_print = now
        await asyncio.sleep(0.5)


async def _drive(url: str, args: argparse.Namespace, label: str) -> dict[str, Any]:
    """The fleet's chargers (in ``--client-processes`` worker processes, so the
    load generator is not the bottleneck) against the server at ``url``."""
    n = args.chargers
    config = FleetConfig(
        mqtt_url=None,
        gateways=0,
        chargers=n,
        ocpp_url=url,
        charger_password=PASSWORD,
        charger_meter_interval_s=args.meter_interval,
        charger_heartbeat_s=args.heartbeat_interval,
        processes=args.client_processes,
    )
    async with Fleet(config) as fleet:
        connect_s = await _bring_up(fleet, n, label)
        _say(f"{label}: {n:,} chargers up in {connect_s:.1f} s")
        await asyncio.sleep(args.meter_interval)  # warm up: one full cycle
        await fleet.measure(True)
        before = await fleet.stats()
        t_measure = time.perf_counter()
        for _ in range(int(args.duration // 10)):
            await asyncio.sleep(10)
            s = await fleet.stats()
            _say(f"{label}: {s.charger_answers - before.charger_answers:,} answers")
        await asyncio.sleep(args.duration % 10)
        elapsed = time.perf_counter() - t_measure
        latencies = await fleet.latencies_ms()
        await fleet.measure(False)
        after = await fleet.stats()
    return {
        "connect_s": connect_s,
        "msgs_per_s": len(latencies) / elapsed,
        "p50_ms": _percentile(latencies, 0.50),
        "p99_ms": _percentile(latencies, 0.99),
        "call_errors": after.charger_call_errors,
        "failures": after.charger_call_timeouts,
        "connect_failures": after.charger_connect_failures,
        "server_calls": after.server_calls,
        "client_rss_mb": after.rss_bytes / 2**20,
        "client_processes": after.processes,
    }


def _wait_port(port: int, proc: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"[bench] {what} exited with {proc.returncode}")
        with (
            contextlib.suppress(OSError),
            socket.create_connection(("127.0.0.1", port), timeout=0.5),
        ):
            return
        time.sleep(0.1)
    raise SystemExit(f"[bench] {what} did not listen on {port}")


def _edge_config(state: Path, port: int, n: int) -> Path:
    chargers = "".join(
        f'[[chargers]]\nid = "CP{i:05d}"\npassword = "{PASSWORD}"\n\n' for i in range(n)
    )
    config = state / "edge.toml"
    config.write_text(
        f"""gateway_id = "gw-bench-ocpp"
[cloud]
# no cloud in this bench: the uplink retries in the background, events stay queued
mqtt_url = "mqtt://127.0.0.1:{_free_port()}"
[outbox]
path = "{state / "outbox.db"}"
[ocpp]
port = {port}
heartbeat_interval_s = 60

{chargers}"""
    )
    return config


def _stop_edge(edge: subprocess.Popen[bytes], log_name: str) -> bool:
    """SIGTERM, then SIGKILL after 30 s; whether it stopped on SIGTERM. A hang
    is reported, not fatal: the figures measured before it are kept."""
    edge.terminate()
    try:
        edge.wait(30)
    except subprocess.TimeoutExpired:
        edge.kill()
        edge.wait()
        _say(f"the edge did not stop within 30 s of SIGTERM (killed): see {log_name}")
        return False
    return True


def _fd_limit(chargers: int) -> int:
    """Raise the open-file limit for ``chargers`` connections (server and
    clients inherit it); refuse early if it stays too low."""
    wanted = chargers + 256  # the server's own files: listener, outbox, logs
    got = raise_fd_limit(wanted)
    _say(f"open-file limit (RLIMIT_NOFILE) raised to {got:,}")
    if got < wanted:
        raise SystemExit(
            f"[bench] {chargers:,} chargers need about {wanted:,} open files in the "
            f"server process, but RLIMIT_NOFILE stays at {got:,}: run as root, or "
            f"raise the hard limit (ulimit -Hn, limits.conf, a container's --ulimit "
            f"nofile), or use at most {got - 256:,} chargers"
        )
    return got


def run_ocpp(args: argparse.Namespace) -> dict[str, Any]:
    if getattr(args, "client_processes", None) is None:
        args.client_processes = max(2, math.ceil(args.chargers / 5000))
    fd_limit = _fd_limit(args.chargers)
    state = Path(args.state_dir) / "ocpp"
    shutil.rmtree(state, ignore_errors=True)
    state.mkdir(parents=True)
    py = sys.executable

    echo_port = _free_port()
    echo = subprocess.Popen([py, "-c", _ECHO_SERVER, str(echo_port)])
    try:
        _wait_port(echo_port, echo, "baseline server")
        baseline = asyncio.run(_drive(f"ws://127.0.0.1:{echo_port}", args, "baseline"))
    finally:
        echo.terminate()
        echo.wait(10)

    port = _free_port()
    config = _edge_config(state, port, args.chargers)
    log = (state / "edge.log").open("wb")
    edge = subprocess.Popen(
        [
            py,
            "-m",
            "fusebox",
            "--log-level",
            "warning",
            "edge",
            "run",
            "--config",
            str(config),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        _wait_port(port, edge, "edge")
        ps = psutil.Process(edge.pid)
        rss_idle = ps.memory_info().rss
        peak = [rss_idle]

        async def measured() -> dict[str, Any]:
            async def sample() -> None:
                while True:
                    peak[0] = max(peak[0], ps.memory_info().rss)
                    await asyncio.sleep(0.5)

            sampler = asyncio.create_task(sample())
            try:
                return await _drive(f"ws://127.0.0.1:{port}/ocpp", args, "edge")
            finally:
                sampler.cancel()

        result = asyncio.run(measured())
    finally:
        stopped_cleanly = _stop_edge(edge, log.name)
        log.close()
    n = args.chargers
    return {
        "bench": "ocpp",
        "chargers": n,
        "msgs_per_s": round(result["msgs_per_s"], 1),
        "p50_ms": round(result["p50_ms"], 2),
        "p99_ms": round(result["p99_ms"], 2),
        "edge_rss_mb": round(peak[0] / 2**20, 1),
        "kib_per_connection": round((peak[0] - rss_idle) / 1024 / n, 1),
        "connect_s": round(result["connect_s"], 1),
        "call_errors": result["call_errors"],
        "failures": result["failures"],
        # connection attempts that failed (timed out, refused) and were retried
        "connect_failures": result["connect_failures"],
        # the edge's own CALLs (capability discovery, fail-safe profile), answered
        "edge_calls_answered": result["server_calls"],
        "baseline_p99_ms": round(baseline["p99_ms"], 2),
        "p99_vs_baseline": round(result["p99_ms"] / baseline["p99_ms"], 2)
        if baseline["p99_ms"] > 0
        else None,
        "baseline_msgs_per_s": round(baseline["msgs_per_s"], 1),
        "client_processes": result["client_processes"],
        "client_rss_mb": round(result["client_rss_mb"], 1),
        "fd_limit": fd_limit,
        # False: the edge needed SIGKILL (its own figures above still stand)
        "edge_stopped_cleanly": stopped_cleanly,
        "load_generator_pid_cpu_s": round(sum(os.times()[:2]), 1),
    }
