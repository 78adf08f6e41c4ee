-- k8s-mtp initial schema. Forward-only: never edit a released migration, add a new one.

-- Tenants. Deleted tenants keep their row (delete_time set) so the history of
-- their environments stays joinable; names are unique among live tenants only.
CREATE TABLE tenants (
    id                UUID PRIMARY KEY,
    name              TEXT NOT NULL,
    display_name      TEXT NOT NULL,
    owners            JSONB NOT NULL,
    cpu_millis        BIGINT NOT NULL CHECK (cpu_millis > 0),
    memory_bytes      BIGINT NOT NULL CHECK (memory_bytes > 0),
    storage_bytes     BIGINT NOT NULL CHECK (storage_bytes > 0),
    pods              BIGINT NOT NULL CHECK (pods > 0),
    max_environments  BIGINT NOT NULL CHECK (max_environments > 0),
    allowed_profiles  TEXT[] NOT NULL DEFAULT '{}',
    create_time       TIMESTAMPTZ NOT NULL,
    update_time       TIMESTAMPTZ NOT NULL,
    delete_time       TIMESTAMPTZ
);
CREATE UNIQUE INDEX tenants_live_name ON tenants (name) WHERE delete_time IS NULL;

-- Profiles: built-ins are written from code at start-up; platform ones by the API.
CREATE TABLE profiles (
    name         TEXT PRIMARY KEY,
    builtin      BOOLEAN NOT NULL,
    spec         JSONB NOT NULL,
    create_time  TIMESTAMPTZ NOT NULL
);

-- Clusters. `revision` is bumped in the same transaction as every change to
-- what the cluster should run (invariant 3's numbering).
CREATE TABLE clusters (
    id                 UUID PRIMARY KEY,
    name               TEXT NOT NULL UNIQUE,
    labels             JSONB NOT NULL,
    ingress_namespace  TEXT NOT NULL,
    revision           BIGINT NOT NULL DEFAULT 0,
    create_time        TIMESTAMPTZ NOT NULL
);

-- Environments: the desired state. `revision` is the cluster revision at which
-- this row last changed, so "changes since R" is an index range scan.
CREATE TABLE environments (
    id                        UUID PRIMARY KEY,
    tenant_id                 UUID NOT NULL REFERENCES tenants (id),
    name                      TEXT NOT NULL,
    cluster_id                UUID NOT NULL REFERENCES clusters (id),
    profile                   TEXT NOT NULL REFERENCES profiles (name),
    namespace                 TEXT NOT NULL,
    cpu_millis                BIGINT NOT NULL CHECK (cpu_millis > 0),
    memory_bytes              BIGINT NOT NULL CHECK (memory_bytes > 0),
    storage_bytes             BIGINT NOT NULL CHECK (storage_bytes > 0),
    pods                      BIGINT NOT NULL CHECK (pods > 0),
    services                  BIGINT NOT NULL CHECK (services > 0),
    persistent_volume_claims  BIGINT NOT NULL CHECK (persistent_volume_claims > 0),
    status                    TEXT NOT NULL CHECK (status IN ('pending','applying','ready','failed','deleting','deleted')),
    reason                    TEXT NOT NULL DEFAULT '',
    revision                  BIGINT NOT NULL,
    create_time               TIMESTAMPTZ NOT NULL,
    expire_time               TIMESTAMPTZ,
    delete_time               TIMESTAMPTZ
);
CREATE UNIQUE INDEX environments_live_name ON environments (tenant_id, name) WHERE status <> 'deleted';
CREATE UNIQUE INDEX environments_live_namespace ON environments (namespace) WHERE status <> 'deleted';
CREATE INDEX environments_cluster_revision ON environments (cluster_id, revision);
CREATE INDEX environments_expiry ON environments (expire_time) WHERE expire_time IS NOT NULL AND status <> 'deleted';

-- API tokens: only the SHA-256 of the secret's key part is stored.
CREATE TABLE api_tokens (
    id           TEXT PRIMARY KEY,
    key_hash     TEXT NOT NULL,
    role         TEXT NOT NULL CHECK (role IN ('platform-admin','tenant-owner','read-only')),
    tenant_id    UUID REFERENCES tenants (id),
    description  TEXT NOT NULL,
    created_by   TEXT NOT NULL,
    create_time  TIMESTAMPTZ NOT NULL,
    expire_time  TIMESTAMPTZ,
    revoke_time  TIMESTAMPTZ,
    CHECK (role <> 'tenant-owner' OR tenant_id IS NOT NULL),
    CHECK (role <> 'platform-admin' OR tenant_id IS NULL)
);

-- The audit log: append-only, hash-chained. The head row is the single point
-- every appender locks, which both serialises sequence numbers and records the
-- newest hash so deleting the newest events is detectable.
CREATE TABLE audit_events (
    sequence       BIGINT PRIMARY KEY,
    time           TIMESTAMPTZ NOT NULL,
    actor          TEXT NOT NULL,
    action         TEXT NOT NULL,
    target         TEXT NOT NULL,
    tenant         TEXT,
    request_id     TEXT NOT NULL,
    details        TEXT NOT NULL,
    previous_hash  TEXT NOT NULL,
    hash           TEXT NOT NULL
);
CREATE INDEX audit_events_tenant ON audit_events (tenant, sequence);

CREATE TABLE audit_chain_head (
    id        INTEGER PRIMARY KEY CHECK (id = 1),
    sequence  BIGINT NOT NULL,
    hash      TEXT NOT NULL
);
INSERT INTO audit_chain_head (id, sequence, hash)
VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000');

-- Append-only by construction: ordinary sessions cannot change or remove events.
-- (A superuser can still bypass triggers; the hash chain is what catches that.)
CREATE FUNCTION audit_events_refuse_change() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'audit_events is append-only (% refused)', TG_OP;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER audit_events_append_only
    BEFORE UPDATE OR DELETE ON audit_events
    FOR EACH ROW EXECUTE FUNCTION audit_events_refuse_change();
CREATE TRIGGER audit_events_no_truncate
    BEFORE TRUNCATE ON audit_events
    FOR EACH STATEMENT EXECUTE FUNCTION audit_events_refuse_change();
