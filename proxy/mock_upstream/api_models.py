"""``/v1/models``: a small fixed catalogue of model cards."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from .errors import not_found

routes = web.RouteTableDef()

_CREATED = 1_735_689_600  # 2025-01-01, fixed so listings are stable


def _card(
    model_id: str,
    description: str,
    context: int,
    aliases: list[str],
    *,
    chat: bool = True,
    fim: bool = False,
    vision: bool = False,
) -> dict[str, Any]:
    return {
        "id": model_id,
        "object": "model",
        "created": _CREATED,
        "owned_by": "mistralai",
        "capabilities": {
            "completion_chat": chat,
            "completion_fim": fim,
            "function_calling": chat,
            "fine_tuning": False,
            "vision": vision,
            "classification": False,
        },
        "name": aliases[0] if aliases else model_id,
        "description": description,
        "max_context_length": context,
        "aliases": aliases,
        "deprecation": None,
        "deprecation_replacement_model": None,
        "default_model_temperature": 0.3 if chat else None,
        "type": "base",
    }


MODEL_CARDS: tuple[dict[str, Any], ...] = (
    _card(
        "mistral-small-latest",
        "Efficient general-purpose model.",
        131072,
        ["mistral-small-2506"],
        vision=True,
    ),
    _card("mistral-large-latest", "Top-tier reasoning model.", 131072, ["mistral-large-2411"]),
    _card(
        "codestral-latest",
        "Code model with fill-in-the-middle.",
        262144,
        ["codestral-2508"],
        fim=True,
    ),
    _card(
        "mistral-embed",
        "Text embedding model (1024 dimensions).",
        8192,
        ["mistral-embed-2312"],
        chat=False,
    ),
)


def find_model(model_id: str) -> dict[str, Any] | None:
    """The card whose id or alias is ``model_id``."""
    for card in MODEL_CARDS:
        if model_id == card["id"] or model_id in card["aliases"]:
            return card
    return None


@routes.get("/v1/models")
async def list_models(request: web.Request) -> web.Response:
    """List every model card."""
    return web.json_response({"object": "list", "data": list(MODEL_CARDS)})


@routes.get("/v1/models/{model_id}")
async def get_model(request: web.Request) -> web.Response:
    """Return one model card, 404 if unknown."""
    card = find_model(request.match_info["model_id"])
    if card is None:
        raise not_found(f"Model '{request.match_info['model_id']}' not found")
    return web.json_response(card)
