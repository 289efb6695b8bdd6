-- People (issue 5): accounts with one role each, bearer tokens, who owns and who
-- installed each site, claiming gateways, registered meters, and meter readings
-- that owners type in.

-- One account per e-mail address, compared case-insensitively. ``password_hash``
-- is ``scrypt$n$r$p$salt$hash`` (see cloud/auth.py); NULL: cannot log in.
CREATE TABLE users (
    id             bigserial PRIMARY KEY,
    email          text NOT NULL CHECK (length(email) BETWEEN 3 AND 254),
    role           text NOT NULL CHECK (role IN ('owner', 'installer', 'operator')),
    password_hash  text,
    created_at     timestamptz NOT NULL DEFAULT now()
);

CREATE UNIQUE INDEX users_email ON users (lower(email));

-- Bearer tokens: only the sha256 of the random token is stored, so a leaked table
-- does not leak usable tokens.
CREATE TABLE api_tokens (
    token_sha256  bytea PRIMARY KEY CHECK (length(token_sha256) = 32),
    user_id       bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at    timestamptz NOT NULL DEFAULT now(),
    expires_at    timestamptz NOT NULL,
    revoked_at    timestamptz,
    client_ip     text
);

CREATE INDEX api_tokens_user ON api_tokens (user_id) WHERE revoked_at IS NULL;

-- The owner of a site (the gateway's household).
ALTER TABLE sites ADD COLUMN owner_id bigint REFERENCES users (id) ON DELETE SET NULL;
CREATE INDEX sites_owner ON sites (owner_id);

-- Claiming: the gateway reports sha256(claim code) in its status until claimed.
ALTER TABLE gateways
    ADD COLUMN claim_sha256 text CHECK (claim_sha256 ~ '^[0-9a-f]{64}$'),
    ADD COLUMN claimed_by bigint REFERENCES users (id) ON DELETE SET NULL,
    ADD COLUMN claimed_at timestamptz;

CREATE INDEX gateways_claim ON gateways (claim_sha256) WHERE claimed_at IS NULL;

-- Installers assigned to a gateway (and its site): whoever claimed it, and more.
CREATE TABLE site_installers (
    gateway_id  text NOT NULL REFERENCES gateways (id) ON DELETE CASCADE,
    user_id     bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (gateway_id, user_id)
);

CREATE INDEX site_installers_user ON site_installers (user_id);

-- Meters the installer registered; ``role = 'site'`` is the whole-site import
-- meter (the fuse guard's input).
CREATE TABLE site_meters (
    gateway_id  text NOT NULL REFERENCES gateways (id) ON DELETE CASCADE,
    meter_id    text NOT NULL CHECK (meter_id ~ '^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$'),
    -- manual: read by eye, readings typed in by the owner (no topic)
    type        text NOT NULL CHECK (type IN ('glow', 'tasmota', 'shelly', 'manual')),
    topic       text CHECK (length(topic) BETWEEN 1 AND 200),
    timezone    text,
    role        text NOT NULL DEFAULT 'site' CHECK (role IN ('site', 'other')),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (gateway_id, meter_id),
    CHECK ((type = 'manual') = (topic IS NULL))
);

CREATE UNIQUE INDEX site_meters_one_site_meter
    ON site_meters (gateway_id) WHERE role = 'site';

-- Live state and commissioning look up a device's newest events.
CREATE INDEX events_stream_ts ON events (stream_id, ts);

-- Meter readings typed in by owners (e.g. on a price change day). One per meter
-- and instant; a client's idempotency key makes a retried submission harmless.
CREATE TABLE manual_readings (
    id               bigserial PRIMARY KEY,
    gateway_id       text NOT NULL REFERENCES gateways (id) ON DELETE CASCADE,
    meter_id         text NOT NULL,
    ts               timestamptz NOT NULL,
    register_wh      double precision NOT NULL CHECK (register_wh BETWEEN 0 AND 1e12),
    idempotency_key  text CHECK (length(idempotency_key) BETWEEN 1 AND 128),
    submitted_by     bigint REFERENCES users (id) ON DELETE SET NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    UNIQUE (gateway_id, meter_id, ts),
    UNIQUE (gateway_id, idempotency_key)
);

CREATE INDEX manual_readings_meter_ts ON manual_readings (gateway_id, meter_id, ts);
