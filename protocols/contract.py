"""The edge-cloud sync contract, version 1: topics, messages and their wire encoding.

Topics (all under ``fusebox/v1/gw/{gateway_id}/``)::

    up/batch            edge -> cloud   Batch: readings and events with a sequence range
    up/status           edge -> cloud   GatewayStatus, retained, last will says offline
    up/schedule_status  edge -> cloud   ScheduleStatus (protocols.lease)
    up/cmd_result       edge -> cloud   CommandResult (protocols.lease)
    down/ack            cloud -> edge   Ack | Busy | Reject, discriminated on ``type``
    down/schedule       cloud -> edge   Lease, retained (protocols.lease)
    down/cmd            cloud -> edge   Command (protocols.lease)

and one cloud-wide topic, ``fusebox/v1/cloud/ingest/{worker}``: an IngestPresence,
retained while that ingest worker is subscribed, cleared when it goes (its last
will). An edge that sees one come or go resends the batches it has in flight at
once: their answers may have been lost with the worker, or they were published
while no worker was subscribed.

Wire encoding: MessagePack. It is binary (a float is 9 bytes, not up to 24 characters
of text), needs no schema compiler on either side, maps one to one onto the JSON
data model so payloads stay inspectable (``msgpack.unpackb``), and packs/unpacks a
5,000-reading batch in about a millisecond in Python, which matters because the
Python MQTT client, not the broker, is the throughput limit: we move thousands of
readings per message. Readings travel as rows of a small table (``streams``
factored out) rather than as one object per reading, which keeps a batch about
five times smaller than naive JSON.

A batch covers the closed sequence range ``first_seq..last_seq``. Every record the
edge still holds in that range is in the batch; sequence numbers in the range that
are absent were thinned by the edge's full-disk policy (counted in its status) and
the cloud treats the whole range as covered. This is what lets the cloud compute a
contiguous ``stored_through_seq`` although thinning leaves gaps.

``epoch`` is a random number the edge draws when it creates its outbox. Sequence
numbers are unique within an epoch; a gateway whose outbox was wiped (new SD card,
factory reset) starts a new epoch, and the cloud tracks ``stored_through_seq`` per
(gateway, epoch), so an old watermark can never make a new outbox prune readings
the cloud has not stored.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

import msgpack
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from protocols.readings import EARLIEST_TS, LATEST_TS, QUANTITIES, is_event_kind

CONTRACT_VERSION = 1
TOPIC_ROOT = "fusebox/v1/gw"
INGEST_SHARE_GROUP = "fusebox-ingest"

MAX_BATCH_RECORDS = 20_000
MAX_BATCH_BYTES = 2 * 1024 * 1024
MAX_RETRY_AFTER_S = 3600.0

CLOUD_ROOT = "fusebox/v1/cloud"
_WORKER_ID = r"^[A-Za-z0-9][A-Za-z0-9_\-]{0,63}$"
_GATEWAY_ID = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$"
_EARLIEST_MS = int(EARLIEST_TS.timestamp() * 1000)
_LATEST_MS = int(LATEST_TS.timestamp() * 1000)

GatewayId = Annotated[str, Field(pattern=_GATEWAY_ID)]
Seq = Annotated[int, Field(ge=1, lt=2**63)]
Epoch = Annotated[int, Field(ge=1, lt=2**63)]
TsMs = Annotated[int, Field(ge=_EARLIEST_MS, lt=_LATEST_MS)]


class ContractError(ValueError):
    """A message that does not meet the contract. Not retryable: the same bytes
    will fail again. ``reason`` is short and loggable."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# ---------------------------------------------------------------------------- topics


def gateway_topic(gateway_id: str, leaf: str) -> str:
    """``fusebox/v1/gw/{gateway_id}/{leaf}``, e.g. ``leaf="up/batch"``."""
    return f"{TOPIC_ROOT}/{gateway_id}/{leaf}"


def up_batch(gateway_id: str) -> str:
    return gateway_topic(gateway_id, "up/batch")


def up_status(gateway_id: str) -> str:
    return gateway_topic(gateway_id, "up/status")


def down_ack(gateway_id: str) -> str:
    return gateway_topic(gateway_id, "down/ack")


def down_filter(gateway_id: str) -> str:
    """What an edge subscribes to: everything the cloud sends it."""
    return gateway_topic(gateway_id, "down/#")


def ingest_filters(*, shared: bool) -> list[str]:
    """Topic filters of an ingest worker. With ``shared`` the batches are spread
    over every worker of the group (``$share``, MQTT 5 and Mosquitto >= 1.6);
    without it (an embedded broker that lacks ``$share``) run one worker only."""
    batches = f"{TOPIC_ROOT}/+/up/batch"
    status = f"{TOPIC_ROOT}/+/up/status"
    if shared:
        return [
            f"$share/{INGEST_SHARE_GROUP}/{batches}",
            f"$share/{INGEST_SHARE_GROUP}/{status}",
        ]
    return [batches, status]


def ingest_presence(worker_id: str) -> str:
    """``fusebox/v1/cloud/ingest/{worker_id}``: retained while an ingest worker is
    subscribed (an ``IngestPresence``); cleared (empty retained payload, also its
    last will) when it goes. Edges read it to resend a batch whose answer was lost
    the moment an ingest subscription comes or goes, instead of after their ack
    timeout. Old edges do not subscribe and lose nothing by it."""
    if not re.fullmatch(_WORKER_ID, worker_id):
        raise ContractError(f"bad ingest worker id {worker_id[:80]!r}")
    return f"{CLOUD_ROOT}/ingest/{worker_id}"


INGEST_PRESENCE_FILTER = f"{CLOUD_ROOT}/ingest/+"


def gateway_of(topic: str) -> str:
    """The gateway id in a contract topic; ``ContractError`` if it is not one."""
    parts = topic.split("/")
    if len(parts) < 5 or "/".join(parts[:3]) != TOPIC_ROOT:
        raise ContractError(f"not a fusebox v1 gateway topic: {topic[:120]!r}")
    return parts[3]


# -------------------------------------------------------------------------- messages


class _Msg(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)
    v: Literal[1] = 1


class Batch(_Msg):
    """Readings and events of one gateway covering ``first_seq..last_seq``.

    ``streams`` lists ``[device_id, quantity_or_event_kind]`` pairs; a reading is
    ``[seq, ts_ms, stream_index, value]`` and an event ``[seq, ts_ms, stream_index,
    data]``. Sequence numbers are unique across readings and events.
    """

    type: Literal["batch"] = "batch"
    gw: GatewayId
    epoch: Epoch
    first_seq: Seq
    last_seq: Seq
    sent_ms: int
    streams: list[tuple[str, str]]
    readings: list[tuple[Seq, TsMs, int, float]] = Field(default_factory=list)
    events: list[tuple[Seq, TsMs, int, dict[str, Any]]] = Field(default_factory=list)

    @model_validator(mode="after")
    def _consistent(self) -> Batch:
        if self.last_seq < self.first_seq:
            raise ValueError("last_seq is below first_seq")
        if len(self.readings) + len(self.events) > MAX_BATCH_RECORDS:
            raise ValueError(f"more than {MAX_BATCH_RECORDS} records in one batch")
        n_streams = len(self.streams)
        for device_id, name in self.streams:
            if not device_id or len(device_id) > 128:
                raise ValueError("stream device id empty or longer than 128")
            if name not in QUANTITIES and not is_event_kind(name):
                raise ValueError(
                    f"stream {name!r} is neither a quantity nor an event kind"
                )
        seen: set[int] = set()
        for seq, _ts, stream, value in self.readings:
            if not self.first_seq <= seq <= self.last_seq:
                raise ValueError(
                    f"reading seq {seq} outside {self.first_seq}..{self.last_seq}"
                )
            if not 0 <= stream < n_streams or self.streams[stream][1] not in QUANTITIES:
                raise ValueError(f"reading seq {seq} names no quantity stream")
            if value != value or value in (float("inf"), float("-inf")):
                raise ValueError(f"reading seq {seq} value is not finite")
            seen.add(seq)
        for seq, _ts, stream, _data in self.events:
            if not self.first_seq <= seq <= self.last_seq:
                raise ValueError(
                    f"event seq {seq} outside {self.first_seq}..{self.last_seq}"
                )
            if not 0 <= stream < n_streams or not is_event_kind(
                self.streams[stream][1]
            ):
                raise ValueError(f"event seq {seq} names no event stream")
            seen.add(seq)
        if len(seen) != len(self.readings) + len(self.events):
            raise ValueError("a sequence number appears twice in one batch")
        return self


class Ack(_Msg):
    """The cloud stored batch ``first_seq..last_seq`` and everything of this gateway
    up to ``stored_through_seq`` (contiguously). The edge may prune both."""

    type: Literal["ack"] = "ack"
    gw: GatewayId
    epoch: Epoch
    first_seq: Seq
    last_seq: Seq
    stored_through_seq: Annotated[int, Field(ge=0)]


class Busy(_Msg):
    """The cloud did not take the batch now; send it again after ``retry_after_s``."""

    type: Literal["busy"] = "busy"
    gw: GatewayId
    epoch: Epoch
    first_seq: Seq
    last_seq: Seq
    retry_after_s: Annotated[float, Field(ge=0, le=MAX_RETRY_AFTER_S)]
    reason: str = ""


class Reject(_Msg):
    """The batch failed the contract and will fail again; the edge quarantines it."""

    type: Literal["reject"] = "reject"
    gw: GatewayId
    epoch: Epoch
    first_seq: Seq
    last_seq: Seq
    reason: str


class GatewayStatus(_Msg):
    """Retained on ``up/status``; the last will is the same with ``state="offline"``."""

    type: Literal["status"] = "status"
    gw: GatewayId
    state: Literal["online", "offline"]
    sent_ms: int = 0
    software: str = ""
    backlog_records: Annotated[int, Field(ge=0)] = 0
    backlog_oldest_ms: int | None = None
    outbox_bytes: Annotated[int, Field(ge=0)] = 0
    outbox_cap_bytes: Annotated[int, Field(ge=0)] = 0
    appended_total: Annotated[int, Field(ge=0)] = 0
    thinned_total: Annotated[int, Field(ge=0)] = 0
    rejected_total: Annotated[int, Field(ge=0)] = 0
    dropped_bad_input_total: Annotated[int, Field(ge=0)] = 0
    acked_through_seq: Annotated[int, Field(ge=0)] = 0
    # full disk, by reason (optional: older gateways send none): of
    # ``thinned_total``, those thinned because the disk rather than the cap ran
    # short; readings refused (left with the device, which retries; each retry
    # counts) at the cap or with the disk full
    thinned_disk_total: Annotated[int, Field(ge=0)] = 0
    refused_cap_total: Annotated[int, Field(ge=0)] = 0
    refused_disk_total: Annotated[int, Field(ge=0)] = 0
    # sha256 (hex) of the claim code the gateway shows its installer until it is
    # claimed; the cloud matches a code typed in against it (the code itself never
    # leaves the site)
    claim_sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")] | None = None


class IngestPresence(_Msg):
    """Retained on ``ingest_presence(worker)`` once the worker has subscribed."""

    type: Literal["ingest"] = "ingest"
    worker: Annotated[str, Field(pattern=_WORKER_ID)]
    state: Literal["online"] = "online"
    sent_ms: int = 0


DownMessage = Annotated[Ack | Busy | Reject, Field(discriminator="type")]


class _Down(BaseModel):
    msg: DownMessage


# -------------------------------------------------------------------------- encoding


def pack(message: BaseModel | dict[str, Any]) -> bytes:
    """Encode a contract message (a model, or an already built dict) as MessagePack."""
    data = (
        message.model_dump(mode="python") if isinstance(message, BaseModel) else message
    )
    return msgpack.packb(data, use_bin_type=True)


def _unpack(payload: bytes, limit: int) -> dict[str, Any]:
    if len(payload) > limit:
        raise ContractError(f"payload of {len(payload)} bytes exceeds {limit}")
    try:
        data = msgpack.unpackb(payload, raw=False, strict_map_key=True)
    except Exception as exc:  # msgpack raises several unrelated types
        raise ContractError(f"not MessagePack: {type(exc).__name__}") from None
    if not isinstance(data, dict):
        raise ContractError("top level is not a map")
    if data.get("v") != CONTRACT_VERSION:
        raise ContractError(
            f"contract version {data.get('v')!r} is not {CONTRACT_VERSION}"
        )
    return data


def _short(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first.get("loc", ())) or "message"
    more = f" (+{exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"{where}: {first.get('msg', 'invalid')}{more}"


def unpack_batch(payload: bytes) -> Batch:
    """Decode and validate a batch; ``ContractError`` with a short reason if not."""
    data = _unpack(payload, MAX_BATCH_BYTES)
    try:
        return Batch.model_validate(data)
    except ValidationError as exc:
        raise ContractError(_short(exc)) from None


def unpack_down(payload: bytes) -> Ack | Busy | Reject:
    data = _unpack(payload, 64 * 1024)
    try:
        return _Down.model_validate({"msg": data}).msg
    except ValidationError as exc:
        raise ContractError(_short(exc)) from None


def unpack_status(payload: bytes) -> GatewayStatus:
    data = _unpack(payload, 64 * 1024)
    try:
        return GatewayStatus.model_validate(data)
    except ValidationError as exc:
        raise ContractError(_short(exc)) from None


def unpack_presence(payload: bytes) -> IngestPresence | None:
    """An ingest worker's presence; ``None`` for the empty payload that says it
    went (or a retained presence was cleared)."""
    if not payload:
        return None
    data = _unpack(payload, 4 * 1024)
    try:
        return IngestPresence.model_validate(data)
    except ValidationError as exc:
        raise ContractError(_short(exc)) from None


def batch_dict(
    *,
    gw: str,
    epoch: int,
    first_seq: int,
    last_seq: int,
    sent_ms: int,
    streams: list[tuple[str, str]],
    readings: list[tuple[int, int, int, float]],
    events: list[tuple[int, int, int, dict[str, Any]]],
) -> dict[str, Any]:
    """The wire form of a batch, built without model construction (the edge's hot
    path). ``unpack_batch(pack(batch_dict(...)))`` validates it on the cloud."""
    return {
        "v": CONTRACT_VERSION,
        "type": "batch",
        "gw": gw,
        "epoch": epoch,
        "first_seq": first_seq,
        "last_seq": last_seq,
        "sent_ms": sent_ms,
        "streams": streams,
        "readings": readings,
        "events": events,
    }
