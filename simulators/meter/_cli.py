"""The command line: ``add_arguments`` (``fusebox sim meter``), ``run`` and ``main``."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from typing import get_args

from protocols.meters import MeterFormat
from protocols.urls import BadURL
from simulators._args import add_clock_argument
from simulators._signals import stop_on_signals
from simulators.meter._config import BROKER_URL_ENV, DEFAULT_BROKER_URL, MeterSimConfig
from simulators.meter._registry import FORMAT_CHOICES
from simulators.meter._simulator import MeterSimulator
from simulators.meter._wire import TasmotaVariant

log = logging.getLogger("fusebox.sim.meter")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``fusebox sim meter`` flags to ``parser``; pass the parsed namespace
    to ``run``."""
    _add_device_arguments(parser)
    _add_time_and_load_arguments(parser)
    _add_ledger_arguments(parser)
    _add_household_arguments(parser)
    _add_connection_arguments(parser)


def _add_device_arguments(parser: argparse.ArgumentParser) -> None:
    """The broker, and the device the meter imitates."""
    parser.add_argument(
        "--broker",
        default=os.environ.get(BROKER_URL_ENV) or DEFAULT_BROKER_URL,
        help=f"MQTT broker URL (default ${BROKER_URL_ENV} or {DEFAULT_BROKER_URL})",
    )
    parser.add_argument(
        "--format",
        choices=list(FORMAT_CHOICES),
        default=MeterFormat.GLOW.value,
        help="device to imitate (default glow)",
    )
    parser.add_argument("--device", default="sim-meter-1", help="device id in topics")


def _add_time_and_load_arguments(parser: argparse.ArgumentParser) -> None:
    """When readings are taken, and the loads behind the meter."""
    parser.add_argument(
        "--interval",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="real seconds between publishes (default 10); simulated seconds "
        "between readings when --clock is simulated",
    )
    add_clock_argument(parser)
    parser.add_argument(
        "--add-load-file",
        action="append",
        default=None,
        metavar="FILE",
        help='add the power in this JSON file ({"power_w": W}, e.g. a charger '
        "simulator's --power-file) to the household; repeatable",
    )
    parser.add_argument(
        "--spike-file",
        default=None,
        metavar="FILE",
        help='while this file exists, add the W it holds ({"add_w": 8000})',
    )
    parser.add_argument(
        "--step",
        type=float,
        default=None,
        metavar="SECONDS",
        help="simulated seconds per reading, >= 1 (default: the interval)",
    )
    parser.add_argument(
        "--start",
        default=None,
        metavar="ISO",
        help="simulated time of the first reading (default: now, to the second; "
        "naive means UTC)",
    )
    parser.add_argument(
        "--count", type=int, default=None, help="stop after N readings (default: never)"
    )


def _add_ledger_arguments(parser: argparse.ArgumentParser) -> None:
    """The household's seed, the publish QoS and the ledger."""
    parser.add_argument(
        "--seed", type=int, default=None, help="household seed (default: from --device)"
    )
    parser.add_argument("--qos", type=int, choices=(0, 1, 2), default=1)
    parser.add_argument(
        "--ledger",
        default=None,
        metavar="FILE",
        help="append one JSON line per reading the broker acknowledged",
    )
    parser.add_argument(
        "--resume-ledger",
        action="store_true",
        help="continue registers and time from the ledger's last line",
    )


def _add_household_arguments(parser: argparse.ArgumentParser) -> None:
    """The supply, the household's time zone and the device's variant."""
    parser.add_argument(
        "--phases", type=int, choices=(1, 3), default=1, help="supply phases"
    )
    parser.add_argument(
        "--household-timezone",
        default="Europe/London",
        help="IANA zone for the household's time of day",
    )
    parser.add_argument(
        "--tasmota-variant",
        choices=get_args(TasmotaVariant),
        default="energy",
        help="tasmota: ENERGY block or an SML reading head",
    )
    parser.add_argument(
        "--initial-import-kwh",
        type=float,
        default=None,
        help="import register at the start (default: from the seed)",
    )


def _add_connection_arguments(parser: argparse.ArgumentParser) -> None:
    """Reconnecting, publish acknowledgements and progress lines."""
    parser.add_argument(
        "--max-backoff",
        type=float,
        default=15.0,
        metavar="SECONDS",
        help="cap of the reconnect backoff (default 15)",
    )
    parser.add_argument(
        "--publish-timeout",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="wait this long for the broker's acknowledgement (default 10)",
    )
    parser.add_argument(
        "--log-every",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="progress line interval on stderr (default 10)",
    )


async def run(args: argparse.Namespace, *, stop: asyncio.Event | None = None) -> int:
    """Run one simulated meter from parsed ``add_arguments`` flags.

    Returns 0 when ``--count`` readings are published or on SIGTERM/SIGINT (after
    the in-flight publish), 2 for bad flags, 1 if the ledger cannot be written.
    ``stop`` lets an in-process caller (a test, the demo) stop the meter.
    """
    if not logging.getLogger().handlers:
        logging.basicConfig(
            level=logging.INFO,
            stream=sys.stderr,
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        )
    try:
        config = MeterSimConfig.from_args(args)
        simulator = MeterSimulator(config)
    except (BadURL, ValueError, OSError) as exc:
        log.error("fusebox sim meter: %s", exc)
        return 2
    stop = stop or asyncio.Event()
    with stop_on_signals(stop):
        return await simulator.run(stop)


def main(argv: list[str] | None = None) -> int:
    """``python -m simulators.meter``: the same as ``fusebox sim meter``."""
    parser = argparse.ArgumentParser(
        prog="fusebox sim meter",
        description="Publish a simulated household as a smart meter over MQTT.",
    )
    add_arguments(parser)
    return asyncio.run(run(parser.parse_args(argv)))
