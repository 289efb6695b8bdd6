"""The edge-cloud sync contract: wire round trips, every violation, topic helpers."""

from __future__ import annotations

import math
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols import contract
from protocols.contract import (
    MAX_BATCH_BYTES,
    MAX_BATCH_RECORDS,
    Ack,
    Batch,
    Busy,
    ContractError,
    GatewayStatus,
    Reject,
)
from protocols.readings import QUANTITIES

TS_2024_MS = 1_704_067_200_000  # 2024-01-01T00:00:00Z
EPOCH = 123_456_789


def _batch(**overrides: Any) -> dict[str, Any]:
    """A valid wire batch (two streams, two readings, one event) with overrides."""
    fields: dict[str, Any] = {
        "gw": "gw-1",
        "epoch": EPOCH,
        "first_seq": 10,
        "last_seq": 13,
        "sent_ms": TS_2024_MS + 5_000,
        "streams": [("meter-1", "power_w"), ("cp-1", "session_started")],
        "readings": [(10, TS_2024_MS, 0, 1234.5), (12, TS_2024_MS + 10_000, 0, -7.0)],
        "events": [(11, TS_2024_MS + 1, 1, {"connector": 1, "id_tag": "abc"})],
    }
    fields.update(overrides)
    return contract.batch_dict(**fields)


def _reason(payload: bytes) -> str:
    with pytest.raises(ContractError) as info:
        contract.unpack_batch(payload)
    assert str(info.value) == info.value.reason
    return info.value.reason


# ------------------------------------------------------------------- round trips


def test_batch_dict_round_trip() -> None:
    batch = contract.unpack_batch(contract.pack(_batch()))

    assert isinstance(batch, Batch)
    assert (batch.v, batch.type, batch.gw, batch.epoch) == (1, "batch", "gw-1", EPOCH)
    assert (batch.first_seq, batch.last_seq) == (10, 13)
    assert batch.sent_ms == TS_2024_MS + 5_000
    assert batch.streams == [("meter-1", "power_w"), ("cp-1", "session_started")]
    assert batch.readings == [
        (10, TS_2024_MS, 0, 1234.5),
        (12, TS_2024_MS + 10_000, 0, -7.0),
    ]
    assert batch.events == [(11, TS_2024_MS + 1, 1, {"connector": 1, "id_tag": "abc"})]


def test_batch_model_packs_to_the_same_message() -> None:
    batch = contract.unpack_batch(contract.pack(_batch()))
    again = contract.unpack_batch(contract.pack(batch))
    assert again == batch


def test_empty_range_batch_is_valid() -> None:
    """A range whose records were all thinned still travels, so the cloud covers it."""
    batch = contract.unpack_batch(
        contract.pack(_batch(first_seq=5, last_seq=9, readings=[], events=[]))
    )
    assert (batch.first_seq, batch.last_seq, batch.readings, batch.events) == (
        5,
        9,
        [],
        [],
    )


@pytest.mark.parametrize(
    "message",
    [
        Ack(gw="gw-1", epoch=EPOCH, first_seq=1, last_seq=50, stored_through_seq=50),
        Ack(gw="gw-1", epoch=EPOCH, first_seq=60, last_seq=70, stored_through_seq=0),
        Busy(
            gw="gw.2",
            epoch=1,
            first_seq=3,
            last_seq=4,
            retry_after_s=2.5,
            reason="ingest queue full",
        ),
        Reject(gw="G_3", epoch=2**63 - 1, first_seq=7, last_seq=7, reason="bad"),
    ],
    ids=["ack", "ack-watermark-0", "busy", "reject"],
)
def test_down_messages_round_trip(message: Ack | Busy | Reject) -> None:
    back = contract.unpack_down(contract.pack(message))
    assert type(back) is type(message)
    assert back == message


def test_gateway_status_round_trip() -> None:
    status = GatewayStatus(
        gw="gw-1",
        state="online",
        sent_ms=TS_2024_MS,
        software="fusebox-edge 0.1",
        backlog_records=42,
        backlog_oldest_ms=TS_2024_MS - 60_000,
        outbox_bytes=4096,
        outbox_cap_bytes=2**29,
        appended_total=1000,
        thinned_total=7,
        rejected_total=1,
        dropped_bad_input_total=3,
        acked_through_seq=958,
    )
    back = contract.unpack_status(contract.pack(status))
    assert back == status
    offline = contract.unpack_status(
        contract.pack(GatewayStatus(gw="gw-1", state="offline"))
    )
    assert (offline.state, offline.backlog_oldest_ms, offline.thinned_total) == (
        "offline",
        None,
        0,
    )


def test_down_message_discriminates_on_type() -> None:
    payload = contract.pack(
        {
            "v": 1,
            "type": "busy",
            "gw": "gw-1",
            "epoch": 1,
            "first_seq": 1,
            "last_seq": 2,
            "retry_after_s": 3,
        }
    )
    back = contract.unpack_down(payload)
    assert isinstance(back, Busy)
    assert back.retry_after_s == 3.0
    with pytest.raises(ContractError, match="type"):
        contract.unpack_down(
            contract.pack({"v": 1, "type": "nack", "gw": "gw-1", "epoch": 1})
        )


# ------------------------------------------------------- hypothesis: random batches

_quantities = st.sampled_from(sorted(QUANTITIES))
_event_kinds = st.sampled_from(["session_started", "session_stopped", "fault"])
_device_ids = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_:", min_size=1, max_size=20
)
_ts_ms = st.integers(min_value=946_684_800_000, max_value=4_102_444_799_999)
_values = st.floats(allow_nan=False, allow_infinity=False, width=64)
_json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=10)
)
_event_data = st.dictionaries(
    st.text(max_size=8),
    st.recursive(
        _json_scalars,
        lambda inner: (
            st.lists(inner, max_size=3)
            | st.dictionaries(st.text(max_size=5), inner, max_size=3)
        ),
        max_leaves=6,
    ),
    max_size=4,
)


@st.composite
def _random_batches(draw: st.DrawFn) -> dict[str, Any]:
    quantity_streams = draw(
        st.lists(st.tuples(_device_ids, _quantities), min_size=1, max_size=4)
    )
    event_streams = draw(
        st.lists(st.tuples(_device_ids, _event_kinds), min_size=0, max_size=3)
    )
    streams = quantity_streams + event_streams
    first_seq = draw(st.integers(min_value=1, max_value=2**62))
    n_records = draw(st.integers(min_value=0, max_value=40))
    span = draw(st.integers(min_value=n_records, max_value=n_records + 50))
    last_seq = first_seq + max(span - 1, 0)
    seqs = sorted(
        draw(
            st.lists(
                st.integers(min_value=first_seq, max_value=last_seq),
                min_size=n_records,
                max_size=n_records,
                unique=True,
            )
        )
    )
    readings: list[tuple[int, int, int, float]] = []
    events: list[tuple[int, int, int, dict[str, Any]]] = []
    for seq in seqs:
        if event_streams and draw(st.booleans()):
            index = len(quantity_streams) + draw(st.integers(0, len(event_streams) - 1))
            events.append((seq, draw(_ts_ms), index, draw(_event_data)))
        else:
            index = draw(st.integers(0, len(quantity_streams) - 1))
            readings.append((seq, draw(_ts_ms), index, draw(_values)))
    return {
        "gw": draw(st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9_.\-]{0,20}\Z")),
        "epoch": draw(st.integers(min_value=1, max_value=2**63 - 1)),
        "first_seq": first_seq,
        "last_seq": last_seq,
        "sent_ms": draw(_ts_ms),
        "streams": streams,
        "readings": readings,
        "events": events,
    }


@settings(max_examples=150, deadline=None)
@given(_random_batches())
def test_random_valid_batches_round_trip(fields: dict[str, Any]) -> None:
    batch = contract.unpack_batch(contract.pack(contract.batch_dict(**fields)))

    assert batch.gw == fields["gw"]
    assert batch.epoch == fields["epoch"]
    assert (batch.first_seq, batch.last_seq) == (
        fields["first_seq"],
        fields["last_seq"],
    )
    assert batch.streams == [tuple(s) for s in fields["streams"]]
    assert batch.readings == fields["readings"]
    assert all(isinstance(r[3], float) for r in batch.readings)
    assert batch.events == fields["events"]
    # and the model packs back to an equal batch
    assert contract.unpack_batch(contract.pack(batch)) == batch


# -------------------------------------------------------------------- violations


def test_not_msgpack() -> None:
    assert _reason(b"\xc1").startswith("not MessagePack: ")
    # a valid value followed by garbage is not one message either
    assert _reason(contract.pack(_batch()) + b"\x00").startswith("not MessagePack: ")


def test_not_a_map() -> None:
    assert _reason(msgpack.packb([1, 2, 3])) == "top level is not a map"
    assert _reason(msgpack.packb("batch")) == "top level is not a map"


@pytest.mark.parametrize(("version", "shown"), [(2, "2"), (None, "None"), ("1", "'1'")])
def test_wrong_version(version: object, shown: str) -> None:
    data = _batch()
    data["v"] = version
    assert _reason(contract.pack(data)) == f"contract version {shown} is not 1"


def test_missing_version() -> None:
    data = _batch()
    del data["v"]
    assert _reason(contract.pack(data)) == "contract version None is not 1"


def test_reading_seq_outside_range() -> None:
    reason = _reason(
        contract.pack(_batch(readings=[(14, TS_2024_MS, 0, 1.0)], events=[]))
    )
    assert "reading seq 14 outside 10..13" in reason


def test_event_seq_outside_range() -> None:
    reason = _reason(
        contract.pack(_batch(readings=[], events=[(9, TS_2024_MS, 1, {})]))
    )
    assert "event seq 9 outside 10..13" in reason


def test_duplicate_seq() -> None:
    reason = _reason(
        contract.pack(
            _batch(
                readings=[(10, TS_2024_MS, 0, 1.0)],
                events=[(10, TS_2024_MS, 1, {})],
            )
        )
    )
    assert "a sequence number appears twice in one batch" in reason


@pytest.mark.parametrize("index", [2, -1])
def test_reading_stream_index_out_of_range(index: int) -> None:
    reason = _reason(
        contract.pack(_batch(readings=[(10, TS_2024_MS, index, 1.0)], events=[]))
    )
    assert "reading seq 10 names no quantity stream" in reason


def test_reading_on_an_event_stream() -> None:
    reason = _reason(
        contract.pack(_batch(readings=[(10, TS_2024_MS, 1, 1.0)], events=[]))
    )
    assert "reading seq 10 names no quantity stream" in reason


def test_event_on_a_quantity_stream() -> None:
    reason = _reason(
        contract.pack(_batch(readings=[], events=[(11, TS_2024_MS, 0, {})]))
    )
    assert "event seq 11 names no event stream" in reason


def test_unknown_quantity() -> None:
    reason = _reason(contract.pack(_batch(streams=[("meter-1", "Power-W")])))
    assert "stream 'Power-W' is neither a quantity nor an event kind" in reason
    # a lower_snake name that is no quantity is an event kind: no reading may use it
    reason = _reason(
        contract.pack(
            _batch(
                streams=[("meter-1", "power_kw")],
                readings=[(10, TS_2024_MS, 0, 1.0)],
                events=[],
            )
        )
    )
    assert "reading seq 10 names no quantity stream" in reason


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_value(value: float) -> None:
    reason = _reason(
        contract.pack(_batch(readings=[(12, TS_2024_MS, 0, value)], events=[]))
    )
    assert "reading seq 12 value is not finite" in reason


@pytest.mark.parametrize(
    "ts_ms", [0, 946_684_799_999, 4_102_444_800_000], ids=["1970", "1999", "2100"]
)
def test_timestamp_out_of_range(ts_ms: int) -> None:
    reason = _reason(contract.pack(_batch(readings=[(10, ts_ms, 0, 1.0)], events=[])))
    assert reason.startswith("readings.0.1: Input should be ")


def test_too_many_records() -> None:
    n = MAX_BATCH_RECORDS + 1
    payload = contract.pack(
        _batch(
            first_seq=1,
            last_seq=n,
            readings=[(s, TS_2024_MS + s, 0, 1.0) for s in range(1, n + 1)],
            events=[],
        )
    )
    assert len(payload) < MAX_BATCH_BYTES  # refused for the count, not the size
    assert f"more than {MAX_BATCH_RECORDS} records in one batch" in _reason(payload)


def test_max_records_is_accepted() -> None:
    n = MAX_BATCH_RECORDS
    batch = contract.unpack_batch(
        contract.pack(
            _batch(
                first_seq=1,
                last_seq=n,
                readings=[(s, TS_2024_MS + s, 0, 1.0) for s in range(1, n + 1)],
                events=[],
            )
        )
    )
    assert len(batch.readings) == n


def test_oversize_payload() -> None:
    payload = contract.pack(
        _batch(
            readings=[], events=[(11, TS_2024_MS, 1, {"blob": "x" * MAX_BATCH_BYTES})]
        )
    )
    assert (
        _reason(payload) == f"payload of {len(payload)} bytes exceeds {MAX_BATCH_BYTES}"
    )


def test_last_seq_below_first_seq() -> None:
    reason = _reason(
        contract.pack(_batch(first_seq=10, last_seq=9, readings=[], events=[]))
    )
    assert "last_seq is below first_seq" in reason


@pytest.mark.parametrize("seq", [0, -1, 2**63])
def test_seq_outside_the_allowed_numbers(seq: int) -> None:
    data = _batch(readings=[], events=[])
    data["first_seq"] = seq
    data["last_seq"] = max(seq, 1)
    payload = msgpack.packb(data)
    assert _reason(payload).startswith("first_seq: Input should be ")


@pytest.mark.parametrize("gw", ["", "-gw", "gw/1", "gw 1", "g" * 65, "gw+"])
def test_bad_gateway_id(gw: str) -> None:
    assert _reason(contract.pack(_batch(gw=gw))).startswith(
        "gw: String should match pattern"
    )


def test_missing_field_counts_every_problem() -> None:
    data = _batch()
    del data["epoch"]
    del data["gw"]
    assert _reason(contract.pack(data)) == "gw: Field required (+1 more)"


def test_down_and_status_are_limited_to_64_kib() -> None:
    big = contract.pack(
        Reject(gw="gw-1", epoch=1, first_seq=1, last_seq=1, reason="x" * 70_000)
    )
    with pytest.raises(ContractError, match=r"exceeds 65536"):
        contract.unpack_down(big)
    with pytest.raises(ContractError, match=r"exceeds 65536"):
        contract.unpack_status(big)


def test_busy_retry_after_is_bounded() -> None:
    data = Busy(
        gw="gw-1", epoch=1, first_seq=1, last_seq=1, retry_after_s=1
    ).model_dump()
    data["retry_after_s"] = contract.MAX_RETRY_AFTER_S + 1
    with pytest.raises(ContractError, match=r"^msg\.busy\.retry_after_s: "):
        contract.unpack_down(contract.pack(data))


# ------------------------------------------------------------------------ topics


def test_topic_helpers() -> None:
    assert contract.up_batch("gw-1") == "fusebox/v1/gw/gw-1/up/batch"
    assert contract.up_status("gw-1") == "fusebox/v1/gw/gw-1/up/status"
    assert contract.down_ack("gw-1") == "fusebox/v1/gw/gw-1/down/ack"
    assert contract.down_filter("gw-1") == "fusebox/v1/gw/gw-1/down/#"


@pytest.mark.parametrize(
    ("topic", "gateway"),
    [
        ("fusebox/v1/gw/gw-1/up/batch", "gw-1"),
        ("fusebox/v1/gw/site.7/up/status", "site.7"),
        ("fusebox/v1/gw/x/down/ack", "x"),
    ],
)
def test_gateway_of(topic: str, gateway: str) -> None:
    assert contract.gateway_of(topic) == gateway


@pytest.mark.parametrize(
    "topic",
    [
        "fusebox/v1/gw/gw-1",
        "fusebox/v2/gw/gw-1/up/batch",
        "other/v1/gw/gw-1/up/batch",
        "",
    ],
)
def test_gateway_of_rejects_foreign_topics(topic: str) -> None:
    with pytest.raises(ContractError, match="not a fusebox v1 gateway topic"):
        contract.gateway_of(topic)


def test_ingest_filters() -> None:
    assert contract.ingest_filters(shared=True) == [
        "$share/fusebox-ingest/fusebox/v1/gw/+/up/batch",
        "$share/fusebox-ingest/fusebox/v1/gw/+/up/status",
    ]
    assert contract.ingest_filters(shared=False) == [
        "fusebox/v1/gw/+/up/batch",
        "fusebox/v1/gw/+/up/status",
    ]
