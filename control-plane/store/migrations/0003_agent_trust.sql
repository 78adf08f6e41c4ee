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

-- The applier of each cluster, fenced here: a grant moves the epoch up (it
-- never goes down, also when the applier lets go: agent_id is then NULL), and
-- only reports of the granted agent at the current epoch are heard. A table
-- of its own, so that checking the fence (FOR SHARE, first in a report's
-- transaction) never waits on the locks that environment changes take on
-- clusters and environments rows. Revoking an agent needs no change here:
-- the fence check joins the agent and ignores a revoked one.
CREATE TABLE cluster_appliers (
    cluster_id  UUID PRIMARY KEY REFERENCES clusters (id),
    agent_id    TEXT REFERENCES agents (id) ON DELETE SET NULL,
    epoch       BIGINT NOT NULL CHECK (epoch >= 0),
    grant_time  TIMESTAMPTZ NOT NULL
);

-- A prune pass the applier held (it would delete more than its configured
-- share of the managed namespaces), waiting for an operator's confirmation.
ALTER TABLE clusters ADD COLUMN held_prune JSONB;
