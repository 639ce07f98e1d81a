"""One audit line per change made through the admin API: who, what, when.

Lines go to the logger ``mistral_sidecar.audit`` at INFO, whatever ``LOG_LEVEL`` says (the
plugin lowers that logger's level while it runs, as the logs plugin does for access lines),
with the fields as attributes of the record: the logs plugin writes each as a JSON key.
They never carry a secret: a key is named by its id.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from proxy.context import Identity

AUDIT_LOGGER = logging.getLogger("mistral_sidecar.audit")

KEY_CREATE = "key.create"
KEY_REVOKE = "key.revoke"
KEY_ROTATE = "key.rotate"
AGENT_ADOPT = "agent.adopt"
CONVERSATION_ADOPT = "conversation.adopt"


def audit(actor: Identity, action: str, target: str, **detail: Any) -> None:
    """Log that ``actor`` did ``action`` to ``target`` (a key or resource id), now;
    ``detail`` (JSON-safe, no secrets) says more (the role of a new key, the new owner)."""
    AUDIT_LOGGER.info(
        "%s %s by key %s (%s, org %s)", action, target, actor.key_id, actor.owner, actor.org,
        extra={"actor_key_id": actor.key_id, "actor_owner": actor.owner, "org": actor.org,
               "action": action, "target": target, "at": _now(),
               "detail": detail})


def _now() -> str:
    """Now as ``2025-01-31T12:00:00.123Z``."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
