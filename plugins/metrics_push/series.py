"""The series the plugin sends, and what one finished request adds to them.

Names follow the deployment guide's ``MetricsCollector`` (``mistral.conversation`` tagged
``agent_id``) and Datadog's dotted style; every sink sends the same series. Tags have bounded
values only: operations are the API spec's names, and values that come from upstream or
callers (models, organisations, owners, agents, error codes) pass through
:class:`plugins.metrics.BoundedValues`, which makes them safe and keeps their first distinct
values, the rest becoming ``other``. Never ids of requests or conversations, never secrets.
"""

from __future__ import annotations

from typing import Any

from plugins.metrics import BoundedValues
from plugins.metrics_push.aggregate import Aggregate, Kind, Metric, Tags
from proxy.context import Outcome, RequestContext

__all__ = ["CATALOG", "RequestSeries"]

REQUESTS = Metric("mistral.api.requests", Kind.COUNT, "Count",
                  "Requests that ended, however they ended.")
ERRORS = Metric("mistral.api.errors", Kind.COUNT, "Count",
                "Requests answered with a 4xx or 5xx status (upstream's or the sidecar's own), "
                "or whose response was cut short.")
LATENCY = Metric("mistral.api.latency", Kind.DISTRIBUTION, "Seconds",
                 "Time from a request's arrival to the end of its response.")
PROMPT_TOKENS = Metric("mistral.tokens.prompt", Kind.COUNT, "Count",
                       "Prompt tokens upstream reported.")
COMPLETION_TOKENS = Metric("mistral.tokens.completion", Kind.COUNT, "Count",
                           "Completion tokens upstream reported.")
TOTAL_TOKENS = Metric("mistral.tokens.total", Kind.COUNT, "Count",
                      "Total tokens upstream reported.")
COST = Metric("mistral.cost", Kind.COUNT, "None",
              "What the requests cost (prices plugin), in the currency of the tag.")
CONVERSATION = Metric("mistral.conversation", Kind.GAUGE, "Count",
                      "Entries in a conversation answer, by agent: the outputs of a run, or "
                      "the whole history of a history read (the guide's entry_count).")
CONVERSATION_ENTRIES = Metric("mistral.conversation.entries", Kind.COUNT, "Count",
                              "Entries conversation runs produced, by agent.")

#: Every metric, in the order the docs list them.
CATALOG = (REQUESTS, ERRORS, LATENCY, PROMPT_TOKENS, COMPLETION_TOKENS, TOTAL_TOKENS, COST,
           CONVERSATION, CONVERSATION_ENTRIES)

_RUNS = frozenset({"conversations.start", "conversations.start_stream",
                   "conversations.append", "conversations.append_stream",
                   "conversations.restart", "conversations.restart_stream"})
_HISTORY = "conversations.history"
#: Tag value where there is nothing to tell (no status, no agent, no organisation).
NONE = "none"


class RequestSeries:
    """Adds what each finished request says to an :class:`Aggregate`."""

    def __init__(self, aggregate: Aggregate, *, owner_tag: bool) -> None:
        """``owner_tag`` also tags tokens and cost with the caller's owner."""
        self.aggregate = aggregate
        self.owner_tag = owner_tag
        self.models = BoundedValues(100)
        self.orgs = BoundedValues(100)
        self.owners = BoundedValues(1000)
        self.agents = BoundedValues(200)
        self.error_codes = BoundedValues(50)
        self.currencies = BoundedValues(10)

    def record(self, ctx: RequestContext) -> None:
        """Add the request's points (called once per request, from ``on_end``)."""
        add = self.aggregate.add
        status = ctx.response_status
        identity = ctx.identity
        model = self._model(ctx)
        org = self.orgs(identity.org) if identity is not None else NONE
        tags: Tags = (("operation", ctx.operation_name), ("model", model),
                      ("status_class", f"{status // 100}xx" if status else NONE),
                      ("org", org))
        add(REQUESTS, tags, 1)
        timing = ctx.timing
        # The core sets ``timing.finished`` before it calls on_end.
        add(LATENCY, tags, (timing.finished or timing.started) - timing.started)
        if (status is not None and status >= 400) or ctx.outcome is Outcome.BROKEN:
            code = ctx.error.code if ctx.error is not None else f"upstream_{status}"
            add(ERRORS, (*tags, ("error_code", self.error_codes(code))), 1)
        usage = ctx.usage
        if usage is not None:
            usage_tags: Tags = (("model", model), ("org", org))
            if self.owner_tag:
                owner = identity.owner if identity is not None else "anonymous"
                usage_tags = (*usage_tags, ("owner", self.owners(owner)))
            add(PROMPT_TOKENS, usage_tags, max(0, usage.prompt_tokens))
            add(COMPLETION_TOKENS, usage_tags, max(0, usage.completion_tokens))
            add(TOTAL_TOKENS, usage_tags, max(0, usage.total_tokens))
            if usage.cost is not None:
                add(COST, (*usage_tags, ("currency", self.currencies(usage.currency))),
                    float(usage.cost))
        if status is not None and 200 <= status < 300:
            operation = ctx.operation_name
            if operation in _RUNS:
                self._entries(ctx, operation, "outputs", produced=True)
            elif operation == _HISTORY:
                self._entries(ctx, operation, "entries", produced=False)

    def _entries(self, ctx: RequestContext, operation: str, field: str, *,
                 produced: bool) -> None:
        """The entry count of a conversation answer (its ``field`` list), by agent."""
        body = ctx.response_json
        entries = body.get(field) if isinstance(body, dict) else None
        if not isinstance(entries, list):
            return
        agent: Any = ctx.resource_ids.get("agent_id")
        if not agent:
            # Appends and history reads name no agent: its answers carry it.
            agent = next((entry["agent_id"] for entry in entries
                          if isinstance(entry, dict) and entry.get("agent_id")), None)
        tags: Tags = (("agent_id", self.agents(agent) if agent else NONE),
                      ("operation", operation))
        self.aggregate.add(CONVERSATION, tags, len(entries))
        if produced:
            self.aggregate.add(CONVERSATION_ENTRIES, tags, len(entries))

    def _model(self, ctx: RequestContext) -> str:
        """The model that answered (bounded), else the one asked for, else ``"none"``."""
        body = ctx.response_json
        model: Any = body.get("model") if isinstance(body, dict) else None
        if not isinstance(model, str) or not model:
            model = ctx.resource_ids.get("model")
        if not model and isinstance(body, dict):
            # A conversation names its model on its output entries.
            model = next((entry["model"] for entry in body.get("outputs") or ()
                          if isinstance(entry, dict) and isinstance(entry.get("model"), str)),
                         None)
        return self.models(model) if model else NONE
