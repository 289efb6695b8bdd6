-- Charging sessions (issue 3), folded from the edge's session_started and
-- session_stopped events: one row per (gateway, charger, transaction), filled in
-- whatever order the two events arrive, idempotent under redelivery.

CREATE TABLE sessions (
    gateway_id      text NOT NULL,
    charger_id      text NOT NULL,
    transaction_id  text NOT NULL,
    connector_id    integer,
    id_tag          text,
    started_at      timestamptz,
    stopped_at      timestamptz,
    meter_start_wh  double precision,
    meter_stop_wh   double precision,
    energy_wh       double precision
        GENERATED ALWAYS AS (meter_stop_wh - meter_start_wh) STORED,
    stop_reason     text,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (gateway_id, charger_id, transaction_id)
);

CREATE INDEX sessions_started ON sessions (gateway_id, started_at);
