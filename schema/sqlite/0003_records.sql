-- Persistence (plugins/persistence): the deployment guide's agents, conversations and
-- conversation_entries, plus usage_log. Rows are written only by the plugin's background
-- writer, always as idempotent upserts keyed by id, so replaying the spool never duplicates.
-- SQLite twin of schema/postgres/0003_records.sql (same tables, columns and indexes). Times
-- are ISO-8601 UTC text ('2025-01-31T12:00:00.000000Z', which sorts chronologically), JSON
-- columns are TEXT holding JSON, booleans are 0/1.
--
-- Where this departs from the guide, and why:
-- * agents: only id, owner_id, status and the timestamps are NOT NULL. An agent created
--   outside the sidecar and deleted (or updated) through it is still recorded, with what the
--   sidecar saw of it.
-- * conversations.agent_id is NULL-able and has no foreign key: a conversation may be started
--   with a `model` and no agent, and the agent of an agent conversation may have been created
--   outside the sidecar (no row in agents). conversations.model is NULL for agent
--   conversations unless the response names the model that answered.
-- * restarted_from_conversation_id / restarted_from_entry_id have no foreign keys: the source
--   conversation may predate the sidecar or have been purged by retention.
-- * conversation_entries.seq orders entries within a conversation (Mistral's created_at comes
--   from its clock, input entries' from the sidecar's); conversation_entries.request_id ties
--   an entry to the request that produced it. parent_entry_id has no foreign key: a restart's
--   first entry points at the entry it restarts from, which may be an upstream-only id.
-- * No index on conversations.updated_at: every turn updates it, and an index on it would
--   turn those updates from in-place (HOT) into ones that touch every index; the retention
--   purge that filters on it runs rarely.
-- * conversation_entries.conversation_id has no foreign key: checking it costs more than the
--   insert itself at volume, and the writer already upserts the conversation row before its
--   entries in the same transaction; retention deletes entries explicitly. Without it, an
--   entry is kept even if its conversation row could not be written.
-- * usage_log is keyed by a sidecar-generated id, not by request_id: X-Request-ID may come from
--   the caller and is not guaranteed unique. request_id is kept (indexed) for correlation.

CREATE TABLE agents (
    id              TEXT PRIMARY KEY,
    name            TEXT,
    description     TEXT,
    model           TEXT,
    instructions    TEXT,
    version         INTEGER,
    tools           TEXT,
    completion_args TEXT,
    owner_id        TEXT NOT NULL,
    status          TEXT NOT NULL DEFAULT 'active',
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL
);

CREATE INDEX agents_owner_id_idx ON agents (owner_id);

CREATE TABLE conversations (
    id                             TEXT PRIMARY KEY,
    agent_id                       TEXT,
    model                          TEXT,
    owner_id                       TEXT NOT NULL,
    name                           TEXT,
    description                    TEXT,
    metadata                       TEXT,
    status                         TEXT NOT NULL DEFAULT 'active',
    created_at                     TEXT NOT NULL,
    updated_at                     TEXT NOT NULL,
    restarted_from_conversation_id TEXT,
    restarted_from_entry_id        TEXT
);

CREATE INDEX conversations_owner_id_idx ON conversations (owner_id);
CREATE INDEX conversations_agent_id_idx ON conversations (agent_id);

CREATE TABLE conversation_entries (
    id                TEXT PRIMARY KEY,
    conversation_id   TEXT NOT NULL,
    seq               INTEGER NOT NULL,
    type              TEXT NOT NULL,
    role              TEXT,
    content_text      TEXT,
    content_json      TEXT,
    prompt_tokens     INTEGER NOT NULL DEFAULT 0,
    completion_tokens INTEGER NOT NULL DEFAULT 0,
    total_tokens      INTEGER NOT NULL DEFAULT 0,
    model             TEXT,
    agent_id          TEXT,
    tool_name         TEXT,
    tool_call_id      TEXT,
    parent_entry_id   TEXT,
    request_id        TEXT,
    created_at        TEXT NOT NULL,
    completed_at      TEXT
);

CREATE INDEX conversation_entries_conversation_idx
    ON conversation_entries (conversation_id, created_at);
CREATE INDEX conversation_entries_seq_idx ON conversation_entries (conversation_id, seq);
CREATE INDEX conversation_entries_agent_id_idx ON conversation_entries (agent_id);

CREATE TABLE usage_log (
    id                TEXT PRIMARY KEY,
    request_id        TEXT NOT NULL,
    owner_id          TEXT NOT NULL,
    operation         TEXT NOT NULL,
    model             TEXT,
    agent_id          TEXT,
    conversation_id   TEXT,
    status            INTEGER NOT NULL,
    streamed          INTEGER NOT NULL DEFAULT 0,
    prompt_tokens     INTEGER NOT NULL DEFAULT 0,
    completion_tokens INTEGER NOT NULL DEFAULT 0,
    total_tokens      INTEGER NOT NULL DEFAULT 0,
    latency_ms        REAL,
    created_at        TEXT NOT NULL,
    content           TEXT
);

CREATE INDEX usage_log_created_at_idx ON usage_log (created_at);
CREATE INDEX usage_log_owner_id_idx ON usage_log (owner_id, created_at);
CREATE INDEX usage_log_request_id_idx ON usage_log (request_id);
