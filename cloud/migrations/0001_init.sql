-- Fusebox cloud schema, version 1: gateways, the readings path, coverage tracking.

CREATE TABLE gateways (
    id                 text PRIMARY KEY,
    first_seen         timestamptz NOT NULL DEFAULT now(),
    last_seen          timestamptz,
    state              text NOT NULL DEFAULT 'unknown',
    software           text,
    backlog_records    bigint,
    backlog_oldest     timestamptz,
    outbox_bytes       bigint,
    outbox_cap_bytes   bigint,
    appended_total     bigint,
    thinned_total      bigint NOT NULL DEFAULT 0,
    rejected_total     bigint NOT NULL DEFAULT 0,
    acked_through_seq  bigint,
    status_at          timestamptz
);

-- One row per outbox incarnation of a gateway (see protocols.contract: epoch).
CREATE TABLE gateway_epochs (
    gateway_id          text NOT NULL REFERENCES gateways (id),
    epoch               bigint NOT NULL,
    stored_through_seq  bigint NOT NULL DEFAULT 0,
    first_seen          timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (gateway_id, epoch)
);

-- Ranges stored above the contiguous watermark (batches that arrived early,
-- e.g. live readings overtaking backlog). Merged into stored_through_seq as the
-- gaps below them fill.
CREATE TABLE covered_ranges (
    gateway_id  text NOT NULL,
    epoch       bigint NOT NULL,
    first_seq   bigint NOT NULL,
    last_seq    bigint NOT NULL,
    PRIMARY KEY (gateway_id, epoch, first_seq, last_seq)
);

CREATE TABLE streams (
    id          serial PRIMARY KEY,
    gateway_id  text NOT NULL REFERENCES gateways (id),
    device_id   text NOT NULL,
    name        text NOT NULL,
    UNIQUE (gateway_id, device_id, name)
);

-- Readings, partitioned by month on ts. PostgreSQL requires the partition key in
-- every unique constraint of a partitioned table, so the key is (gateway_id, seq,
-- ts): the edge never sends one seq with two timestamps, so this is as idempotent
-- as (gateway_id, seq). Partitions are created on demand by the ingest worker.
CREATE TABLE readings (
    gateway_id  text NOT NULL,
    seq         bigint NOT NULL,
    ts          timestamptz NOT NULL,
    stream_id   integer NOT NULL,
    value       double precision NOT NULL,
    stored_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (gateway_id, seq, ts)
) PARTITION BY RANGE (ts);

CREATE INDEX readings_stream_ts ON readings (stream_id, ts);

CREATE TABLE events (
    gateway_id  text NOT NULL,
    seq         bigint NOT NULL,
    ts          timestamptz NOT NULL,
    stream_id   integer NOT NULL,
    data        jsonb NOT NULL,
    stored_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (gateway_id, seq, ts)
);

-- Batches that failed the contract: kept with the reason for an operator.
CREATE TABLE rejected_batches (
    id           bigserial PRIMARY KEY,
    gateway_id   text,
    topic        text NOT NULL,
    reason       text NOT NULL,
    first_seq    bigint,
    last_seq     bigint,
    payload_head bytea,
    at           timestamptz NOT NULL DEFAULT now()
);

CREATE VIEW readings_v AS
SELECT r.gateway_id, r.seq, r.ts, s.device_id, s.name AS quantity, r.value, r.stored_at
FROM readings r JOIN streams s ON s.id = r.stream_id;
