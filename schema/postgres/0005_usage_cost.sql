-- Who paid and what it cost, per usage_log row (plugins/prices prices each request; the
-- persistence plugin records it), so `mistral-sidecar usage --by owner,key,org,model,day`
-- and budgets can sum costs per key and organisation.
--
-- * key_id, org: the caller's sidecar key and organisation; NULL without authentication
--   (and for rows written before this migration).
-- * cost_nanos: what the request cost, in billionths of `currency` (an integer, exact: each
--   token priced per million at up to three decimals costs a whole number of billionths, so
--   sums over millions of small requests do not drift as they would in millionths). NULL
--   when the cost is unknown: no price for the model, no pricing plugin, or written before
--   this migration. A row with no tokens costs nothing whatever its price.
-- * currency: the ISO 4217 code of cost_nanos (NULL when cost_nanos is).
-- No new indexes: every model call writes a row here, and reports read by created_at.

ALTER TABLE usage_log ADD COLUMN key_id TEXT;
ALTER TABLE usage_log ADD COLUMN org TEXT;
ALTER TABLE usage_log ADD COLUMN cost_nanos BIGINT;
ALTER TABLE usage_log ADD COLUMN currency TEXT;
