-- SQLite twin of schema/postgres/0007_usage_estimated.sql (BOOLEAN is an integer 0/1 here).
-- Whether a usage_log row's tokens are the sidecar's estimate of a call cut short (the caller
-- hung up, a stream broke before its last event) rather than what upstream reported; rows
-- written before this migration: false.
ALTER TABLE usage_log ADD COLUMN estimated BOOLEAN NOT NULL DEFAULT false;
