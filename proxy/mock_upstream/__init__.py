"""A faithful fake of the Mistral API for offline demos, tests and benchmarks.

Start it with ``mistral-sidecar mock-upstream`` or, in tests, serve
:func:`create_mock_app` with pytest-aiohttp's ``aiohttp_server``; the real ``mistralai``
SDK works against it unchanged. State lives in memory, per application.

Faked API (bearer key required, errors in Mistral's ``{"object": "error", ...}`` shape):
models, chat and FIM completions (JSON or SSE), embeddings, agents and their versions,
conversations (JSON or SSE), files (uploads streamed to a temporary directory) and batch
jobs. Replies are ``"Echo: <words of the last user message>"``; tokens are counted as
whitespace-separated words.

Control API (no authentication):

* ``POST /__mock__/faults`` registers a fault, answers ``201 {"id", "fault"}``::

      {"method": "POST" | null, "path_prefix": "/v1/chat" | null,
       "model": "mistral-large-latest" | null,            # JSON body's model
       "times": 1 (-1 = forever),
       "action": "respond" | "drop" | "delay" | "stall" | "cut_stream",
       "status": 503, "body": {...}, "headers": {...},   # respond
       "delay_ms": 500,                                   # delay
       "after_frames": 2}                                 # cut_stream

  The first armed fault matching a ``/v1`` request (in registration order) is applied and
  its ``times`` counted down. ``respond`` answers ``status``/``body`` (default: Mistral
  error shape)/``headers``; ``drop`` closes the connection without an answer; ``delay``
  waits ``delay_ms`` then answers normally; ``stall`` never answers; ``cut_stream`` closes
  an SSE answer after ``after_frames`` frames (a JSON answer after half its body).
* ``GET /__mock__/faults``, ``DELETE /__mock__/faults``, ``DELETE /__mock__/faults/{id}``.
* ``GET|PUT /__mock__/settings``: ``{"latency_ms", "token_interval_ms", "stream_tokens", "gzip"}``.
* ``POST /__mock__/reset``: forget resources, faults, request log; restore settings.
* ``GET /__mock__/requests`` (``?path_prefix=``): the last 1000 ``/v1`` requests with
  ``method, path, query_string, headers ([name, value] as received), body_size, status,
  completed, cancelled, fault, started_at, duration_ms``; ``DELETE`` empties it.
* ``GET /__mock__/stats``: ``{"total": n, "by_path": {path: n}}``.
"""

from .app import create_mock_app, run_mock
from .config import MockConfig, add_arguments, config_from_args

__all__ = ["MockConfig", "add_arguments", "config_from_args", "create_mock_app", "run_mock"]
