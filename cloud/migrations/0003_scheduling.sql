-- Smart charging (issue 4): site settings, chargers, owners' preferences, tariff
-- curves, the plans the scheduler leased to gateways, what the edge reported back,
-- and owner commands (boost).
--
-- Times: ``updated_at``/``created_at``/``inputs_at`` are the database's clock (they
-- order changes against plans); ``issued_at``/``valid_until``/``until``/``at`` are
-- the scheduler's and the edge's clock, which may be a simulated one.

-- A price/carbon curve source. Every kind is stored as half-hourly slots in
-- ``tariff_slots``; a ``flat`` tariff may instead give one ``flat_price_p_per_kwh``.
CREATE TABLE tariffs (
    id                   text PRIMARY KEY
        CHECK (id ~ '^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$'),
    kind                 text NOT NULL DEFAULT 'dynamic'
        CHECK (kind IN ('dynamic', 'tou', 'flat')),
    flat_price_p_per_kwh double precision
        CHECK (flat_price_p_per_kwh BETWEEN -1000 AND 1000),
    updated_at           timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE tariff_slots (
    tariff_id         text NOT NULL REFERENCES tariffs (id) ON DELETE CASCADE,
    slot_start        timestamptz NOT NULL
        CHECK (extract(epoch FROM slot_start)::numeric % 1800 = 0),
    price_p_per_kwh   double precision CHECK (price_p_per_kwh BETWEEN -1000 AND 1000),
    carbon_g_per_kwh  double precision CHECK (carbon_g_per_kwh BETWEEN 0 AND 5000),
    PRIMARY KEY (tariff_id, slot_start)
);

-- One site per gateway: the supply the plan must stay under and how to plan it.
CREATE TABLE sites (
    gateway_id     text PRIMARY KEY REFERENCES gateways (id) ON DELETE CASCADE,
    main_fuse_a    double precision NOT NULL CHECK (main_fuse_a > 0 AND main_fuse_a <= 2000),
    phases         smallint NOT NULL DEFAULT 1 CHECK (phases IN (1, 3)),
    voltage_v      double precision NOT NULL DEFAULT 230
        CHECK (voltage_v > 0 AND voltage_v <= 1000),
    tariff_id      text CHECK (tariff_id ~ '^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$'),
    timezone       text NOT NULL DEFAULT 'Europe/London',
    objective      text NOT NULL DEFAULT 'cost'
        CHECK (objective IN ('cost', 'carbon', 'mix')),
    carbon_weight  double precision NOT NULL DEFAULT 0.5
        CHECK (carbon_weight BETWEEN 0 AND 1),
    -- the site's other load for planning; NULL: the site meter's recent average
    base_load_w    double precision CHECK (base_load_w BETWEEN 0 AND 1000000),
    updated_at     timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE site_chargers (
    gateway_id    text NOT NULL REFERENCES gateways (id) ON DELETE CASCADE,
    charger_id    text NOT NULL CHECK (charger_id ~ '^[A-Za-z0-9*\-_=:+|@.]{1,48}$'),
    connector_id  integer NOT NULL DEFAULT 1 CHECK (connector_id BETWEEN 1 AND 64),
    max_power_w   double precision NOT NULL DEFAULT 7400
        CHECK (max_power_w > 0 AND max_power_w <= 1000000),
    min_power_w   double precision
        CHECK (min_power_w >= 0 AND min_power_w <= max_power_w),
    phases        smallint NOT NULL DEFAULT 1 CHECK (phases IN (1, 3)),
    phase         smallint NOT NULL DEFAULT 1 CHECK (phase BETWEEN 1 AND 3),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (gateway_id, charger_id)
);

-- The owner's wish per charger: ready by a local wall-clock time with a target
-- energy, or a target state of charge of a battery of known size.
CREATE TABLE charging_preferences (
    gateway_id           text NOT NULL REFERENCES gateways (id) ON DELETE CASCADE,
    charger_id           text NOT NULL,
    mode                 text NOT NULL DEFAULT 'smart'
        CHECK (mode IN ('smart', 'boost', 'off')),
    ready_by             time NOT NULL DEFAULT '07:30',
    target_energy_kwh    double precision
        CHECK (target_energy_kwh > 0 AND target_energy_kwh <= 1000),
    target_soc_pct       double precision
        CHECK (target_soc_pct > 0 AND target_soc_pct <= 100),
    battery_kwh          double precision
        CHECK (battery_kwh > 0 AND battery_kwh <= 1000),
    max_price_p_per_kwh  double precision
        CHECK (max_price_p_per_kwh BETWEEN -1000 AND 1000),
    updated_at           timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (gateway_id, charger_id),
    CHECK ((target_energy_kwh IS NOT NULL)
           <> (target_soc_pct IS NOT NULL AND battery_kwh IS NOT NULL)),
    CHECK ((target_soc_pct IS NULL) = (battery_kwh IS NULL))
);

-- Every lease the scheduler issued; the newest per gateway is the current plan.
CREATE TABLE plans (
    gateway_id    text NOT NULL,
    version       bigint NOT NULL CHECK (version >= 1),
    issued_at     timestamptz NOT NULL,
    valid_until   timestamptz NOT NULL,
    -- database time when the inputs were read: a later change triggers a replan
    inputs_at     timestamptz NOT NULL,
    reason        text NOT NULL CHECK (reason IN
        ('plug_in', 'unplug', 'preferences', 'settings', 'prices', 'refresh')),
    charger_ids   text[] NOT NULL DEFAULT '{}',
    feasible      boolean NOT NULL DEFAULT true,
    cost_p        double precision,
    carbon_g      double precision,
    lease         jsonb NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    published_at  timestamptz,
    PRIMARY KEY (gateway_id, version),
    CHECK (valid_until > issued_at)
);

CREATE INDEX plans_unpublished ON plans (gateway_id) WHERE published_at IS NULL;

-- What each charger really got, as the edge reported it (up/schedule_status):
-- the latest per charger, and the history.
CREATE TABLE schedule_status (
    gateway_id     text NOT NULL,
    charger_id     text NOT NULL,
    lease_version  bigint NOT NULL CHECK (lease_version >= 0),
    state          text NOT NULL,
    limit_w        double precision NOT NULL CHECK (limit_w >= 0),
    planned_w      double precision CHECK (planned_w >= 0),
    at             timestamptz NOT NULL,
    detail         text NOT NULL DEFAULT '',
    received_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (gateway_id, charger_id)
);

CREATE TABLE schedule_status_history (
    id             bigserial PRIMARY KEY,
    gateway_id     text NOT NULL,
    charger_id     text NOT NULL,
    lease_version  bigint NOT NULL CHECK (lease_version >= 0),
    state          text NOT NULL,
    limit_w        double precision NOT NULL CHECK (limit_w >= 0),
    planned_w      double precision CHECK (planned_w >= 0),
    at             timestamptz NOT NULL,
    detail         text NOT NULL DEFAULT '',
    received_at    timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX schedule_status_history_at
    ON schedule_status_history (gateway_id, charger_id, at);

-- Owner commands for the edge. The API inserts; the scheduler publishes them on
-- down/cmd and records the edge's answer (up/cmd_result).
CREATE TABLE commands (
    id             text PRIMARY KEY CHECK (length(id) BETWEEN 1 AND 64),
    gateway_id     text NOT NULL REFERENCES gateways (id) ON DELETE CASCADE,
    charger_id     text NOT NULL,
    action         text NOT NULL CHECK (action IN ('boost', 'cancel_boost')),
    created_at     timestamptz NOT NULL DEFAULT now(),
    until          timestamptz,
    -- relative end (seconds after publication, on the scheduler's clock)
    duration_s     integer CHECK (duration_s > 0 AND duration_s <= 7 * 86400),
    published_at   timestamptz,
    result_ok      boolean,
    result_detail  text,
    result_at      timestamptz
);

CREATE INDEX commands_unpublished ON commands (created_at) WHERE published_at IS NULL;
CREATE INDEX commands_gateway ON commands (gateway_id, created_at);

-- The scheduler looks for open sessions every few seconds.
CREATE INDEX sessions_open ON sessions (gateway_id, charger_id)
    WHERE stopped_at IS NULL;
