-- Spending caps (plugins/budgets): what each key, owner or organisation may spend per UTC
-- day or month, on every model or on one. `mistral-sidecar budgets set/list/clear` writes
-- this table; every replica re-reads it every `budgets.refresh_seconds`.
--
-- * scope: key | owner | org; subject: the key id, owner or organisation it names.
-- * owner_org: for an owner budget, the organisation of that owner; '' for the owner name in
--   any organisation, and for the other scopes. '' rather than NULL (and model likewise) so
--   that the UNIQUE constraint, and `budgets set` replacing a budget, see one budget per
--   subject, model and period.
-- * model: '' for every model, else the model it applies to (matched through the price
--   table's aliases).
-- * limit_nanos: the cap in billionths of `currency`, exact, as usage_log.cost_nanos counts
--   costs.
-- * hard: over the cap, requests are refused (429 budget_exceeded); soft budgets only warn.
-- * created_at: Unix epoch seconds.
CREATE TABLE budgets (
    id          TEXT PRIMARY KEY,
    scope       TEXT NOT NULL CHECK (scope IN ('key', 'owner', 'org')),
    subject     TEXT NOT NULL,
    owner_org   TEXT NOT NULL DEFAULT '',
    model       TEXT NOT NULL DEFAULT '',
    period      TEXT NOT NULL CHECK (period IN ('day', 'month')),
    limit_nanos BIGINT NOT NULL CHECK (limit_nanos > 0),
    currency    TEXT NOT NULL,
    hard        BOOLEAN NOT NULL,
    created_at  DOUBLE PRECISION NOT NULL,
    UNIQUE (scope, subject, owner_org, model, period)
);

-- What each budget spent per period, when no Redis is configured (with Redis the counters
-- live there). period_start: '2025-12-07' for a day, '2025-12' for a month. Replicas add
-- their charges with one upsert each (spent_nanos = spent_nanos + excluded.spent_nanos) and
-- read the current periods back. No foreign key: a charge written as its budget is cleared
-- must not fail the batch it is in; `budgets clear` deletes a budget's rows itself.
CREATE TABLE budget_spend (
    budget_id    TEXT NOT NULL,
    period_start TEXT NOT NULL,
    spent_nanos  BIGINT NOT NULL,
    PRIMARY KEY (budget_id, period_start)
);
