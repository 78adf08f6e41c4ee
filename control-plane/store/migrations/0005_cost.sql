-- Cost reports and budgets: what reading the rollups per node needs.
-- Forward-only.

-- A node's first hour with data, found per agent with one index probe
-- (the time a node is expected to report from, when its registration is
-- newer than its data), and its hours in a range (gaps within a day).
CREATE INDEX usage_node_hourly_agent ON usage_node_hourly (agent_id, hour);

-- Node rollups read per cluster over a range of days.
CREATE INDEX usage_node_daily_cluster ON usage_node_daily (cluster_id, day);

-- A budget always has thresholds (the API fills in 50, 80, 100).
ALTER TABLE budgets
    ADD CONSTRAINT budgets_thresholds_present CHECK (cardinality(thresholds_percent) > 0);

-- Usage per day, tenant and cluster: what tenant and cluster reports (and
-- budgets) read, so a month is tenants × clusters × 30 rows, not one per
-- environment and day. Kept equal to the sums of usage_daily by statement
-- triggers: the rollup pass only ever deletes a day's rows and inserts them
-- again, and every statement that does recomputes the days it touched,
-- whole, in its own transaction. NUMERIC: a tenant's sum of a day can pass
-- BIGINT.
CREATE TABLE usage_tenant_daily (
    day                TIMESTAMPTZ NOT NULL,
    tenant_id          UUID NOT NULL,
    cluster_id         UUID NOT NULL,
    cpu_requested      NUMERIC NOT NULL,
    cpu_used           NUMERIC NOT NULL,
    cpu_billed         NUMERIC NOT NULL,
    memory_requested   NUMERIC NOT NULL,
    memory_used        NUMERIC NOT NULL,
    memory_billed      NUMERIC NOT NULL,
    storage_requested  NUMERIC NOT NULL,
    storage_used       NUMERIC NOT NULL,
    storage_billed     NUMERIC NOT NULL,
    network_receive    NUMERIC NOT NULL,
    network_transmit   NUMERIC NOT NULL,
    container_seconds  NUMERIC NOT NULL,
    PRIMARY KEY (day, tenant_id, cluster_id)
);

CREATE FUNCTION usage_tenant_daily_refresh() RETURNS trigger AS $$
BEGIN
    DELETE FROM usage_tenant_daily WHERE day IN (SELECT DISTINCT day FROM changed);
    INSERT INTO usage_tenant_daily
    SELECT day, tenant_id, cluster_id, SUM(cpu_requested), SUM(cpu_used), SUM(cpu_billed),
           SUM(memory_requested), SUM(memory_used), SUM(memory_billed),
           SUM(storage_requested), SUM(storage_used), SUM(storage_billed),
           SUM(network_receive), SUM(network_transmit), SUM(container_seconds)
    FROM usage_daily WHERE day IN (SELECT DISTINCT day FROM changed)
    GROUP BY day, tenant_id, cluster_id;
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER usage_daily_inserted AFTER INSERT ON usage_daily
    REFERENCING NEW TABLE AS changed FOR EACH STATEMENT
    EXECUTE FUNCTION usage_tenant_daily_refresh();
CREATE TRIGGER usage_daily_deleted AFTER DELETE ON usage_daily
    REFERENCING OLD TABLE AS changed FOR EACH STATEMENT
    EXECUTE FUNCTION usage_tenant_daily_refresh();
CREATE TRIGGER usage_daily_updated AFTER UPDATE ON usage_daily
    REFERENCING NEW TABLE AS changed FOR EACH STATEMENT
    EXECUTE FUNCTION usage_tenant_daily_refresh();

INSERT INTO usage_tenant_daily
SELECT day, tenant_id, cluster_id, SUM(cpu_requested), SUM(cpu_used), SUM(cpu_billed),
       SUM(memory_requested), SUM(memory_used), SUM(memory_billed),
       SUM(storage_requested), SUM(storage_used), SUM(storage_billed),
       SUM(network_receive), SUM(network_transmit), SUM(container_seconds)
FROM usage_daily GROUP BY day, tenant_id, cluster_id;
