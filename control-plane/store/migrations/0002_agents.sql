-- Agents and the revisioned channel. Forward-only.

-- What agents reported (observed state), kept beside the desired row it refers to.
ALTER TABLE environments
    ADD COLUMN applied_revision BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN ready_time TIMESTAMPTZ;

-- Join tokens: cluster-bound, expiring, stored hashed; exchanged for agent credentials.
CREATE TABLE join_tokens (
    id           TEXT PRIMARY KEY,
    key_hash     TEXT NOT NULL,
    cluster_id   UUID NOT NULL REFERENCES clusters (id),
    created_by   TEXT NOT NULL,
    create_time  TIMESTAMPTZ NOT NULL,
    expire_time  TIMESTAMPTZ NOT NULL,
    revoke_time  TIMESTAMPTZ
);

-- One row per agent (node of a cluster). The credential is stored hashed; a
-- node that registers again gets a new credential and the old one stops working.
CREATE TABLE agents (
    id                     TEXT PRIMARY KEY,
    cluster_id             UUID NOT NULL REFERENCES clusters (id),
    node_name              TEXT NOT NULL,
    key_hash               TEXT NOT NULL,
    agent_version          TEXT NOT NULL DEFAULT '',
    register_time          TIMESTAMPTZ NOT NULL,
    last_seen_time         TIMESTAMPTZ,
    acknowledged_revision  BIGINT NOT NULL DEFAULT 0,
    applier                BOOLEAN NOT NULL DEFAULT FALSE,
    connected              BOOLEAN NOT NULL DEFAULT FALSE,
    UNIQUE (cluster_id, node_name)
);
