"""The command line: ``add_arguments``, ``run`` and ``main``."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys

from simulators._args import add_clock_argument
from simulators._signals import stop_on_signals
from simulators.charger._config import VERSIONS, ChargerConfig
from simulators.charger._fleet import PowerFile, _fleet_configs
from simulators.charger._session import _wire_log
from simulators.charger._sim import ChargerSim
from simulators.charger._state import Ledger

log = logging.getLogger("fusebox.sim.charger")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the charge-point simulator's flags to ``parser``; pass the parsed
    namespace to ``run``."""
    _add_link_arguments(parser)
    _add_device_arguments(parser)
    _add_scenario_arguments(parser)
    _add_process_arguments(parser)


def _add_link_arguments(parser: argparse.ArgumentParser) -> None:
    """Where and as whom the charger connects."""
    parser.add_argument(
        "--url",
        default=os.environ.get("FUSEBOX_OCPP_URL", "ws://127.0.0.1:9000/ocpp"),
        help="CSMS websocket URL; the charger id is appended as the last segment",
    )
    parser.add_argument("--id", default="CP1", help="charge point identity")
    parser.add_argument("--ocpp", choices=VERSIONS, default="1.6")
    parser.add_argument("--password", default=None, help="HTTP Basic auth password")


def _add_device_arguments(parser: argparse.ArgumentParser) -> None:
    """The charger, its EVs and what it reports."""
    parser.add_argument("--connectors", type=int, default=1)
    parser.add_argument("--ev-battery-kwh", type=float, default=60.0)
    parser.add_argument("--ev-soc", type=float, default=20.0, metavar="PCT")
    parser.add_argument("--ev-max-kw", type=float, default=11.0)
    parser.add_argument("--phases", type=int, choices=(1, 3), default=3)
    parser.add_argument(
        "--max-current",
        type=float,
        default=32.0,
        metavar="A",
        help="charger's own per-phase maximum (default 32)",
    )
    parser.add_argument("--id-tag", default="SIMTAG01")
    parser.add_argument(
        "--meter-interval",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="seconds between meter values during a transaction (default 10; "
        "simulated seconds with a simulated --clock)",
    )
    parser.add_argument(
        "--heartbeat",
        type=float,
        default=None,
        metavar="SECONDS",
        help="heartbeat interval (default: what the CSMS's boot answer says)",
    )
    parser.add_argument(
        "--quirks",
        action="store_true",
        help="mix sampled values the OCPP schemas refuse (unit Hz, NaN, 'abc', "
        "unknown measurands, ...) into every transaction message; the ledger "
        "lists them",
    )


def _add_scenario_arguments(parser: argparse.ArgumentParser) -> None:
    """What happens when, and how fast time runs."""
    parser.add_argument("--plug-in-after", type=float, default=None, metavar="SECONDS")
    parser.add_argument("--unplug-after", type=float, default=None, metavar="SECONDS")
    parser.add_argument("--scenario", default=None, metavar="FILE")
    parser.add_argument(
        "--speed",
        type=float,
        default=1.0,
        help="simulated EV seconds per real second with the real clock (default 1)",
    )
    add_clock_argument(parser)
    parser.add_argument(
        "--power-file",
        default=None,
        metavar="FILE",
        help="keep the total power drawn now in FILE (JSON, for fusebox sim meter "
        "--add-load-file)",
    )


def _add_process_arguments(parser: argparse.ArgumentParser) -> None:
    """Files kept across restarts, fleet mode and reconnecting."""
    parser.add_argument(
        "--ledger",
        default=None,
        metavar="FILE",
        help="append one JSON line per answered transaction message",
    )
    parser.add_argument(
        "--state",
        default=None,
        metavar="FILE",
        help="profiles, registers and the offline queue (kept across restarts)",
    )
    parser.add_argument(
        "--fleet",
        type=int,
        default=None,
        metavar="N",
        help="run N chargers with ids <id>-0001 ... in this process",
    )
    parser.add_argument(
        "--max-backoff",
        type=float,
        default=15.0,
        metavar="SECONDS",
        help="cap of the reconnect backoff (default 15)",
    )


async def run(args: argparse.Namespace, *, stop: asyncio.Event | None = None) -> int:
    """Run the simulated charge point(s) from parsed ``add_arguments`` flags.

    Returns 0 when the scenario is done or on SIGTERM/SIGINT, 2 for bad flags.
    ``stop`` lets an in-process caller (a test, the demo) stop it.
    """
    if not logging.getLogger().handlers:
        logging.basicConfig(
            level=logging.INFO,
            stream=sys.stderr,
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        )
    if _wire_log.level == logging.NOTSET:
        _wire_log.setLevel(logging.WARNING)
    try:
        base = ChargerConfig.from_args(args)
        fleet = getattr(args, "fleet", None)
        if fleet is not None and fleet < 1:
            raise ValueError("--fleet must be >= 1")
        ledger = Ledger(base.ledger_path)
        sims = [ChargerSim(c, ledger=ledger) for c in _fleet_configs(base, fleet)]
        if base.power_path is not None:
            power_file = PowerFile(base.power_path, sims)
            for sim in sims:
                sim.power_listener = power_file.update
            power_file.update()
    except (ValueError, OSError) as exc:
        log.error("charger simulator: %s", exc)
        return 2
    stop = stop or asyncio.Event()
    try:
        with stop_on_signals(stop):
            results = await asyncio.gather(*(sim.run(stop) for sim in sims))
        return max(results)
    finally:
        ledger.close()


def main(argv: list[str] | None = None) -> int:
    """``python -m simulators.charger``."""
    parser = argparse.ArgumentParser(
        prog="python -m simulators.charger",
        description="A simulated OCPP 1.6 / 2.0.1 charge point with an EV.",
    )
    add_arguments(parser)
    return asyncio.run(run(parser.parse_args(argv)))
