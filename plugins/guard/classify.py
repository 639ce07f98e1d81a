"""Which request-body strings a model reads: the decisions the field generator applies to the spec.

:mod:`plugins.guard.gen_fields` walks the request schema of every operation in the OpenAPI
spec and writes :mod:`plugins.guard.fields_table`. These tables decide what it writes:

- :data:`PROMPT_OPERATIONS`: operations whose request text a generative model reads, as
  conversation, instructions or tool definitions. Every free-text string of their bodies must
  be classified below, or the generator stops: a new field is a decision, not a default;
- :data:`EMBEDDED`: operations that carry whole request bodies of other operations (the inline
  requests of a batch job), read with the fields of the operation they name;
- :data:`OTHER_OPERATIONS`: operations outside that set whose bodies nevertheless have a field
  named like prompt text (:data:`SUSPECT`), with the reason the guard leaves them alone. A new
  operation with such a field stops the generator until it is put in one list or the other;
- :data:`TEXT`, :data:`TREE` and :data:`NOT_TEXT` classify the fields of prompt operations by
  property name (the last name on the path), :data:`PATHS` overrides that for a path ending,
  and :data:`OPAQUE_SUBTREES` covers whole objects that are configuration, not text;
- :data:`UNDECLARED`: fields the spec does not declare on an operation but which the sidecar
  would forward unchanged and upstream may read.

Strings with an ``enum``, a ``const`` or a format such as ``uuid``, ``uri``, ``date-time``,
``byte`` or ``binary`` are never prompt text and need no decision.
"""

from __future__ import annotations

import re

__all__ = ["EMBEDDED", "NOT_TEXT", "OPAQUE_SUBTREES", "OTHER_OPERATIONS", "PATHS",
           "PROMPT_OPERATIONS", "SUSPECT", "TEXT", "TREE", "UNDECLARED"]

_CONVERSATIONS = ("conversations.start", "conversations.append", "conversations.restart")

#: Operations whose bodies a generative model reads (``*_stream`` twins included).
PROMPT_OPERATIONS: frozenset[str] = frozenset({
    "chat.complete", "agents.complete", "fim.complete",
    *_CONVERSATIONS, *(name + "_stream" for name in _CONVERSATIONS),
    "agents.create", "agents.update",
    # Prompts of their own: OCR's annotation prompt, judges' instructions, a connector's
    # system prompt, stored prompt templates and agent skills.
    "ocr.process",
    "observability.judges.create", "observability.judges.update",
    "observability.judges.judge_conversation",
    "observability.chat_completion_events.judge", "observability.datasets.records.judge",
    "connectors.create", "connectors.update",
    "prompts.create", "prompts.update", "prompts.create_version",
    "skills.create", "skills.update", "skills.create_version",
})

#: Operation -> (path of the embedded bodies, body field naming their endpoint).
EMBEDDED: dict[str, tuple[str, str]] = {
    "batch.jobs.create": ("requests[].body", "endpoint"),
}

#: Property names that look like prompt text wherever they appear.
SUSPECT = re.compile(
    r"^(?:messages?|inputs?|instructions?|prompts?|system_prompt|\w+_prompt|content|text|"
    r"suffix|arguments|query)$")

#: Operations with a :data:`SUSPECT` field that the guard does not read, and why.
OTHER_OPERATIONS: dict[str, str] = {
    "embeddings.create": "embedded as vectors, never followed as instructions",
    "classifiers.moderate": "scored by a classifier, never followed as instructions",
    "classifiers.moderate_chat": "scored by a classifier, never followed as instructions",
    "classifiers.classify": "scored by a classifier, never followed as instructions",
    "classifiers.classify_chat": "scored by a classifier, never followed as instructions",
    "audio.speech.complete": "read aloud by a speech model, never followed as instructions",
    "connectors.call_tool": "arguments for a tool the caller calls directly; no model runs",
    "prompts.update_version_metadata": "version notes and aliases only",
    "skills.update_version_metadata": "version notes and aliases only",
    "workflows.executions.signal": "input of a workflow step the caller's own code defines",
    "workflows.executions.query": "input of a workflow query the caller's own code defines",
    "workflows.executions.update": "input of a workflow update the caller's own code defines",
    "workflows.schedules.schedule": "input of a scheduled workflow the caller's code defines",
    "workflows.schedules.update": "input of a scheduled workflow the caller's code defines",
    "workflows.execute": "input of a workflow the caller's own code defines",
    "workflows.execute_registration": "input of a workflow the caller's own code defines",
    "rag.search_indexes.register_deployment": "a search index deployment's URLs, not text",
}

#: Property names whose string values are prompt text.
TEXT: dict[str, str] = {
    "content": "message and chunk content; a prompt template's body; a predicted output",
    "text": "text and thinking chunks",
    "name": "names of messages, functions, tools, agents, conversations, judges, connectors",
    "description": "descriptions of tools, schemas, agents, conversations, judges, ...",
    "title": "titles of tool references, prompts and connectors",
    "instructions": "agent, conversation and judge instructions",
    "prompt": "FIM prompt",
    "suffix": "FIM suffix",
    "system_prompt": "a connector's system prompt",
    "document_annotation_prompt": "OCR annotation prompt",
    "result": "function results",
    "inputs": "conversation inputs as one string",
    "document_name": "document chunk names",
    "file_name": "file chunk names",
    "tool": "tool reference chunks: the tool's name",
    "next_agent_name": "handoff entries: agent names",
    "previous_agent_name": "handoff entries: agent names",
    "max_description": "judge output scale",
    "min_description": "judge output scale",
    "body": "a skill's instructions",
    "textContent": "a skill's text assets",
}

#: Property names whose whole value (any JSON: strings inside objects and lists, keys
#: included) is prompt text.
TREE: dict[str, str] = {
    "arguments": "function-call arguments, a JSON string or object",
    "parameters": "a tool's JSON schema: property names, descriptions, enums",
    "schema": "a response format's JSON schema",
    "metadata": "caller metadata kept with agents and conversations (an agent's is in "
                "issue #18's list); cheap to scan",
    "info": "conversation entry info",
    "messages": "judged conversations (free-form messages)",
    "properties": "judged conversation properties",
}

#: Property names that are not prompt text, and why.
NOT_TEXT: dict[str, str] = {
    "model": "a model name",
    "model_name": "a model name",
    "id": "an id",
    "tool_call_id": "an id",
    "agent_id": "an id",
    "next_agent_id": "an id",
    "previous_agent_id": "an id",
    "agent_version": "a version",
    "from_entry_id": "an id",
    "file_id": "an id",
    "connector_id": "an id",
    "library_ids": "ids",
    "reference_ids": "ids",
    "handoffs": "agent ids",
    "signature": "an opaque thinking signature",
    "image_url": "a URL, fetched rather than read",
    "document_url": "a URL, fetched rather than read",
    "url": "a URL",
    "favicon": "a URL",
    "icon_url": "a URL",
    "input_audio": "base64 audio",
    "stop": "stop sequences: cut the output, never read",
    "prompt_cache_key": "a cache key",
    "exclude": "tool names",
    "include": "tool names",
    "requires_confirmation": "tool names",
    "file_type": "a media type",
    "version_message": "a version note for people, never sent to a model",
    "notes": "version notes for people, never sent to a model",
    "aliases": "version aliases",
    "tools": "tool names a judge may use",
    "pages": "page numbers",
    "value": "secret values (authorization, headers); judge scale values are in PATHS",
}

#: Path endings (``a.b[].c``) that override the name-based decision: True for prompt text.
PATHS: dict[str, bool] = {
    "options[].value": True,  # a judge's output labels are part of its prompt
}

#: Objects that are configuration, not text: nothing below them is scanned.
OPAQUE_SUBTREES: dict[str, str] = {
    "authorization": "credentials for a tool",
    "guardrails": "moderation configuration",
    "oauth2_server_metadata": "OAuth server metadata: URLs and protocol values",
    "oauth2_metadata_secrets": "OAuth client credentials",
    "auth_data": "OAuth client credentials",
    "global_headers": "HTTP headers of a connector",
    "headers": "HTTP headers of a connector",
}

#: Operation -> fields the spec does not declare there: (path, kind, reason).
UNDECLARED: dict[str, tuple[tuple[str, str, str], ...]] = {
    name: (("instructions", "text",
            "declared only on conversations.start; an append or restart that carries it is "
            "forwarded unchanged, so it is scanned in case upstream reads it"),)
    for name in ("conversations.append", "conversations.append_stream",
                 "conversations.restart", "conversations.restart_stream")
}
