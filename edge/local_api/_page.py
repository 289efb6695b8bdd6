"""The installer's page (phone-sized, no JavaScript) from the status document,
one function per section; every value is escaped."""

from __future__ import annotations

import html
from typing import Any
from urllib.parse import quote

__all__ = ["DONE", "approved_done", "render_page"]


def approved_done(result: dict[str, Any]) -> str:
    """The ``?done=`` key for an approval's answer (whether the password took)."""
    answer = result.get("password_set")
    if result.get("password_held_for"):
        return "approved_password_waits"
    if answer is None:
        return "approved"
    if answer == "Accepted":
        return "approved_password_set"
    return "approved_password_refused"


# what the page says after a form went through (``/?done=<key>``)
DONE = {
    "approved": "Charger approved: it is accepted when it connects again.",
    "approved_password_set": (
        "Charger approved and its new password set on it: it reconnects now."
    ),
    "approved_password_refused": (
        "Charger approved, but it did not take the new password: set the password "
        "on the charger itself; it is accepted when it connects with it."
    ),
    "approved_password_waits": (
        "Charger approved while it is offline: its new password is sent to it "
        "when it reconnects from the address shown (or set it on the charger)."
    ),
    "forgotten": (
        "Pending charger forgotten: the next device to connect under its id is "
        "bound to it."
    ),
    "fuse": "Fuse limit saved and applied.",
    "boost": "Boost on.",
    "cancel_boost": "Boost cancelled.",
}

_CSS = """
body{font:16px/1.4 system-ui,sans-serif;margin:0 auto;max-width:40rem;padding:.5rem}
h1{font-size:1.3rem}h2{font-size:1.1rem;margin:1.2rem 0 .4rem}
.card{border:1px solid #ccc;border-radius:6px;padding:.6rem;margin:.4rem 0}
.claim{font:bold 1.6rem monospace;letter-spacing:.1em}
.ok{color:#070}.bad{color:#b00}.muted{color:#666;font-size:.9rem}
.msg{background:#e7f6e7;padding:.5rem}.err{background:#fbe3e3;padding:.5rem}
table{border-collapse:collapse;width:100%}td{padding:.15rem .3rem;vertical-align:top}
input,select,button{font-size:1rem;margin:.15rem 0;max-width:100%}
label{display:block;margin:.3rem 0}label input,label select{display:block}
input{width:14rem}button{padding:.3rem .8rem}form{margin:.3rem 0}
"""


def _e(value: object) -> str:
    return html.escape("" if value is None else str(value))


def _yes(flag: object, yes: str, no: str) -> str:
    return (
        f'<span class="ok">{yes}</span>' if flag else f'<span class="bad">{no}</span>'
    )


def _row(label: str, value_html: str) -> str:
    return f"<tr><td>{_e(label)}</td><td>{value_html}</td></tr>"


def _num(value: object, unit: str, digits: int = 0) -> str:
    if not isinstance(value, int | float):
        return "-"
    return f"{value:,.{digits}f} {unit}"


def _broker_keeps(sb: dict[str, Any] | None) -> str:
    """The site broker's durability line: green only when it saves every reading
    and has never lost this gateway's session."""
    if sb is None:
        return "-"
    text = _e(sb["durability"])
    if sb["sessions_lost"]:
        text += f"; lost this gateway's session {_e(sb['sessions_lost'])} time(s)"
    good = sb["saves_every_reading"] is True and not sb["sessions_lost"]
    return f'<span class="{"ok" if good else "bad"}">{text}</span>'


def render_page(data: dict[str, Any], *, message: str = "", error: str = "") -> str:
    """The installer's page from the ``status`` document, with a ``message``
    (a form went through) or an ``error`` (it did not) at the top."""
    out = _head(data, message, error)
    out += _claim(data)
    out += _health(data["health"])
    out += _site(data["site"])
    out += _chargers(data["chargers"])
    out += _pending(data["pending"])
    out += _meters(data["meters"], data["unmatched_messages"])
    out.append("</body></html>")
    return "\n".join(out)


def _head(data: dict[str, Any], message: str, error: str) -> list[str]:
    out = [
        "<!doctype html><html lang=en><head><meta charset=utf-8>",
        '<meta name=viewport content="width=device-width,initial-scale=1">',
        f"<title>Fusebox {_e(data['gateway_id'])}</title><style>{_CSS}</style>",
        "</head><body>",
        f"<h1>Fusebox gateway {_e(data['gateway_id'])}</h1>",
        f'<p class=muted>{_e(data["software"])} · <a href="/">refresh</a></p>',
    ]
    if message:
        out.append(f"<p class=msg>{_e(message)}</p>")
    if error:
        out.append(f"<p class=err>{_e(error)}</p>")
    return out


def _claim(data: dict[str, Any]) -> list[str]:
    if not data.get("claim_code"):
        return []
    return [
        "<h2>Claim code</h2>",
        f'<div class="card"><div class=claim>{_e(data["claim_code"])}</div>',
        "<div class=muted>Type it in the installer app to claim this "
        "gateway.</div></div>",
    ]


def _health(h: dict[str, Any]) -> list[str]:
    backlog = h["backlog_records"]
    waiting = f"{_e(backlog if backlog is not None else '-')} readings"
    if backlog:
        waiting += f" (oldest {_num(h['backlog_oldest_age_s'], 's')})"
    used_mb = (h["outbox_used_bytes"] or 0) / 1e6
    cap_mb = (h["outbox_cap_bytes"] or 0) / 1e6
    broker = (
        _yes(h["meters_connected"], "connected", "not connected")
        if h["meters_configured"]
        else "no meters configured"
    )
    return [
        "<h2>Health</h2><div class=card><table>",
        _row("Cloud", _yes(h["uplink_connected"], "connected", "unreachable")),
        _row("Waiting for the cloud", waiting),
        _row("Outbox", f"{_num(used_mb, 'MB', 1)} of {_num(cap_mb, 'MB')}"),
        _row("Meter broker", broker),
        _row("Meter broker keeps", _broker_keeps(h.get("site_broker"))),
        _row("Chargers connected", _e(h["chargers_connected"])),
        _row("Charger connections refused", _refused(h.get("ocpp_refused") or {})),
        "</table></div>",
    ]


def _refused(refused: dict[str, int]) -> str:
    if not refused:
        return "none"
    return ", ".join(f"{_e(k)} {_e(v)}" for k, v in refused.items())


def _conflicts(conflicts: list[dict[str, Any]]) -> list[str]:
    """The other devices that tried a pending id (an alarm for the installer)."""
    return [
        f"<div class=bad>Refused: another device tried this id from "
        f"{_e(c['address'])}"
        + (
            f" (certificate {_e(c['certificate_sha256'][:16])}...)"
            if c["certificate_sha256"]
            else ""
        )
        + f", {_e(c['attempts'])} time(s), last {_e(c['last_at'])}</div>"
        for c in conflicts
    ]


def _site(s: dict[str, Any]) -> list[str]:
    return [
        "<h2>Site</h2><div class=card>",
        f"<p>Main fuse <b>{_num(s['main_fuse_a'], 'A', 1)}</b> per phase, "
        f"{_e(s['phases'])} phase(s), margin {_num(s['margin_a'], 'A', 1)}"
        + ("" if s["main_fuse_a_in_config_file"] else " (set on this page)")
        + "</p>",
        "<p>Site import "
        + (
            f"{_num(s['site_import_w'], 'W')} ({_num(s['site_meter_age_s'], 's')} ago)"
            if s["site_import_w"] is not None
            else "unknown" + ("" if s["meter"] else " (no site meter configured)")
        )
        + "</p>",
        '<form method=post action="/ui/site"><label>New fuse limit (A)',
        "<input name=main_fuse_a type=number min=1 max=2000 step=any required "
        f'value="{_e(s["main_fuse_a"])}">',
        "</label><button>Set fuse limit</button></form></div>",
    ]


def _chargers(chargers: list[dict[str, Any]]) -> list[str]:
    out = ["<h2>Chargers</h2>"]
    if not chargers:
        out.append("<p class=muted>No chargers configured or connected.</p>")
    for c in chargers:
        register_kwh = None if c["register_wh"] is None else c["register_wh"] / 1000.0
        out += [
            "<div class=card>",
            f"<b>{_e(c['id'])}</b> {_yes(c['connected'], 'connected', 'offline')}",
            f"<div>OCPP {_e(c['ocpp_version'] or '-')} · {_e(c['status'])}"
            + (f" · {_e(c['vendor'])} {_e(c['model'])}" if c["vendor"] else "")
            + "</div>",
            f"<div>Power {_num(c['power_w'], 'W')} · register "
            f"{_num(register_kwh, 'kWh', 2)}"
            + (" · charging" if c["transactions"] else "")
            + "</div>",
        ]
        delivery = c.get("password_delivery")
        if delivery and delivery["waiting"]:
            out.append(
                f"<div>New password waits for its {_e(delivery['bound_to'])} "
                "to reconnect</div>"
            )
            out += _conflicts(delivery["conflicts"])
        if c["control"] is not None:
            out += _control(quote(c["id"], safe=""), c["control"])
        out.append("</div>")
    return out


def _control(cid: str, ctl: dict[str, Any]) -> list[str]:
    """A controlled charger's decision and its boost button (``cid`` quoted)."""
    out = [
        f"<div>Controller: {_e(ctl['state'])}"
        + (f", limit {_num(ctl['limit_a'], 'A', 1)}" if ctl["limit_a"] else "")
        + (f" · {_e(ctl['detail'])}" if ctl["detail"] else "")
        + "</div>"
    ]
    if ctl["boost"]:
        out.append(
            f'<form method=post action="/ui/chargers/{cid}/cancel_boost">'
            "<button>Cancel boost</button></form>"
        )
    else:
        out.append(
            f'<form method=post action="/ui/chargers/{cid}/boost">'
            "<button>Boost (full power until unplugged)</button></form>"
        )
    return out


def _pending(pending: list[dict[str, Any]]) -> list[str]:
    out = ["<h2>Waiting for approval</h2>"] if pending else []
    for p in pending:
        cid = quote(p["id"], safe="")
        out += [
            "<div class=card>",
            f"<b>{_e(p['id'])}</b> {_yes(p['connected'], 'connected', 'offline')}",
            f"<div>{_e(p['vendor'] or '')} {_e(p['model'] or '')} · OCPP "
            f"{_e(p['ocpp_version'])} · from {_e(p['remote'])} · first seen "
            f"{_e(p['first_seen'])}</div>",
            f"<div>Bound to its first connection's {_e(p['bound_to'])}: only that "
            "device gets the password. Check it is the charger's.</div>",
            *_conflicts(p["conflicts"]),
            f'<form method=post action="/ui/chargers/{cid}/approve">',
            "<label>Password set on the charger (16-40 characters)"
            "<input name=password type=password minlength=16 maxlength=40 "
            "required autocomplete=new-password></label>",
            "<label>Rating (A per phase)<input name=max_current_a type=number "
            "min=6 max=80 step=any value=32></label>",
            "<label>Phases<select name=phases><option>1</option><option>3</option>"
            "</select></label>",
            "<label>OCPP version<select name=ocpp_version><option value=''>as the "
            "charger offers</option><option>1.6</option><option>2.0.1</option>"
            "</select></label>",
            "<button>Approve</button></form>",
            f'<form method=post action="/ui/chargers/{cid}/forget">'
            "<button>Forget (the next device to connect under this id is bound "
            "to it)</button></form></div>",
        ]
    return out


def _meters(meters: list[dict[str, Any]], unmatched: int) -> list[str]:
    out = ["<h2>Meters</h2>"]
    if not meters:
        out.append("<p class=muted>No meters configured.</p>")
    for m in meters:
        values = "".join(
            f"<tr><td>{_e(k)}</td><td>{_e(v)}</td></tr>"
            for k, v in m["last_values"].items()
        )
        out += [
            "<div class=card>",
            f"<b>{_e(m['id'])}</b> ({_e(m['type'])}, {_e(m['topic'])})"
            + (" · site meter" if m["site_meter"] else ""),
            f"<div class=muted>{_e(m['readings'])} readings · last "
            f"{_e(m['last_ts'] or 'never')}"
            + (
                " · bad payloads: "
                + ", ".join(f"{_e(k)} {_e(v)}" for k, v in m["bad"].items())
                if m["bad"]
                else ""
            )
            + "</div>",
            f"<table>{values}</table>" if values else "<div>no readings yet</div>",
            "</div>",
        ]
    if unmatched:
        out.append(
            f"<p class=muted>{_e(unmatched)} message(s) on the "
            "broker matched no configured meter.</p>"
        )
    return out
