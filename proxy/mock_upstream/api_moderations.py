"""``/v1/moderations`` and ``/v1/chat/moderations``: a deterministic classifier.

The rule tests rely on, for every text classified:

- ``flag:<category>`` anywhere in the text (case-insensitive; ``<category>`` one of
  :data:`CATEGORIES`) scores :data:`FLAGGED_SCORE` (0.99) in that category;
- ``flag:<category>=<score>`` (e.g. ``flag:violence_and_threats=0.65``) scores exactly
  ``<score>`` (clamped to 0..1) in that category;
- every other category scores a small baseline below :data:`BASELINE_CEILING` (0.01) that
  depends only on the text (a hash of it), so the same text always gets the same scores;
- ``categories[c]`` is true when ``category_scores[c]`` is at least :data:`FLAG_THRESHOLD`
  (0.5).

``/v1/moderations`` takes ``input`` as a string or a list of strings and answers one result
per string, in order. ``/v1/chat/moderations`` takes ``input`` as one conversation (a list of
messages) or a list of conversations and answers one result per conversation, each category
scored as the maximum over the conversation's message texts (string ``content`` or the
``text`` of its chunks). Both answer ``{"id", "model", "results"}`` as the spec's
``ModerationResponse``; malformed bodies get the API's 422. To make them fail or slow, use
the fault injection of ``/__mock__/faults`` with ``path_prefix="/v1/moderations"`` or
``"/v1/chat/moderations"`` (actions ``respond``, ``delay``, ``stall``, ``drop``).
"""

from __future__ import annotations

import hashlib
import re
from typing import Any, NoReturn

from aiohttp import web

from .errors import validation_failed
from .generation import content_text
from .ids import new_uuid
from .validation import read_json_object, require

routes = web.RouteTableDef()

#: The categories Mistral's moderation model reports, in the API's order.
CATEGORIES = (
    "sexual",
    "hate_and_discrimination",
    "violence_and_threats",
    "dangerous_and_criminal_content",
    "selfharm",
    "health",
    "financial",
    "law",
    "pii",
)
FLAGGED_SCORE = 0.99
FLAG_THRESHOLD = 0.5
BASELINE_CEILING = 0.01

_FLAG = re.compile(r"flag:([a-z_]+)(?:=([0-9]*\.?[0-9]+))?", re.IGNORECASE)


def score_text(text: str) -> dict[str, float]:
    """The category scores of ``text`` under the rule in the module docstring."""
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()
    scores = {
        category: round(digest[index] / 255 * BASELINE_CEILING * 0.99, 6)
        for index, category in enumerate(CATEGORIES)
    }
    for match in _FLAG.finditer(text):
        category = match.group(1).lower()
        if category in scores:
            exact = match.group(2)
            scores[category] = FLAGGED_SCORE if exact is None else min(1.0, float(exact))
    return scores


def _result(scores: dict[str, float]) -> dict[str, Any]:
    return {
        "categories": {c: score >= FLAG_THRESHOLD for c, score in scores.items()},
        "category_scores": scores,
    }


def _merge(many: list[dict[str, float]]) -> dict[str, float]:
    """Per category, the highest score of ``many`` (all zero when empty)."""
    return {c: max((scores[c] for scores in many), default=0.0) for c in CATEGORIES}


def _answer(model: str, results: list[dict[str, float]]) -> web.Response:
    return web.json_response({
        "id": new_uuid().replace("-", ""),
        "model": model,
        "results": [_result(scores) for scores in results],
    })


def _invalid_input(index: int | None, message: str, value: Any) -> NoReturn:
    loc: list[Any] = ["body", "input"] if index is None else ["body", "input", index]
    raise validation_failed([{"type": "invalid_input", "loc": loc, "msg": message,
                              "input": value}])


@routes.post("/v1/moderations")
async def moderations(request: web.Request) -> web.Response:
    """Classify ``input`` (a string or a list of strings), one result per string."""
    body = await read_json_object(request)
    require(body, {"model": str, "input": (str, list)})
    texts = body["input"] if isinstance(body["input"], list) else [body["input"]]
    for index, text in enumerate(texts):
        if not isinstance(text, str):
            _invalid_input(index, "Input should be a valid string", text)
    return _answer(body["model"], [score_text(text) for text in texts])


def _conversation_scores(index: int, conversation: Any) -> dict[str, float]:
    if not isinstance(conversation, list) or not conversation:
        _invalid_input(index, "A conversation should be a non-empty list of messages",
                       conversation)
    scores = []
    for message in conversation:
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            _invalid_input(index, "A message should be an object with a role", message)
        scores.append(score_text(content_text(message.get("content"))))
    return _merge(scores)


@routes.post("/v1/chat/moderations")
async def chat_moderations(request: web.Request) -> web.Response:
    """Classify one conversation or a list of them, one result per conversation."""
    body = await read_json_object(request)
    require(body, {"model": str, "input": list})
    conversations = body["input"]
    if not conversations:
        _invalid_input(None, "Input should not be empty", conversations)
    if all(isinstance(item, list) for item in conversations):
        results = [_conversation_scores(i, c) for i, c in enumerate(conversations)]
    else:
        results = [_conversation_scores(0, conversations)]
    return _answer(body["model"], results)
