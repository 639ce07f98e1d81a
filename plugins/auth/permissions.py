"""Actions, the operation -> action mapping and the role -> actions table.

Every operation of the Mistral API maps to exactly one *action*; a role is the set of actions
it may perform. The families the sidecar tracks ownership for (agents, conversations, files,
batch jobs) and inference get their own actions; the rest of the API (libraries, connectors,
observability, workflows, prompts, skills, voices, RAG) maps to ``read_<family>`` for GET and
``write_<family>`` otherwise. Those resources are shared by the whole upstream account and the
sidecar does not track who owns them, so by default only ``admin`` may touch them; grant them
to other roles in YAML if that sharing is acceptable. ``*`` in a role grants every action.

Requests outside the spec map to ``unmapped``, which no role table grants, ``*`` included:
the sidecar cannot tell what such a request does, so only the roles named in
``auth.unmapped_roles`` may send one. A ``HEAD`` request is classified (by the core) as the
``GET`` operation of its path and needs exactly that operation's action.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from proxy.operations import Operation

ALL = "*"
UNMAPPED = "unmapped"
#: Not an operation: may read, append to, restart and delete every conversation, file and
#: batch job of its organisation, and see resources created outside the sidecar.
ORG_ADMIN = "org_admin"
#: Not operations either: what the admin API (``plugins.admin``) lets a role do, each within
#: its own organisation.
#: Create, list, read, revoke and rotate the organisation's keys; list roles.
ADMIN_KEYS = "admin:keys"
#: Read the organisation's usage (requests, tokens, cost).
ADMIN_USAGE = "admin:usage"
#: List and read the organisation's agents and conversations; adopt unowned ones.
ADMIN_RECORDS = "admin:records"
#: Read the live state of this process (breaker, limiter, spool, key pool).
ADMIN_STATE = "admin:state"
ADMIN_ACTIONS = (ADMIN_KEYS, ADMIN_USAGE, ADMIN_RECORDS, ADMIN_STATE)

#: Actions named after the operation they stand for (name without the ``_stream`` suffix).
_BY_NAME: dict[str, str] = {
    "agents.list": "list_agents",
    "agents.list_pages": "list_agents",
    "agents.get": "read_agent",
    "agents.list_versions": "read_agent",
    "agents.get_version": "read_agent",
    "agents.list_version_aliases": "read_agent",
    "agents.create": "create_agent",
    "agents.update": "update_agent",
    "agents.update_version": "update_agent",
    "agents.create_or_update_alias": "update_agent",
    "agents.delete_alias": "update_agent",
    "agents.delete": "delete_agent",
    "agents.complete": "use_agent",
    "conversations.list": "list_conversations",
    "conversations.get": "read_conversation",
    "conversations.history": "read_conversation",
    "conversations.messages": "read_conversation",
    "conversations.start": "start_conversation",
    "conversations.append": "append_conversation",
    "conversations.restart": "restart_conversation",
    "conversations.delete": "archive_conversation",
    "chat.complete": "use_model",
    "fim.complete": "use_model",
    "embeddings.create": "use_model",
    "classifiers.classify": "use_model",
    "classifiers.classify_chat": "use_model",
    "classifiers.moderate": "use_model",
    "classifiers.moderate_chat": "use_model",
    "ocr.process": "use_model",
    "audio.speech.complete": "use_model",
    "audio.transcriptions.complete": "use_model",
    "models.list": "list_models",
    "models.get": "read_model",
    "models.delete": "manage_models",
    "models.update": "manage_models",
    "models.archive": "manage_models",
    "models.unarchive": "manage_models",
    "files.list": "list_files",
    "files.get": "read_file",
    "files.download": "read_file",
    "files.get_signed_url": "read_file",
    "files.upload": "upload_file",
    "files.delete": "delete_file",
    "batch.jobs.list": "list_batch_jobs",
    "batch.jobs.get": "read_batch_job",
    "batch.jobs.create": "create_batch_job",
    "batch.jobs.cancel": "cancel_batch_job",
    "batch.jobs.delete": "cancel_batch_job",
}

#: Name prefix -> family for the generic read/write actions (longest prefix wins).
_FAMILIES: dict[str, str] = {
    "admin.": "account",
    "users.": "account",
    "audio.voices.": "voices",
    "connectors.": "connectors",
    "libraries.": "libraries",
    "observability.": "observability",
    "rag.": "rag",
    "workflows.": "workflows",
    "prompts.": "prompts",
    "skills.": "skills",
}

SPECIFIC_ACTIONS: tuple[str, ...] = tuple(dict.fromkeys(_BY_NAME.values()))
GENERIC_ACTIONS: tuple[str, ...] = tuple(
    f"{verb}_{family}" for family in dict.fromkeys(_FAMILIES.values())
    for verb in ("read", "write"))
#: Every action a role table may name (``unmapped`` is granted by ``auth.unmapped_roles``).
ACTIONS: frozenset[str] = frozenset((*SPECIFIC_ACTIONS, *GENERIC_ACTIONS, ORG_ADMIN,
                                     *ADMIN_ACTIONS))

_READ = ["list_agents", "read_agent", "list_conversations", "read_conversation",
         "list_models", "read_model", "list_files", "read_file", "list_batch_jobs",
         "read_batch_job"]
#: The default role table (the deployment guide's, extended to the whole API).
DEFAULT_ROLES: dict[str, list[str]] = {
    "admin": [ALL],
    "user": [*_READ, "use_model", "use_agent", "start_conversation", "append_conversation",
             "restart_conversation", "archive_conversation", "upload_file", "delete_file",
             "create_batch_job", "cancel_batch_job"],
    "read_only": list(_READ),
}


def base_name(op: Operation) -> str:
    """The operation's name without the ``_stream`` suffix of its streaming twin."""
    return op.name.removesuffix("_stream") if op.stream_variant else op.name


def action_for(op: Operation | None) -> str:
    """The action an operation performs; ``unmapped`` for requests outside the spec."""
    if op is None:
        return UNMAPPED
    name = base_name(op)
    specific = _BY_NAME.get(name)
    if specific is not None:
        return specific
    for prefix in sorted(_FAMILIES, key=len, reverse=True):
        if name.startswith(prefix):
            verb = "read" if op.method == "GET" else "write"
            return f"{verb}_{_FAMILIES[prefix]}"
    return UNMAPPED


def action_for_request(op: Operation | None, method: str) -> str:
    """The action a request performs: its operation's, where the request's method is the
    operation's (or ``HEAD`` on a ``GET`` operation); ``unmapped`` otherwise."""
    if op is None or (method != op.method and not (method == "HEAD" and op.method == "GET")):
        return UNMAPPED
    return action_for(op)


class RoleTable:
    """Which role may perform which action."""

    def __init__(self, roles: Mapping[str, list[str]],
                 unmapped_roles: Iterable[str] = ()) -> None:
        self._grants: dict[str, frozenset[str]] = {
            role: frozenset(actions) - {UNMAPPED} for role, actions in roles.items()}
        self._unmapped = frozenset(unmapped_roles)

    @property
    def roles(self) -> list[str]:
        """Every role name, in table order."""
        return list(self._grants)

    def allows(self, role: str, action: str) -> bool:
        """Whether ``role`` may perform ``action`` (unknown roles may do nothing)."""
        grants = self._grants.get(role)
        if grants is None:
            return False
        if action == UNMAPPED:
            return role in self._unmapped
        return ALL in grants or action in grants


def check_roles(value: Any) -> str | None:
    """Validate a role table from YAML: ``{role: [action, ...]}`` with known actions."""
    if not isinstance(value, Mapping) or not value:
        return "must map role names to lists of actions"
    for role, actions in value.items():
        if not isinstance(role, str) or not role:
            return f"role names must be non-empty strings, got {role!r}"
        if not isinstance(actions, list) or not all(isinstance(a, str) for a in actions):
            return f"role {role!r}: expected a list of action names"
        if UNMAPPED in actions:
            return (f"role {role!r}: requests outside the spec ({UNMAPPED}) are allowed by "
                    "auth.unmapped_roles (SIDECAR_AUTH_UNMAPPED_ROLES), not in auth.roles")
        unknown = sorted(set(actions) - ACTIONS - {ALL})
        if unknown:
            return (f"role {role!r}: unknown action(s) {', '.join(unknown)} "
                    f"(known: {', '.join(sorted(ACTIONS))}, or *)")
    return None
