-- The deployment guide's conversation_entries columns under the guide's names, so queries and
-- dashboards written against the guide run unchanged. This is where our tables and the
-- guide's meet (agents and conversations already carry every guide column):
--
--   guide column                  ours
--   conversation_entries.content       the entry's text (was content_text); the whole entry
--                                      as JSON stays in content_json
--   conversation_entries.token_count   tokens of the entry = total_tokens, next to its split
--                                      into prompt_tokens and completion_tokens
--   conversation_entries.metadata      kept for the guide; the sidecar writes NULL
--
-- Our additions beside the guide's columns: seq, request_id, prompt/completion/total tokens
-- (entries), model and the restarted_from_* columns (conversations); see 0003_records.sql.

ALTER TABLE conversation_entries RENAME COLUMN content_text TO content;
ALTER TABLE conversation_entries ADD COLUMN token_count INTEGER;
ALTER TABLE conversation_entries ADD COLUMN metadata JSONB;
UPDATE conversation_entries SET token_count = total_tokens;
