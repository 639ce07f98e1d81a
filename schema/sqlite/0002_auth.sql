-- Authentication and ownership (plugins/auth). Times are Unix epoch seconds.

-- Sidecar API keys. Only a hash of each key is stored; the key itself is shown once.
CREATE TABLE auth_keys (
    key_id      TEXT PRIMARY KEY,
    secret_hash TEXT NOT NULL,
    owner       TEXT NOT NULL,
    org         TEXT NOT NULL DEFAULT 'default',
    role        TEXT NOT NULL,
    name        TEXT,
    created_at  REAL NOT NULL,
    expires_at  REAL,
    revoked_at  REAL,
    rotated_at  REAL
);

CREATE INDEX auth_keys_owner ON auth_keys (org, owner);

-- Who owns each upstream resource created through the sidecar (or adopted later).
-- kind: agent | conversation | file | batch_job.
CREATE TABLE auth_ownership (
    kind        TEXT NOT NULL,
    resource_id TEXT NOT NULL,
    org         TEXT NOT NULL,
    owner       TEXT NOT NULL,
    key_id      TEXT,
    created_at  REAL NOT NULL,
    PRIMARY KEY (kind, resource_id)
);

CREATE INDEX auth_ownership_org ON auth_ownership (kind, org, owner);
