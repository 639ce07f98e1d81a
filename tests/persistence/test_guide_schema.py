"""The deployment guide's tables, by the guide's names: a query written against the guide's DDL
runs unchanged against the sidecar's database and reads what the sidecar recorded."""

from __future__ import annotations

import re
import sys
from pathlib import Path

from tests.conftest import REPO, SidecarFactory, wait_for
from tests.persistence.persistence_helpers import MODEL, StoreReader, persist_env

#: Every column of the guide's three tables (its "Database Schema" DDL), as the guide names
#: them. Kept here, since tests never read ../shared; `.ci/check-spec` runs this module
#: against the guide to keep the list in step.
GUIDE_COLUMNS: dict[str, tuple[str, ...]] = {
    "agents": ("id", "name", "description", "model", "instructions", "version", "tools",
               "completion_args", "owner_id", "status", "created_at", "updated_at"),
    "conversations": ("id", "agent_id", "owner_id", "name", "description", "status",
                      "metadata", "created_at", "updated_at"),
    "conversation_entries": ("id", "conversation_id", "type", "role", "content",
                             "content_json", "token_count", "created_at", "completed_at",
                             "agent_id", "model", "tool_name", "tool_call_id",
                             "parent_entry_id", "metadata"),
}
def _guide_ddl_columns(text: str) -> dict[str, tuple[str, ...]]:
    tables: dict[str, tuple[str, ...]] = {}
    for name, body in re.findall(r"CREATE TABLE (\w+) \((.*?)\n\);", text, re.S):
        columns = []
        for line in body.strip().splitlines():
            word = line.strip().split(" ", 1)[0]
            if word and word.upper() not in ("UNIQUE(OWNER_ID,", "FOREIGN", "PRIMARY"):
                columns.append(word)
        tables[name] = tuple(c for c in columns if not c.upper().startswith("UNIQUE"))
    return tables


async def test_queries_written_against_the_guide_run_unchanged(
    start_sidecar: SidecarFactory, store_env: dict[str, str]
) -> None:
    sidecar = await start_sidecar(**persist_env(store_env))
    sdk = sidecar.sdk()
    started = await sdk.beta.conversations.start_async(model=MODEL, inputs="hello there")
    db = StoreReader(sidecar.env)
    conversation_id = started.conversation_id
    await wait_for(lambda: len(db.entries(conversation_id)) == 2)
    for table, columns in GUIDE_COLUMNS.items():
        # Raises on a missing column.
        db.rows(f"SELECT {', '.join(columns)} FROM {table}", json_columns=frozenset())
    entries = db.rows(
        "SELECT type, role, content, token_count FROM conversation_entries "
        "WHERE conversation_id = ? ORDER BY created_at", (conversation_id,),
        json_columns=frozenset())
    assert [(e["type"], e["role"], e["content"]) for e in entries] == [
        ("message.input", "user", "hello there"),
        ("message.output", "assistant", started.outputs[0].content),  # type: ignore[union-attr]
    ]
    usage = started.usage
    assert sum(e["token_count"] for e in entries) == usage.total_tokens


def test_the_mapping_is_documented_once() -> None:
    migrations = sorted(Path(REPO / "schema" / "postgres").glob("*guide*.sql"))
    assert len(migrations) == 1
    text = migrations[0].read_text()
    for column in ("content", "token_count", "metadata"):
        assert f"conversation_entries.{column}" in text


if __name__ == "__main__":
    # .ci/check-spec: python -m tests.persistence.test_guide_schema GUIDE
    found = _guide_ddl_columns(Path(sys.argv[1]).read_text())
    if found != GUIDE_COLUMNS:
        sys.exit(f"check-spec: FAIL: the guide's columns changed: {found}")
    print("check-spec: OK: the guide's tables match tests/persistence/test_guide_schema.py")
