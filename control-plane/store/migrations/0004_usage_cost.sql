-- Usage and cost: batches stored at most once (invariant 6), raw windows in
-- daily partitions dropped for retention, hourly and daily rollups that
-- reports read, gaps, the price book and budgets. Forward-only.

-- The ledger of every usage batch stored, by its id. A batch seen again is
-- answered as recorded and changes nothing. Unpartitioned so the id alone is
-- the key; rows older than the raw retention are deleted with it (an agent
-- cannot resend them: its spool holds far less, and such windows are refused).
CREATE TABLE usage_batches (
    agent_id      TEXT NOT NULL,
    spool_epoch   BIGINT NOT NULL CHECK (spool_epoch > 0),
    sequence      BIGINT NOT NULL CHECK (sequence > 0),
    cluster_id    UUID NOT NULL,
    receive_time  TIMESTAMPTZ NOT NULL,
    windows       INTEGER NOT NULL,
    PRIMARY KEY (agent_id, spool_epoch, sequence)
);
CREATE INDEX usage_batches_receive ON usage_batches (receive_time);

-- One row per namespace per node window. The key carries the partition key
-- (window_start), so a window sent again under another batch id is still
-- stored once. Partitions are named usage_windows_pYYYYMMDD and created ahead
-- by the control plane. Amounts: CPU core-nanoseconds, memory and storage
-- byte-seconds, network bytes.
CREATE TABLE usage_windows (
    window_start                    TIMESTAMPTZ NOT NULL,
    agent_id                        TEXT NOT NULL,
    namespace                       TEXT NOT NULL,
    cluster_id                      UUID NOT NULL,
    environment_id                  UUID NOT NULL,
    tenant_id                       UUID NOT NULL,
    duration_seconds                INTEGER NOT NULL,
    cpu_requested                   BIGINT NOT NULL,
    cpu_used                        BIGINT NOT NULL,
    cpu_billed                      BIGINT NOT NULL,
    memory_requested                BIGINT NOT NULL,
    memory_used                     BIGINT NOT NULL,
    memory_billed                   BIGINT NOT NULL,
    storage_requested               BIGINT NOT NULL,
    storage_used                    BIGINT NOT NULL,
    storage_billed                  BIGINT NOT NULL,
    network_receive                 BIGINT NOT NULL,
    network_transmit                BIGINT NOT NULL,
    container_seconds               BIGINT NOT NULL,
    PRIMARY KEY (window_start, agent_id, namespace)
) PARTITION BY RANGE (window_start);

-- One row per node window: what the node's agent covered, and the node's
-- allocatable capacity (for idle cost). A node window that never arrived is
-- missing coverage.
CREATE TABLE usage_node_windows (
    window_start      TIMESTAMPTZ NOT NULL,
    agent_id          TEXT NOT NULL,
    cluster_id        UUID NOT NULL,
    duration_seconds  INTEGER NOT NULL,
    covered_seconds   INTEGER NOT NULL,
    node_cpu_millis   BIGINT NOT NULL,
    node_memory_bytes BIGINT NOT NULL,
    PRIMARY KEY (window_start, agent_id)
) PARTITION BY RANGE (window_start);

-- Hours whose rollups must be recomputed from the raw windows. Ingest upserts
-- the row (taking its lock), so a rollup pass either sees the batch's windows
-- or leaves the row for the next pass.
CREATE TABLE usage_dirty_hours (
    hour        TIMESTAMPTZ PRIMARY KEY,
    touch_time  TIMESTAMPTZ NOT NULL
);

-- Rollups: recomputed whole from the level below (never incremented), so a
-- pass run twice, or by two replicas, gives the same rows.
CREATE TABLE usage_hourly (
    hour               TIMESTAMPTZ NOT NULL,
    environment_id     UUID NOT NULL,
    cluster_id         UUID NOT NULL,
    tenant_id          UUID NOT NULL,
    cpu_requested      BIGINT NOT NULL,
    cpu_used           BIGINT NOT NULL,
    cpu_billed         BIGINT NOT NULL,
    memory_requested   BIGINT NOT NULL,
    memory_used        BIGINT NOT NULL,
    memory_billed      BIGINT NOT NULL,
    storage_requested  BIGINT NOT NULL,
    storage_used       BIGINT NOT NULL,
    storage_billed     BIGINT NOT NULL,
    network_receive    BIGINT NOT NULL,
    network_transmit   BIGINT NOT NULL,
    container_seconds  BIGINT NOT NULL,
    PRIMARY KEY (hour, environment_id, cluster_id)
);
CREATE INDEX usage_hourly_tenant ON usage_hourly (tenant_id, hour);

CREATE TABLE usage_daily (LIKE usage_hourly);
ALTER TABLE usage_daily RENAME COLUMN hour TO day;
ALTER TABLE usage_daily ADD PRIMARY KEY (day, environment_id, cluster_id);
CREATE INDEX usage_daily_tenant ON usage_daily (tenant_id, day);

-- Node coverage and capacity per hour and per day: covered seconds, and
-- allocatable CPU in millicore-seconds and memory in byte-seconds over them.
CREATE TABLE usage_node_hourly (
    hour              TIMESTAMPTZ NOT NULL,
    agent_id          TEXT NOT NULL,
    cluster_id        UUID NOT NULL,
    covered_seconds   BIGINT NOT NULL,
    cpu_millis_seconds BIGINT NOT NULL,
    memory_byte_seconds BIGINT NOT NULL,
    PRIMARY KEY (hour, agent_id)
);
CREATE TABLE usage_node_daily (LIKE usage_node_hourly);
ALTER TABLE usage_node_daily RENAME COLUMN hour TO day;
ALTER TABLE usage_node_daily ADD PRIMARY KEY (day, agent_id);

-- Stretches an agent said it could not account for (spool full, not
-- sampling). Reported as missing coverage.
CREATE TABLE usage_gaps (
    agent_id     TEXT NOT NULL,
    cluster_id   UUID NOT NULL,
    start_time   TIMESTAMPTZ NOT NULL,
    end_time     TIMESTAMPTZ NOT NULL CHECK (end_time > start_time),
    reason       TEXT NOT NULL,
    PRIMARY KEY (agent_id, start_time, reason)
);
CREATE INDEX usage_gaps_time ON usage_gaps (cluster_id, end_time);

-- The price book: versions per cluster (NULL: the default for all), each in
-- force from its effective time (a UTC midnight) until the next. Prices are
-- exact decimal strings in the units their columns name.
CREATE TABLE prices (
    cluster_id         UUID REFERENCES clusters (id),
    effective_time     TIMESTAMPTZ NOT NULL,
    currency           TEXT NOT NULL,
    cpu_core_hour      TEXT NOT NULL,
    memory_gib_hour    TEXT NOT NULL,
    storage_gib_month  TEXT NOT NULL,
    create_time        TIMESTAMPTZ NOT NULL,
    created_by         TEXT NOT NULL,
    UNIQUE NULLS NOT DISTINCT (cluster_id, effective_time)
);

-- A tenant's monthly budget (an exact decimal string in the book's currency)
-- and the thresholds that alert.
CREATE TABLE budgets (
    tenant_id           UUID PRIMARY KEY REFERENCES tenants (id),
    monthly_amount      TEXT NOT NULL,
    thresholds_percent  INTEGER[] NOT NULL,
    update_time         TIMESTAMPTZ NOT NULL
);

-- Each threshold fires once per tenant per month: the key is the guard.
CREATE TABLE budget_alerts (
    tenant_id   UUID NOT NULL REFERENCES tenants (id),
    month       DATE NOT NULL,
    threshold   INTEGER NOT NULL,
    cost        TEXT NOT NULL,
    fire_time   TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (tenant_id, month, threshold)
);
