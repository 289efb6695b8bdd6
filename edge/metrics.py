"""Prometheus text metrics and a health check on a tiny HTTP listener.

Deliberately not a web framework: two GET paths, served from the agent's event
loop, so the gateway needs nothing more to be scraped.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from edge import ConfigError

if TYPE_CHECKING:
    from edge.meters import MeterService
    from edge.ocpp.pending import PendingRegistry
    from edge.ocpp.server import OcppServer
    from edge.outbox import OutboxStats
    from edge.uplink import UplinkMetrics

log = logging.getLogger("fusebox.edge.metrics")

Render = Callable[[], Awaitable[str]]


def bind_metrics(listen: str) -> socket.socket:
    """Bind and listen on ``metrics.listen`` now, before the edge starts anything.

    Why not inside the agent's TaskGroup: a bind failure there only cancels the
    other tasks, and one of them losing that cancel (aiomqtt's connect on Python
    3.11) kept the edge running with no metrics and no word of why. Binding
    first makes a port in use a start-up error (``ConfigError``, exit 2) whose
    message says what to change.
    """
    host, sep, port = listen.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(
            f"metrics.listen = {listen!r} is not host:port, e.g. 127.0.0.1:9108"
        )
    try:
        return socket.create_server(
            (host, int(port)),
            family=socket.AF_INET6 if ":" in host else socket.AF_INET,
        )
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            why = "address already in use (another process listens there)"
        else:
            why = exc.strerror or str(exc)
        raise ConfigError(
            f"metrics.listen = {listen!r}: cannot listen on {host}:{port}: {why}; "
            "choose another metrics.listen in the config (or remove it to turn "
            "metrics off), or stop the other process"
        ) from None


async def serve_metrics(sock: socket.socket, render: Render) -> None:
    """Serve /metrics and /healthz on ``sock`` (from :func:`bind_metrics`) until
    cancelled; the socket is closed on the way out."""

    async def handle(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """Answer one HTTP request (5 s to send it) and close the connection."""
        try:
            async with asyncio.timeout(5):
                request = await reader.readline()
                while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                    pass
            parts = request.decode("latin-1").split()
            path = parts[1] if len(parts) > 1 else "/"
            if path == "/metrics":
                body, status = (await render()).encode(), "200 OK"
            elif path == "/healthz":
                body, status = b"ok\n", "200 OK"
            else:
                body, status = b"try /metrics or /healthz\n", "404 Not Found"
            writer.write(
                f"HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                + body
            )
            await writer.drain()
        except (TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()

    try:
        server = await asyncio.start_server(handle, sock=sock)
    except BaseException:
        sock.close()
        raise
    name = sock.getsockname()
    log.info("metrics on http://%s/metrics", _address(name[0], name[1]))
    async with server:
        await server.serve_forever()


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def render_lines(samples: list[tuple[str, str, dict[str, str], float]]) -> str:
    """``(name, help, labels, value)`` samples to Prometheus text format."""
    out: list[str] = []
    seen: set[str] = set()
    for name, help_text, labels, value in samples:
        if name not in seen:
            kind = "counter" if name.endswith("_total") else "gauge"
            out += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
            seen.add(name)
        label = ",".join(f'{k}="{v}"' for k, v in labels.items())
        out.append(f"{name}{{{label}}} {value}" if label else f"{name} {value}")
    return "\n".join(out) + "\n"


def parse_lines(text: str) -> dict[str, float]:
    """Prometheus text back to ``{'name{labels}': value}`` (for the demo and
    tests that read a running edge)."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            out[key] = float(value)
    return out


def age_seconds(oldest_ms: int | None) -> float:
    """Seconds since ``oldest_ms`` (epoch ms), never negative; 0 when there is none."""
    return 0.0 if oldest_ms is None else max(0.0, time.time() - oldest_ms / 1000)


Sample = tuple[str, str, dict[str, str], float]


def outbox_samples(s: OutboxStats) -> list[Sample]:
    """The outbox: backlog, space, and what was thinned, refused or dropped."""
    c = s.counters
    refused = "readings refused (the device keeps and resends them), by reason"
    thinned = "power samples thinned, by what ran short"
    return [
        ("fusebox_outbox_backlog_records", "records waiting for the cloud", {},
         s.backlog_records),
        ("fusebox_outbox_backlog_age_seconds", "age of the oldest waiting record",
         {}, age_seconds(s.backlog_oldest_ms)),
        ("fusebox_outbox_used_bytes", "bytes in use in the outbox", {}, s.used_bytes),
        ("fusebox_outbox_cap_bytes", "outbox disk cap", {}, s.cap_bytes),
        ("fusebox_outbox_appended_total", "records appended", {},
         c["appended_total"]),
        ("fusebox_outbox_thinned_total", "power samples thinned at the cap", {},
         c["thinned_total"]),
        ("fusebox_outbox_thinned_by_reason_total", thinned, {"reason": "cap"},
         c["thinned_total"] - c["thinned_disk_total"]),
        ("fusebox_outbox_thinned_by_reason_total", thinned, {"reason": "disk"},
         c["thinned_disk_total"]),
        ("fusebox_outbox_refused_total", refused, {"reason": "cap"},
         c["refused_cap_total"]),
        ("fusebox_outbox_refused_total", refused, {"reason": "disk_full"},
         c["refused_disk_total"]),
        ("fusebox_outbox_disk_free_bytes", "free bytes on the outbox's file system",
         {}, s.fs_free_bytes),
        ("fusebox_outbox_limit_bytes",
         "bytes the outbox may hold now (the cap, or less: disk short)", {},
         s.limit_bytes),
        ("fusebox_outbox_reserve_bytes",
         "space held back for pruning on a full disk (0: given back)", {},
         s.reserve_bytes),
        ("fusebox_outbox_prunes_pending",
         "acknowledged ranges not deleted yet (the disk was full)", {},
         s.prunes_pending),
        ("fusebox_outbox_duplicates_total", "redelivered readings dropped", {},
         c["duplicate_total"]),
        ("fusebox_outbox_rejected_total", "records the cloud rejected", {},
         c["rejected_total"]),
    ]  # fmt: skip


def uplink_samples(u: UplinkMetrics) -> list[Sample]:
    """The link to the cloud: connection, batches and the cloud's answers."""
    return [
        ("fusebox_uplink_connected", "1 when the cloud broker is connected", {},
         1.0 if u.connected else 0.0),
        ("fusebox_uplink_batches_sent_total", "batches sent", {}, u.batches_sent),
        ("fusebox_uplink_acks_total", "acks received", {}, u.acks),
        ("fusebox_uplink_busy_total", "busy answers received", {}, u.busy),
        ("fusebox_uplink_timeouts_total", "batches resent for want of an ack", {},
         u.timeouts),
        ("fusebox_uplink_resent_on_presence_total",
         "batches resent at once because an ingest worker came or went", {},
         u.resent_on_presence),
        ("fusebox_uplink_records_acked_total", "records pruned after an ack", {},
         u.records_acked),
    ]  # fmt: skip


def meter_samples(meters: MeterService) -> list[Sample]:
    """The site broker link and each meter's readings and bad payloads."""
    samples: list[Sample] = [
        ("fusebox_meters_connected", "1 when subscribed on the site broker", {},
         1.0 if meters.connected else 0.0),
        ("fusebox_site_broker_sessions_lost_total",
         "reconnects on which the site broker had lost this gateway's session", {},
         meters.sessions_lost),
    ]  # fmt: skip
    for d in meters.drivers:
        lab = {"meter": d.id}
        samples.append(
            (
                "fusebox_meter_readings_total",
                "readings stored",
                lab,
                d.counters.readings,
            )
        )
        for reason, n in sorted(d.counters.bad.items()):
            samples.append(
                (
                    "fusebox_meter_bad_payloads_total",
                    "payloads not stored, by reason",
                    {**lab, "reason": reason},
                    n,
                )
            )
    return samples


def ocpp_value_samples(server: OcppServer) -> list[Sample]:
    """Sampled values of OCPP meter values per charger: skipped (not stored; the
    rest of the message was) and tolerated (mended and stored), by reason
    (``edge.ocpp.quiet.BadInput.values``, ``protocols.ocpp.salvage``)."""
    families = (
        (
            "fusebox_ocpp_values_skipped_total",
            "sampled values not stored (the rest of the message was), by reason",
            "values_skipped",
        ),
        (
            "fusebox_ocpp_values_tolerated_total",
            "sampled values mended and stored (e.g. a number sent as text), by reason",
            "values_tolerated",
        ),
    )
    samples: list[Sample] = []
    for name, help_text, attribute in families:
        for charger, bad in sorted(server.bad_input.items()):
            counts: dict[str, int] = getattr(bad, attribute)
            for reason, n in sorted(counts.items()):
                samples.append(
                    (name, help_text, {"charger": charger, "reason": reason}, n)
                )
    return samples


def discovery_samples(registry: PendingRegistry) -> list[Sample]:
    """The OCPP handshake's refusals and discovery's pending chargers
    (``edge.ocpp.pending``)."""
    from edge.ocpp.pending import REFUSAL_REASONS

    refused = "charger handshakes refused, by reason"
    samples: list[Sample] = [
        ("fusebox_ocpp_pending_chargers",
         "unknown chargers held pending for the installer", {},
         len(registry.bindings)),
        ("fusebox_ocpp_pending_conflicts",
         "other devices refused under a pending charger's id (kept per id)", {},
         sum(len(b.conflicts) for b in registry.bindings.values())),
        ("fusebox_ocpp_passwords_waiting",
         "approved chargers whose password waits for their device to reconnect",
         {}, len(registry.deliveries)),
    ]  # fmt: skip
    reasons = dict.fromkeys(REFUSAL_REASONS, 0) | dict(registry.refused)
    for reason, n in reasons.items():
        samples.append(
            ("fusebox_ocpp_handshakes_refused_total", refused, {"reason": reason}, n)
        )
    return samples
