"""``/v1/embeddings``: deterministic unit vectors derived from each input text."""

from __future__ import annotations

from aiohttp import web

from .generation import EMBEDDING_DIM, count_tokens, embed, usage
from .ids import new_uuid
from .state import STATE_KEY
from .validation import read_json_object, require

routes = web.RouteTableDef()


@routes.post("/v1/embeddings")
async def embeddings(request: web.Request) -> web.Response:
    """Embed ``input`` (a string or a list of strings)."""
    body = await read_json_object(request)
    require(body, {"model": str, "input": (str, list)})
    inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
    texts = [text if isinstance(text, str) else str(text) for text in inputs]
    dim = body.get("output_dimension")
    if not isinstance(dim, int) or isinstance(dim, bool) or not 1 <= dim <= EMBEDDING_DIM:
        dim = EMBEDDING_DIM
    seed = request.app[STATE_KEY].settings.seed
    return web.json_response(
        {
            "id": new_uuid().replace("-", ""),
            "object": "list",
            "model": body["model"],
            "data": [
                {"object": "embedding", "embedding": embed(text, seed, dim), "index": index}
                for index, text in enumerate(texts)
            ],
            "usage": usage(sum(count_tokens(t) for t in texts), 0),
        }
    )
