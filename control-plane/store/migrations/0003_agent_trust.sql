-- Agent trust: certificate identities, join-token lifecycle, the applier
-- fenced by the control plane, held prunes. Forward-only.

-- Join tokens may be limited in uses; every registration counts one.
ALTER TABLE join_tokens
    ADD COLUMN max_uses INTEGER NOT NULL DEFAULT 0 CHECK (max_uses >= 0),
    ADD COLUMN uses     INTEGER NOT NULL DEFAULT 0 CHECK (uses >= 0);

-- Agents authenticate with client certificates signed by the agent CA; the
-- bearer credential hash is gone (agents registered before must register
-- again). The current and the previous certificate serial are accepted, so a
-- renewal never cuts the session that asked for it. `session_id` names the
-- one live session: a newer one replaces it on every replica.
ALTER TABLE agents
    DROP COLUMN key_hash,
    ADD COLUMN certificate_serial           TEXT,
    ADD COLUMN previous_certificate_serial  TEXT,
    ADD COLUMN certificate_expire_time      TIMESTAMPTZ,
    ADD COLUMN join_token_id                TEXT REFERENCES join_tokens (id),
    ADD COLUMN revoke_time                  TIMESTAMPTZ,
    ADD COLUMN session_id                   UUID;

-- The CA that signs agent certificates: its certificate only (public). Its
-- key stays in a file or Secret; a replica started with another CA's key is
-- refused instead of issuing certificates nobody else accepts.
CREATE TABLE agent_ca (
    id               INTEGER PRIMARY KEY CHECK (id = 1),
    certificate_pem  TEXT NOT NULL,
    fingerprint      TEXT NOT NULL,
    create_time      TIMESTAMPTZ NOT NULL
);

-- The applier of each cluster, fenced here: granting moves the epoch up, and
-- only reports of the granted agent at the current epoch are heard. A prune
-- pass the applier held waits in `held_prune` for an operator's confirmation.
ALTER TABLE clusters
    ADD COLUMN applier_agent_id  TEXT REFERENCES agents (id) ON DELETE SET NULL,
    ADD COLUMN applier_epoch     BIGINT NOT NULL DEFAULT 0 CHECK (applier_epoch >= 0),
    ADD COLUMN held_prune        JSONB;
