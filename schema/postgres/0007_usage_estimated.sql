-- Whether a usage_log row's tokens are the sidecar's estimate (proxy/estimate.py) rather
-- than what upstream reported: a call cut short after it reached upstream (the caller hung
-- up, a stream broke before its last event) reports no usage, yet upstream bills the prompt
-- it read and the output it generated. Such a call is charged and recorded with an estimate
-- so that hanging up early does not make a request free; `usage` counts those rows apart.
-- Rows written before this migration hold what upstream reported: false.
ALTER TABLE usage_log ADD COLUMN estimated BOOLEAN NOT NULL DEFAULT false;
