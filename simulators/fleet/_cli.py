"""``fusebox sim fleet``: a fleet of gateways (and chargers) from the command line.

    fusebox sim fleet --gateways 10000 --mqtt-url mqtt://127.0.0.1:1883
    fusebox sim fleet --gateways 1000 --backlog 3600       # a recovery storm
    fusebox sim fleet --gateways 0 --chargers 20000 --ocpp-url ws://127.0.0.1:9000/ocpp

Every ``--progress`` seconds one line: gateways connected, readings held
(backlog), acknowledged (and per second), busy answers, ack timeouts, the
workers' RSS; chargers connected and answers. Ctrl-C (or ``--duration``) stops
it and prints a summary. Exit codes: 0 done, 1 a worker failed, 2 bad arguments.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import logging
import os
import sys
import time
from pathlib import Path

from protocols.urls import BadURL
from simulators._signals import stop_on_signals
from simulators.fleet._fleet import Fleet, FleetConfig, FleetError
from simulators.fleet._worker import WorkerStats

__all__ = ["add_arguments", "run"]

log = logging.getLogger("fusebox.sim.fleet")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The fleet's flags; pass the parsed namespace to ``run``."""
    parser.add_argument("--gateways", type=int, default=100, help="default 100")
    parser.add_argument(
        "--chargers",
        type=int,
        default=0,
        help="OCPP 1.6 chargers connecting to --ocpp-url (default 0)",
    )
    parser.add_argument(
        "--mqtt-url",
        default=os.environ.get("FUSEBOX_CLOUD_MQTT_URL", "mqtt://127.0.0.1:1883"),
        help="the cloud broker (env FUSEBOX_CLOUD_MQTT_URL); user:password@ in it "
        "is every gateway's account unless --accounts names one",
    )
    parser.add_argument(
        "--accounts",
        metavar="CSV",
        help="per-gateway broker accounts: lines gateway_id,username,password",
    )
    parser.add_argument("--prefix", default="fleet", help="gateway ids PREFIX-00001...")
    parser.add_argument(
        "--interval", type=float, default=10.0, help="seconds between readings"
    )
    parser.add_argument(
        "--backlog",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="start offline with this much backlog per gateway, then reconnect",
    )
    parser.add_argument("--processes", type=int, help="worker processes")
    parser.add_argument("--window", type=int, default=4, help="batches in flight")
    parser.add_argument("--ocpp-url", help="ws://host:port/path of the OCPP server")
    parser.add_argument("--charger-password", help="Basic auth password of chargers")
    parser.add_argument("--charger-prefix", default="CP")
    parser.add_argument("--duration", type=float, help="stop after this many seconds")
    parser.add_argument(
        "--progress", type=float, default=5.0, help="seconds between progress lines"
    )


def _accounts(path: str | None) -> dict[str, tuple[str, str]]:
    if path is None:
        return {}
    accounts: dict[str, tuple[str, str]] = {}
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ValueError(f"--accounts {path}: {exc.strerror or exc}") from None
    for n, row in enumerate(csv.reader(text.splitlines()), 1):
        if not row or row[0].startswith("#"):
            continue
        if len(row) != 3 or not all(row):
            raise ValueError(
                f"--accounts {path} line {n}: expected gateway_id,username,password"
            )
        accounts[row[0]] = (row[1], row[2])
    return accounts


def config_from_args(args: argparse.Namespace) -> FleetConfig:
    """The fleet the flags describe; ``ValueError``/``OSError`` saying what is
    wrong."""
    if args.backlog < 0:
        raise ValueError("--backlog cannot be negative")
    if args.progress <= 0 or (args.duration is not None and args.duration <= 0):
        raise ValueError("--progress and --duration must be positive")
    config = FleetConfig(
        mqtt_url=args.mqtt_url if args.gateways else None,
        gateways=args.gateways,
        prefix=args.prefix,
        interval_s=args.interval,
        processes=args.processes,
        accounts=_accounts(args.accounts),
        window=args.window,
        online=args.backlog == 0,
        chargers=args.chargers,
        ocpp_url=args.ocpp_url,
        charger_password=args.charger_password,
        charger_prefix=args.charger_prefix,
    )
    config.check()
    return config


def progress_line(s: WorkerStats, elapsed_s: float, acked_per_s: float) -> str:
    """One progress line for the fleet's stats ``s``."""
    line = (
        f"fleet {elapsed_s:5.0f} s: {s.connected:,}/{s.gateways:,} connected, "
        f"backlog {s.held:,}, acked {s.acked:,} ({acked_per_s:,.0f}/s), "
        f"busy {s.busy:,}, timeouts {s.timeouts:,}, batches {s.batches:,}, "
        f"rss {s.rss_bytes / 2**20:,.0f} MB in {s.processes} processes"
    )
    if s.chargers:
        line += (
            f"; chargers {s.chargers_connected:,}/{s.chargers:,}, "
            f"answers {s.charger_answers:,}, errors {s.charger_call_errors:,}"
        )
    return line


async def _watch(fleet: Fleet, args: argparse.Namespace, stop: asyncio.Event) -> None:
    started = time.monotonic()
    last_acked, last_t = 0, started
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(args.progress):
                await stop.wait()
        s = await fleet.stats()
        now = time.monotonic()
        rate = (s.acked - last_acked) / max(1e-9, now - last_t)
        last_acked, last_t = s.acked, now
        print(progress_line(s, now - started, rate), file=sys.stderr, flush=True)
        if args.duration is not None and now - started >= args.duration:
            stop.set()


async def run(args: argparse.Namespace, *, stop: asyncio.Event | None = None) -> int:
    """Run the fleet until Ctrl-C/SIGTERM, ``--duration`` or ``stop``."""
    try:
        config = config_from_args(args)
    except (ValueError, BadURL, OSError) as exc:
        print(f"fusebox sim fleet: {exc}", file=sys.stderr)
        return 2
    stop = stop or asyncio.Event()
    started = time.monotonic()
    fleet = Fleet(config)
    final: WorkerStats | None = None
    with stop_on_signals(stop):
        try:
            await fleet.start()
            print(
                f"fleet: {config.gateways:,} gateways, {config.chargers:,} chargers "
                f"in {config.process_count()} processes",
                file=sys.stderr,
                flush=True,
            )
            if args.backlog:
                n = await fleet.backfill(args.backlog, args.interval)
                print(
                    f"fleet: {n:,} readings of backlog; reconnecting", file=sys.stderr
                )
                await fleet.online()
            await _watch(fleet, args, stop)
        except FleetError as exc:
            print(f"fusebox sim fleet: {exc}", file=sys.stderr)
            return 1
        finally:
            final = await fleet.stop()
    if final is not None:
        elapsed = time.monotonic() - started
        print(
            f"fleet summary after {elapsed:.0f} s: {final.produced:,} readings "
            f"produced, {final.acked:,} acknowledged, {final.held:,} still held; "
            f"{final.batches:,} batches, {final.busy:,} busy, {final.timeouts:,} "
            f"timeouts, {final.connects:,} connects, {final.refused_logins:,} "
            "refused logins",
            file=sys.stderr,
            flush=True,
        )
    return 0
