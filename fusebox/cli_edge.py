"""``fusebox edge ...``: the handlers of the edge commands.

``run``, ``check``, ``init`` and ``claim-code`` work on the config file (and the
files kept beside the outbox); ``status``, ``approve``, ``fuse`` and ``boost``
talk to the running edge through its local API. The parser is in
:mod:`fusebox.cli`.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from fusebox.cli_common import EXIT_BAD_CONFIG, clock_from_args, run_until_signalled


def cmd_edge_run(args: argparse.Namespace) -> int:
    """``fusebox edge run``: the agent until a signal; exit 2 if the config or the
    clock spec is bad, a file beside the outbox is damaged, or ``metrics.listen``
    cannot be bound."""
    from edge import ConfigError
    from edge.agent import EdgeAgent
    from edge.config import load_config

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"fusebox edge: {exc}", file=sys.stderr)
        return EXIT_BAD_CONFIG

    from protocols.clock import ClockSpecError

    try:
        clock = clock_from_args(args)
    except ClockSpecError as exc:
        print(f"fusebox edge: {exc}", file=sys.stderr)
        return EXIT_BAD_CONFIG

    from edge import EdgeError

    refused: list[str] = []

    async def main() -> None:
        try:
            agent = EdgeAgent(config, clock=clock)
        except EdgeError as exc:  # a damaged claim-code (or overrides) file
            refused.append(str(exc))
            return
        try:
            await agent.run()
        except ConfigError as exc:  # metrics.listen cannot be bound
            refused.append(str(exc))

    code = run_until_signalled(main)
    if refused:
        print(f"fusebox edge: {refused[0]}", file=sys.stderr)
        return EXIT_BAD_CONFIG
    return code


def cmd_edge_check(args: argparse.Namespace) -> int:
    """``fusebox edge check``: the config in force (the file and the installer's
    overrides on top), as ``fusebox edge run`` would load it; exit 2 if bad."""
    from edge import ConfigError
    from edge.config import load_config
    from edge.overrides import overrides_note

    try:
        config = load_config(args.config)
        note = overrides_note(config)
    except ConfigError as exc:
        print(f"fusebox edge: {exc}", file=sys.stderr)
        return EXIT_BAD_CONFIG
    print(
        f"{args.config}: ok (gateway {config.gateway_id}, "
        f"{len(config.meters)} meter(s))"
    )
    if note:
        print(f"  in force on top of it, {note}")
    return 0


def cmd_edge_init(args: argparse.Namespace) -> int:
    """Write the starter edge config and, beside it, the site broker's config
    (``edge.site_broker``): persistence that saves every reading the broker
    acknowledges. The edge config names the broker's file, so the installer's
    page shows what a broker crash can lose."""
    from edge.site_broker import site_broker_config
    from fusebox.starter import DEMO_LOCAL_MQTT_PORT, starter_config

    out = Path(args.out)
    broker = (
        Path(args.site_broker_conf)
        if args.site_broker_conf
        else out.with_name("mosquitto-site.conf")
    )
    existing = [p for p in (out, broker) if p.exists()]
    if existing and not args.force:
        print(
            f"fusebox edge init: {existing[0]} exists; use --force to overwrite",
            file=sys.stderr,
        )
        return EXIT_BAD_CONFIG
    out.parent.mkdir(parents=True, exist_ok=True)
    broker.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        starter_config(gateway_id=args.gateway_id, broker_config=str(broker))
    )
    broker.write_text(
        site_broker_config(
            persistence_location=args.site_broker_data,
            port=DEMO_LOCAL_MQTT_PORT,
        )
    )
    print(f"wrote {out}; run it with: fusebox edge run --config {out}")
    print(f"wrote {broker}; run the site broker with: mosquitto -c {broker}")
    return 0


def _edge_config_or_exit(path: str) -> Any:
    from edge import ConfigError
    from edge.config import load_config

    try:
        # the file alone: finding the running edge (its local API, its claim
        # code) must not depend on the overrides file
        return load_config(path, overrides=False)
    except ConfigError as exc:
        print(f"fusebox edge: {exc}", file=sys.stderr)
        raise SystemExit(EXIT_BAD_CONFIG) from None


def cmd_edge_claim_code(args: argparse.Namespace) -> int:
    """``fusebox edge claim-code``: the code kept beside the outbox (no network)."""
    from edge.claim import ClaimFileError, read_code
    from edge.paths import StatePaths

    config = _edge_config_or_exit(args.config)
    try:
        claim = read_code(StatePaths.beside(config.outbox.path).claim)
    except ClaimFileError as exc:
        print(f"fusebox edge claim-code: {exc}", file=sys.stderr)
        return 1
    print(claim.code)
    return 0


class _EdgeApiError(Exception):
    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def _edge_api(
    args: argparse.Namespace, method: str, path: str, body: Any = None
) -> Any:
    """Call the running edge's local API (``[local_api]`` of ``--config``)."""
    import httpx

    from edge.config import LOCAL_API_USER
    from edge.local_api import base_url

    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request
    config = _edge_config_or_exit(args.config)
    if not config.local_api_on:
        raise _EdgeApiError(
            f"the local API is off in {args.config}; set [local_api] enabled = true "
            "and restart the edge",
            EXIT_BAD_CONFIG,
        )
    url = base_url(config)
    password = config.local_api.password
    auth = (LOCAL_API_USER, password.get_secret_value()) if password else None
    try:
        with httpx.Client(base_url=url, auth=auth, timeout=10.0) as client:
            health = client.get("/api/health")
            gateway = health.json().get("gateway_id") if health.is_success else None
            if gateway != config.gateway_id:
                raise _EdgeApiError(
                    f"{url} answers for gateway {gateway!r}, not {config.gateway_id!r}"
                    f" of {args.config}: another program uses the port; give this "
                    "edge its own [local_api] listen"
                )
            response = client.request(method, path, json=body)
    except httpx.TransportError as exc:
        raise _EdgeApiError(
            f"no answer from the local API at {url} ({exc or type(exc).__name__}); "
            f"is `fusebox edge run --config {args.config}` up? it listens on "
            f"{config.local_api.listen}"
        ) from None
    except ValueError:  # not JSON: not our API
        raise _EdgeApiError(f"{url} is not a Fusebox edge's local API") from None
    if response.status_code == 401:
        raise _EdgeApiError(
            f"{url} refused the password from {args.config} ([local_api] password "
            "changed since the edge started? restart it)"
        )
    try:
        data = response.json()
    except ValueError:
        data = {"detail": response.text}
    if not response.is_success:
        detail = data.get("detail") if isinstance(data, dict) else data
        if isinstance(detail, list):  # 422: pydantic errors naming the field
            detail = "; ".join(
                f"{'.'.join(str(p) for p in e.get('loc', ())[1:])}: {e.get('msg')}"
                for e in detail
            )
        raise _EdgeApiError(
            f"{response.status_code}: {detail}",
            EXIT_BAD_CONFIG if response.status_code == 422 else 1,
        )
    return data


def _print_edge_status(s: dict[str, Any], config_path: str) -> None:
    """The local API's ``/api/status`` document as the installer reads it."""
    h, site = s["health"], s["site"]
    print(f"gateway {s['gateway_id']} ({s['software']})")
    if s.get("claim_code"):
        print(f"claim code: {s['claim_code']}")
    backlog = h["backlog_records"]
    print(
        "cloud: "
        + ("connected" if h["uplink_connected"] else "unreachable")
        + (f"; backlog {backlog} reading(s)" if backlog is not None else "")
        + (
            f" (oldest {h['backlog_oldest_age_s']:.0f} s)"
            if backlog and h["backlog_oldest_age_s"] is not None
            else ""
        )
    )
    meter = (
        f"; site meter {site['meter']}: {site['site_import_w']:.0f} W "
        f"({site['site_meter_age_s']:.0f} s ago)"
        if site["site_import_w"] is not None
        else ""
    )
    print(f"site: main fuse {site['main_fuse_a']:g} A{meter}")
    sb = h.get("site_broker")
    if sb is not None:
        lost = sb["sessions_lost"]
        print(
            "site broker: "
            + ("connected" if h["meters_connected"] else "not connected")
            + f"; {sb['durability']}"
            + (f" ({sb['config']})" if sb["config"] else "")
            + (f"; lost this gateway's session {lost} time(s)" if lost else "")
        )
    print(f"chargers ({len(s['chargers'])}):")
    for c in s["chargers"]:
        ctl = c["control"]
        power = "" if c["power_w"] is None else f" {c['power_w'] / 1000:.1f} kW"
        control = ""
        if ctl is not None:
            control = f"  {ctl['state']}"
            if ctl["limit_a"] is not None:
                control += f" {ctl['limit_a']:g} A"
            if ctl["boost"]:
                control += " (boost)"
        version = c["ocpp_version"] or "-"
        print(f"  {c['id']}  OCPP {version}  {c['status']}{power}{control}")
    if s["pending"]:
        print(f"pending (fusebox edge approve --config {config_path} ID --password P):")
        for p in s["pending"]:
            device = " ".join(x for x in (p["vendor"], p["model"]) if x)
            print(f"  {p['id']}  OCPP {p['ocpp_version']}  {device or '-'}")
    print(f"meters ({len(s['meters'])}):")
    for m in s["meters"]:
        values = ", ".join(f"{k}={v:g}" for k, v in m["last_values"].items())
        print(f"  {m['id']} ({m['type']})  {values or 'no readings yet'}")


def cmd_edge_local(args: argparse.Namespace) -> int:
    """``fusebox edge status|approve|fuse|boost``: the running edge's local API."""
    import json
    from urllib.parse import quote

    cid = quote(getattr(args, "charger", "") or "", safe="")
    try:
        if args.edge_command == "status":
            data = _edge_api(args, "GET", "/api/status")
            if args.json:
                print(json.dumps(data, indent=2))
            else:
                _print_edge_status(data, args.config)
        elif args.edge_command == "approve":
            body: dict[str, Any] = {"password": args.password}
            for key in ("ocpp_version", "max_current_a", "phases"):
                if getattr(args, key) is not None:
                    body[key] = getattr(args, key)
            data = _edge_api(args, "POST", f"/api/chargers/{cid}/approve", body)
            print(f"{args.charger}: approved; {data['note']}")
        elif args.edge_command == "fuse":
            data = _edge_api(args, "POST", "/api/site", {"main_fuse_a": args.amps})
            print(f"main fuse: {data['main_fuse_a']:g} A (saved)")
        elif args.cancel:
            _edge_api(args, "POST", f"/api/chargers/{cid}/cancel_boost")
            print(f"{args.charger}: boost cancelled")
        else:
            minutes = {} if args.minutes is None else {"duration_min": args.minutes}
            data = _edge_api(args, "POST", f"/api/chargers/{cid}/boost", minutes)
            print(f"{args.charger}: boost until {data['until'] or 'unplugged'}")
    except _EdgeApiError as exc:
        print(f"fusebox edge {args.edge_command}: {exc}", file=sys.stderr)
        return exc.code
    return 0
