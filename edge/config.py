"""The edge config file (TOML), validated by pydantic.

``load_config(path)`` returns the ``EdgeConfig`` in force (the file, with the
installer's overrides from ``edge.overrides`` on top) or raises ``ConfigError`` whose
message names the file, the field and the fix; ``fusebox edge run`` turns that into
exit code 2. ``FUSEBOX_CLOUD_MQTT_URL`` and ``FUSEBOX_LOCAL_MQTT_URL`` override the
URLs in the file (the docker-compose file and the demo use that).

Meters are a union discriminated on ``type`` built from the registry of meter
models (``protocols.meters.METER_MODELS``), the same registry the driver factory
(``edge.meters.meter_driver``) reads, so the config schema and the drivers cannot
drift apart.
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from edge import ConfigError
from edge.ocpp.config import ChargerList, OcppServerConfig
from edge.overrides import apply_overrides
from protocols.meters import GenericMeter as GenericMeter
from protocols.meters import GlowMeter as GlowMeter
from protocols.meters import MeterSettings, meter_config_union, meter_type_choices
from protocols.meters import ShellyMeter as ShellyMeter
from protocols.meters import TasmotaMeter as TasmotaMeter
from protocols.urls import BadURL, parse_mqtt_url

_ID = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _check_url(value: str) -> str:
    try:
        parse_mqtt_url(value)
    except BadURL as exc:
        raise ValueError(str(exc)) from None
    return value


class CloudLink(_Strict):
    """``[cloud]``: the cloud broker this gateway sends its readings to."""

    mqtt_url: str = Field(description="the cloud broker, mqtt://host:1883 or mqtts://")
    username: str | None = None
    password: str | None = None
    client_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=128,
        description="defaults to fusebox-edge-<gateway_id>, the only id the cloud "
        "broker lets this gateway's account (gw-<gateway_id>) connect with",
    )

    _url = field_validator("mqtt_url")(_check_url)

    def account(self) -> str | None:
        """The broker username in force: ``username``, else the URL's."""
        if self.username:
            return self.username
        try:
            return parse_mqtt_url(self.mqtt_url).username
        except BadURL:
            return None


class LocalBroker(_Strict):
    """``[local]``: the site broker the meters publish to, and its config file."""

    mqtt_url: str = Field(
        default="mqtt://127.0.0.1:1883", description="the site's broker the meters use"
    )
    username: str | None = None
    password: str | None = None
    reconnect_max_s: float = Field(
        default=1.0,
        gt=0,
        le=60,
        description=(
            "cap of the reconnect backoff; the broker is on the site, and the "
            "edge's session should be back before the meters' readings pile up"
        ),
    )
    broker_config: Path | None = Field(
        default=None,
        description=(
            "the site broker's mosquitto.conf, read at start to show the "
            "installer what a broker crash can lose (edge.site_broker)"
        ),
    )

    _url = field_validator("mqtt_url")(_check_url)


class OutboxConfig(_Strict):
    """``[outbox]``: where readings wait for the cloud, its disk cap and durability."""

    path: Path = Field(default=Path("var/edge/outbox.db"))
    cap_mb: float = Field(
        default=512, gt=0, description="disk cap; past it power samples are thinned"
    )
    synchronous: Literal["FULL", "NORMAL"] = Field(
        default="FULL",
        description="FULL survives power loss; NORMAL only a process crash",
    )


class UplinkSettings(_Strict):
    """``[uplink]``: batch size, in-flight window, ack timeout and retry backoff of the
    send to the cloud."""

    batch_max_records: int = Field(default=5000, ge=1, le=20_000)
    window: int = Field(default=4, ge=1, le=64)
    ack_timeout_s: float = Field(default=30, gt=0, le=600)
    linger_s: float = Field(
        default=0.5,
        ge=0,
        le=10,
        description="live readings wait this long to share a batch (0: send at once)",
    )
    retry_base_s: float = Field(default=1.0, ge=0)
    retry_cap_s: float = Field(default=60, gt=0)
    status_interval_s: float = Field(default=10, gt=0)


class MetricsSettings(_Strict):
    """``[metrics]``: where to serve Prometheus /metrics (off unless ``listen`` is
    set)."""

    listen: str | None = Field(
        default=None, description="host:port for Prometheus /metrics, off when unset"
    )


LOCAL_API_DEFAULT_LISTEN = "127.0.0.1:8088"
LOCAL_API_USER = "installer"


def split_listen(value: str) -> tuple[str, int]:
    """``host:port`` (``[v6]:port`` for IPv6) -> (host, port); ``ValueError``."""
    host, sep, port = value.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{value!r} is not host:port, e.g. {LOCAL_API_DEFAULT_LISTEN}")
    return host, int(port)


def is_loopback(host: str) -> bool:
    """True for addresses only this machine can reach (127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class LocalApiSettings(_Strict):
    """The installer's local page and API (``[local_api]``, ``edge.local_api``)."""

    enabled: bool | None = Field(
        default=None,
        description=(
            "unset: on when chargers, charger discovery or meters are configured"
        ),
    )
    listen: str = Field(
        default=LOCAL_API_DEFAULT_LISTEN,
        description="host:port; a non-loopback address needs a password",
    )
    password: SecretStr | None = Field(
        default=None,
        min_length=8,
        max_length=128,
        description=f"HTTP Basic password of the user {LOCAL_API_USER!r}",
    )

    @field_validator("listen")
    @classmethod
    def _host_port(cls, value: str) -> str:
        split_listen(value)
        return value

    @model_validator(mode="after")
    def _password_off_loopback(self) -> LocalApiSettings:
        host, _ = split_listen(self.listen)
        if (
            self.enabled is not False
            and self.password is None
            and not is_loopback(host)
        ):
            raise ValueError(
                f"listen = {self.listen!r} is reachable from the network: set "
                "password (at least 8 characters), or listen on 127.0.0.1"
            )
        return self


# One [[meters]] table: the config classes of the meter models (GlowMeter ...,
# re-exported here) as a union discriminated on ``type``, from the registry.
if TYPE_CHECKING:
    MeterConfig = MeterSettings
else:
    MeterConfig = meter_config_union()


_WINDOW = r"^([01][0-9]|2[0-3]):[0-5][0-9]-([01][0-9]|2[0-3]):[0-5][0-9]$"


class SiteConfig(_Strict):
    """The site's supply and how the controller protects it (``[site]``)."""

    control: Literal["smart", "off"] = Field(
        default="smart",
        description=(
            "smart: the controller steers every charger (plan, fuse guard, fail-safe "
            "profile); off: chargers are only monitored (sessions, meter values), "
            "for sites whose chargers something else controls"
        ),
    )
    main_fuse_a: float = Field(
        default=60, gt=0, le=2000, description="main fuse rating, A per phase"
    )
    phases: Literal[1, 3] = 1
    voltage_v: float = Field(default=230, gt=0, le=1000)
    meter: str | None = Field(
        default=None,
        description=(
            "the [[meters]] id that measures the whole site's import (the fuse "
            "guard's input); unset: no live data, chargers get safe_current_a"
        ),
    )
    margin_a: float = Field(
        default=2, ge=0, le=100, description="keep this far under the fuse"
    )
    safe_current_a: float = Field(
        default=8,
        ge=0,
        le=80,
        description="per charger while the site meter's data is stale",
    )
    stale_after_s: float = Field(
        default=30, gt=0, le=3600, description="meter data older than this is stale"
    )
    failsafe_current_a: float = Field(
        default=10,
        ge=0,
        le=80,
        description=(
            "the default profile installed on every charger: what it may draw if "
            "the gateway itself dies"
        ),
    )
    raise_hold_s: float = Field(
        default=30,
        ge=0,
        le=3600,
        description="headroom must last this long before a throttled EV is raised",
    )
    timezone: str = Field(
        default="Europe/London", description="for the default off-peak window"
    )
    default_window: str = Field(
        default="23:30-05:30",
        pattern=_WINDOW,
        description="local off-peak window used when no plan is known (HH:MM-HH:MM)",
    )
    random_delay_max_s: float = Field(
        default=1800,
        ge=0,
        le=7200,
        description=(
            "random start delay in the default window (UK Smart Charge Points "
            "Regulations 2021: up to 600 s by default, here up to 30 min)"
        ),
    )

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"unknown time zone {value!r}; use an IANA name like Europe/London"
            ) from None
        return value


class EdgeConfig(_Strict):
    """The whole edge config file, validated; build it with :func:`load_config` (file
    plus installer overrides) or :func:`parse_config`."""

    gateway_id: str = Field(pattern=_ID)
    cloud: CloudLink
    local: LocalBroker = Field(default_factory=LocalBroker)
    outbox: OutboxConfig = Field(default_factory=OutboxConfig)
    uplink: UplinkSettings = Field(default_factory=UplinkSettings)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    meters: list[MeterConfig] = Field(default_factory=list)
    ocpp: OcppServerConfig = Field(default_factory=OcppServerConfig)
    chargers: ChargerList = Field(default_factory=list)
    site: SiteConfig = Field(default_factory=SiteConfig)
    local_api: LocalApiSettings = Field(default_factory=LocalApiSettings)

    @property
    def local_api_on(self) -> bool:
        """Whether the local page and API run (``local_api.enabled``, else auto)."""
        if self.local_api.enabled is not None:
            return self.local_api.enabled
        return bool(self.chargers or self.meters or self.ocpp.allow_discovery)

    @model_validator(mode="after")
    def _bound_client_id(self) -> EdgeConfig:
        """A Fusebox broker account ``gw-<X>`` may only connect as
        ``fusebox-edge-<X>`` (cloud.broker_auth): refuse a config the broker would
        refuse, with the fix, before it starts."""
        account = self.cloud.account() or ""
        if not account.startswith("gw-"):
            return self  # not a Fusebox gateway account (a dev broker, say)
        bound = "fusebox-edge-" + account[3:]
        used = self.cloud.client_id or f"fusebox-edge-{self.gateway_id}"
        if used == bound:
            return self
        if self.cloud.client_id:
            raise ValueError(
                f"cloud.client_id {self.cloud.client_id!r}: the cloud broker lets "
                f"the account {account!r} connect only with the client id {bound!r} "
                "and refuses any other; remove client_id (its default is "
                "fusebox-edge-<gateway_id>)"
            )
        raise ValueError(
            f"cloud username {account!r} is the broker account of gateway "
            f"{account[3:]!r}, but gateway_id is {self.gateway_id!r}: the broker "
            f"would refuse it. Use this gateway's own account (username "
            f"'gw-{self.gateway_id}', from its config bundle or POST "
            f"/v1/gateways/{self.gateway_id}/broker_credentials)"
        )

    @model_validator(mode="after")
    def _unique_meter_ids(self) -> EdgeConfig:
        seen: set[str] = set()
        for m in self.meters:
            if m.id in seen:
                raise ValueError(f"meter id {m.id!r} is used twice; ids must be unique")
            seen.add(m.id)
        if self.site.meter is not None and self.site.meter not in seen:
            raise ValueError(
                f"site.meter {self.site.meter!r} is not the id of a [[meters]] entry"
            )
        return self


_FIXES = {
    "missing": "add it",
    "extra_forbidden": "remove it, or check its spelling",
    "union_tag_invalid": f"use one of: {meter_type_choices()}",
    "union_tag_not_found": "add type = "
    + meter_type_choices(quoted=True, separator=" | "),
    "string_pattern_mismatch": "use letters, digits, '_', '.', '-' (at most 64)",
}


def _explain(exc: ValidationError, path: Path) -> str:
    lines = [f"{path}: {exc.error_count()} problem(s) in the edge config"]
    for err in exc.errors():
        loc = ""
        for part in err["loc"]:
            loc += (
                f"[{part}]"
                if isinstance(part, int)
                else (f".{part}" if loc else str(part))
            )
        fix = _FIXES.get(err["type"], "")
        msg = err["msg"]
        lines.append(f"  {loc or '(top level)'}: {msg}" + (f" -> {fix}" if fix else ""))
    lines.append("A commented example: fusebox edge init --out edge.toml")
    return "\n".join(lines)


def parse_config(
    data: dict[str, Any], *, source: Path = Path("<config>")
) -> EdgeConfig:
    """Validate a config already read into ``data`` (``$FUSEBOX_CLOUD_MQTT_URL`` and
    ``$FUSEBOX_LOCAL_MQTT_URL`` override its broker URLs). Raises ``ConfigError`` naming
    each problem and its fix, with ``source`` as the file name."""
    env_cloud = os.environ.get("FUSEBOX_CLOUD_MQTT_URL")
    env_local = os.environ.get("FUSEBOX_LOCAL_MQTT_URL")
    # a table that is not a table (``cloud = "..."``) is left for validation to name
    if env_cloud and isinstance(data.setdefault("cloud", {}), dict):
        data["cloud"]["mqtt_url"] = env_cloud
    if env_local and isinstance(data.setdefault("local", {}), dict):
        data["local"]["mqtt_url"] = env_local
    try:
        return EdgeConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_explain(exc, source)) from None


def load_config(path: str | os.PathLike[str], *, overrides: bool = True) -> EdgeConfig:
    """The config in force: the TOML file at ``path`` (with the environment's
    URLs, ``parse_config``) and the installer's overrides on top
    (``edge.overrides``: the fuse limit and the chargers approved on the local
    page, kept beside the outbox).

    ``overrides=False`` gives the file alone, for callers that only need to find
    the running edge (its local API, its claim code) and must work whatever the
    overrides file holds. ``ConfigError`` names the file and the fix when the
    config or the overrides file cannot be read or is not valid.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{p}: not a text file in UTF-8 ({exc.reason} at byte {exc.start}); "
            "TOML files must be UTF-8"
        ) from None
    except OSError as exc:
        raise ConfigError(
            f"{p}: cannot read the edge config ({exc.strerror}); "
            "create one with: fusebox edge init --out " + str(p)
        ) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p}: not valid TOML: {exc}") from None
    config = parse_config(data, source=p)
    return apply_overrides(config) if overrides else config
