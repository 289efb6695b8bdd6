"""The backbone's JetStream streams, their limits and full-policy, created idempotently.

``FUSEBOX_UP`` holds everything gateways send (``fusebox.v1.gw.*.up.>``: batches,
status, schedule status, command results); ``FUSEBOX_DEAD`` holds dead letters
(``fusebox.dead.<consumer>.<gateway_id>``): messages a consumer gave up on.

Limits of ``FUSEBOX_UP`` (:class:`StreamPlan`, pure; :func:`stream_plans`):

* file storage, replicas 3 in a cluster (min(3, nodes)), 1 on one node;
* ``max_msg_size`` = 3 MiB (:data:`protocols.broker_limits.CLOUD_MAX_PACKET_BYTES`,
  the cloud broker's packet limit; the edge's largest batch is 2 MiB), the same as
  the nodes' ``max_payload``;
* ``max_bytes`` 4 GiB (fits the nodes' 8 GiB ``max_file_store`` with room for the
  MQTT streams and ``FUSEBOX_DEAD``), ``max_age`` 7 days, ``max_msgs`` unlimited;
* duplicate window 2 minutes (for publishers that set ``Nats-Msg-Id``; MQTT cannot).

**Retention: interest.** A message stays until every durable consumer whose filter
matches it (``ingest``, the scheduler, ...) has acked it, so the stream holds only the
backlog of the slowest consumer, and a consumer can stop, lag and catch up without
touching the others. A message no consumer's filter matches is not kept: each
service creates its durable consumer before it needs messages (an edge resends what
was never acked anyway).

**Full-policy: discard new.** When the backlog reaches ``max_bytes`` (or a message is
older than ``max_age``), new messages are refused and nothing already stored is
dropped. A gateway loses nothing: it prunes a batch from its outbox only on the
cloud's ack, sent after the PostgreSQL COMMIT, so a refused batch is just resent
(``edge.uplink``: after ``ack_timeout_s``, with backoff) once the consumers have
caught up. Note that over MQTT the gateway cannot see the refusal: nats-server 2.9
answers a QoS 1 PUBLISH with PUBACK once it has stored it in its own ``$MQTT_msgs``
stream, whether or not ``FUSEBOX_UP`` took it. While ``FUSEBOX_UP`` elects a new
leader (its leader died: about 10 s on nats-server 2.9), PUBACKed messages do not
reach it (tests/component/test_backbone_cluster.py measures thousands); those
batches are resent by their gateways for want of the cloud's ack. A consumer that
must see every PUBACKed message at once reads :data:`MQTT_QOS1_STREAM` with the
filter :data:`MQTT_QOS1_UP_FILTER` instead (the same test shows it misses none).

``FUSEBOX_DEAD``: limits retention (kept for inspection whether or not anyone reads
it), discard old, 1 GiB, 30 days.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from protocols.broker_limits import CLOUD_MAX_PACKET_BYTES

__all__ = [
    "DEAD_STREAM",
    "DEAD_SUBJECTS",
    "MQTT_QOS1_STREAM",
    "MQTT_QOS1_UP_FILTER",
    "UP_STREAM",
    "UP_SUBJECTS",
    "StreamPlan",
    "ensure_streams",
    "stream_plans",
    "wait_jetstream",
]

UP_STREAM = "FUSEBOX_UP"
UP_SUBJECTS = ("fusebox.v1.gw.*.up.>",)
DEAD_STREAM = "FUSEBOX_DEAD"
DEAD_SUBJECTS = ("fusebox.dead.>",)
_DAY_S = 24 * 3600
MQTT_QOS1_STREAM = "$MQTT_msgs"
"""nats-server's own stream of MQTT QoS 1 messages (R min(3, N), interest
retention): a QoS 1 PUBLISH is PUBACKed once it is stored here."""
MQTT_QOS1_UP_FILTER = "$MQTT.msgs.fusebox.v1.gw.*.up.>"
"""The gateways' QoS 1 messages in :data:`MQTT_QOS1_STREAM`: a durable consumer with
this filter sees every PUBACKed message, even while ``FUSEBOX_UP`` elects a leader."""


@dataclass(frozen=True)
class StreamPlan:
    """What one stream should be (pure; :meth:`config` makes nats-py's config)."""

    name: str
    subjects: tuple[str, ...]
    retention: str  # "limits" | "interest" | "workqueue"
    discard: str  # "old" | "new"
    replicas: int
    max_bytes: int
    max_age_s: float
    max_msg_size_bytes: int
    duplicate_window_s: float = 120.0
    description: str = ""

    def config(self) -> object:
        """The ``nats.js.api.StreamConfig`` for this plan."""
        from nats.js.api import (
            DiscardPolicy,
            RetentionPolicy,
            StorageType,
            StreamConfig,
        )

        return StreamConfig(
            name=self.name,
            description=self.description,
            subjects=list(self.subjects),
            retention=RetentionPolicy(self.retention),
            discard=DiscardPolicy(self.discard),
            storage=StorageType.FILE,
            num_replicas=self.replicas,
            max_bytes=self.max_bytes,
            max_age=self.max_age_s,
            max_msg_size=self.max_msg_size_bytes,
            max_msgs=-1,
            max_msgs_per_subject=-1,
            duplicate_window=self.duplicate_window_s,
        )


def stream_plans(
    node_count: int, *, up_max_bytes: int = 4 * 1024**3
) -> tuple[StreamPlan, StreamPlan]:
    """``FUSEBOX_UP`` and ``FUSEBOX_DEAD`` for a backbone of ``node_count`` nodes."""
    replicas = max(1, min(3, node_count))
    up = StreamPlan(
        name=UP_STREAM,
        subjects=UP_SUBJECTS,
        retention="interest",
        discard="new",
        replicas=replicas,
        max_bytes=up_max_bytes,
        max_age_s=7 * _DAY_S,
        max_msg_size_bytes=CLOUD_MAX_PACKET_BYTES,
        description="everything gateways send; kept until every consumer acked",
    )
    dead = StreamPlan(
        name=DEAD_STREAM,
        subjects=DEAD_SUBJECTS,
        retention="limits",
        discard="old",
        replicas=replicas,
        max_bytes=1024**3,
        max_age_s=30 * _DAY_S,
        max_msg_size_bytes=CLOUD_MAX_PACKET_BYTES + 64 * 1024,
        description="dead letters: fusebox.dead.<consumer>.<gateway_id>",
    )
    return up, dead


async def wait_jetstream(js_manager: object, timeout_s: float) -> None:
    """Poll ``account_info`` until JetStream answers (in a cluster: until the meta
    leader is elected); raise ``TimeoutError`` with the last error otherwise."""
    deadline = time.monotonic() + timeout_s
    last: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            await js_manager.account_info()  # type: ignore[attr-defined]
            return
        except Exception as exc:  # not ready yet: no leader, no responders, timeout
            last = exc
        await asyncio.sleep(0.1)
    raise TimeoutError(f"JetStream not ready after {timeout_s} s: {last!r}")


async def ensure_streams(
    nats_url: str | list[str],
    node_count: int,
    *,
    user: str | None = None,
    password: str | None = None,
    timeout_s: float = 30.0,
    plans: tuple[StreamPlan, ...] | None = None,
) -> list[str]:
    """Create the backbone's streams, or update them to the plan; idempotent.

    ``nats_url``: one URL or several (any node). Waits (up to ``timeout_s``) for
    JetStream first. Returns the stream names."""
    import nats
    from nats.js.errors import NotFoundError

    chosen = plans if plans is not None else stream_plans(node_count)
    servers = [nats_url] if isinstance(nats_url, str) else nats_url
    options = {"user": user, "password": password} if user else {}
    nc = await nats.connect(
        servers=servers, connect_timeout=timeout_s, max_reconnect_attempts=-1, **options
    )
    try:
        jsm = nc.jsm()
        await wait_jetstream(jsm, timeout_s)
        deadline = time.monotonic() + timeout_s
        for plan in chosen:
            while True:
                try:
                    try:
                        await jsm.stream_info(plan.name)
                        await jsm.update_stream(plan.config())  # type: ignore[arg-type]
                    except NotFoundError:
                        await jsm.add_stream(plan.config())  # type: ignore[arg-type]
                    break
                except Exception:  # e.g. not enough peers yet right after start
                    if time.monotonic() > deadline:
                        raise
                    await asyncio.sleep(0.2)
        return [plan.name for plan in chosen]
    finally:
        await nc.close()
