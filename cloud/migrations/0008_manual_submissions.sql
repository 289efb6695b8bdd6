-- Issue 11: manual meter readings are accepted into the durable intake
-- (cloud.intake) and answered 202 with a submission id; the intake consumer
-- decides each one here, in the same transaction as the reading it stores, so a
-- submission delivered twice is decided once.
CREATE TABLE manual_submissions (
    id            uuid PRIMARY KEY,
    gateway_id    text NOT NULL REFERENCES gateways (id) ON DELETE CASCADE,
    meter_id      text NOT NULL,
    ts            timestamptz NOT NULL,
    register_wh   double precision NOT NULL,
    idempotency_key text,
    state         text NOT NULL CHECK (state IN ('stored', 'refused')),
    reason        text CHECK (length(reason) <= 1000),
    reading_id    bigint REFERENCES manual_readings (id) ON DELETE SET NULL,
    submitted_by  bigint REFERENCES users (id) ON DELETE SET NULL,
    accepted_at   timestamptz NOT NULL,
    decided_at    timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX manual_submissions_meter ON manual_submissions (gateway_id, meter_id);
