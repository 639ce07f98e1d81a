"""The per-request context handed to every hook, and the upstream response wrapper."""

from __future__ import annotations

import contextvars
import enum
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy

from proxy import jsoncodec
from proxy.estimate import estimate_tokens

if TYPE_CHECKING:
    from decimal import Decimal

    import aiohttp

    from proxy.errors import SidecarError
    from proxy.operations import Operation

_UNSET: Any = object()

CURRENT_REQUEST: contextvars.ContextVar[RequestContext | None] = contextvars.ContextVar(
    "mistral_sidecar_request", default=None)
"""The request the current task is handling (set by the core for the whole of its handler;
tasks started meanwhile inherit it), ``None`` outside requests. Code that cannot be handed
the context, a logging filter for one, finds it here."""

UNIQUE_JSON_KEYS = web.AppKey("unique_json_keys", bool)
"""Set true (by a plugin, at start-up) when request bodies must not repeat a key in an
object: the core's parse of the body then reports one that does in ``ctx.json_error``."""


class Outcome(enum.StrEnum):
    """How a request ended (``ctx.outcome``, set once, before ``on_end``); the value is what
    the access log shows."""

    #: Upstream answered and its answer was relayed in full (whatever its status).
    OK = "ok"
    #: A plugin answered in ``on_request``.
    ANSWERED = "answered_by_plugin"
    #: The sidecar answered with an error of its own (``ctx.error``).
    ERROR = "error"
    #: A response that had started was cut short (``ctx.error`` says why).
    BROKEN = "upstream_broken"
    #: The caller went away before the end.
    CLIENT_GONE = "client_disconnected"


@dataclass(slots=True)
class Identity:
    """Who is calling, as established by an authentication plugin."""

    key_id: str
    owner: str
    role: str
    org: str = "default"
    name: str | None = None


@dataclass(slots=True)
class Timing:
    """Monotonic timestamps (``time.perf_counter``) of one request's milestones."""

    started: float = field(default_factory=time.perf_counter)
    upstream_started: float | None = None
    upstream_headers: float | None = None
    first_byte_sent: float | None = None
    #: When the first event carrying output (a token) of a stream was forwarded.
    first_token: float | None = None
    finished: float | None = None


@dataclass(slots=True)
class Usage:
    """What upstream reported this request used, and, once priced, what it cost."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    #: Prompt tokens served from upstream's prompt cache (a part of ``prompt_tokens``).
    cached_tokens: int = 0
    #: Seconds of audio in the prompt (``prompt_audio_seconds``).
    audio_seconds: float = 0
    #: Pages an OCR request processed (``usage_info.pages_processed``).
    pages: int = 0
    #: What the request cost in ``currency``, set in ``on_end`` by a pricing plugin
    #: (``plugins.prices``, which runs before the other observers); ``None`` when nothing
    #: priced it or its model's price is unknown. Exact: round only to show it.
    cost: Decimal | None = None
    #: The ISO 4217 code of ``cost``'s currency.
    currency: str | None = None
    #: Upstream reported nothing: the request was cut short (the caller hung up, a stream
    #: broke) after it reached upstream, and these figures are the sidecar's estimate
    #: (:mod:`proxy.estimate`), charged and recorded as such.
    estimated: bool = False

    @classmethod
    def from_json(cls, data: Any) -> Usage | None:
        """Read Mistral's ``usage`` object; ``None`` if absent or malformed."""
        if not isinstance(data, dict):
            return None
        try:
            prompt = int(data.get("prompt_tokens") or 0)
            completion = int(data.get("completion_tokens") or 0)
            total = int(data.get("total_tokens") or (prompt + completion))
        except (TypeError, ValueError):
            return None
        usage = cls(prompt, completion, total)
        # Optional details: one that is malformed counts as not reported.
        details = data.get("prompt_tokens_details") or data.get("prompt_token_details")
        cached = details.get("cached_tokens") if isinstance(details, dict) else None
        top = data.get("num_cached_tokens")
        usage.cached_tokens = _count(cached if top is None else top)
        usage.audio_seconds = _count(data.get("prompt_audio_seconds"), float)
        return usage

    @classmethod
    def from_ocr(cls, data: Any) -> Usage | None:
        """Read an OCR answer's ``usage_info`` object; ``None`` if absent or malformed."""
        if not isinstance(data, dict) or "pages_processed" not in data:
            return None
        return cls(pages=_count(data.get("pages_processed")))


def _count(value: Any, kind: Callable[[Any], Any] = int) -> Any:
    """A non-negative number upstream reported, 0 when it reported none or nonsense."""
    if value is None or isinstance(value, bool):
        return 0
    try:
        number = kind(value)
    except (TypeError, ValueError, OverflowError):
        return 0
    # Not negative, and finite: a number no request reaches stands for nonsense too.
    return number if 0 <= number < 1e15 else 0


class UpstreamResponse:
    """Upstream's answer once its status and headers are known; the body is still unread."""

    __slots__ = ("_released", "attempt", "raw")

    def __init__(self, raw: aiohttp.ClientResponse, attempt: int) -> None:
        self.raw = raw
        self.attempt = attempt
        self._released = False

    @property
    def status(self) -> int:
        """HTTP status code."""
        return self.raw.status

    @property
    def headers(self) -> CIMultiDictProxy[str]:
        """Response headers exactly as upstream sent them."""
        return self.raw.headers

    async def read(self) -> bytes:
        """Read the whole body (for small bodies a wrapper wants to inspect)."""
        return await self.raw.read()

    async def release(self) -> None:
        """Discard this response and give back (or close) its connection."""
        if not self._released:
            self._released = True
            self.raw.close()


UpstreamCall = Callable[["RequestContext"], Awaitable[UpstreamResponse]]


class RequestContext:
    """Everything the hooks know about one request.

    Plugins read and set fields; fields a plugin owns alone go in ``ctx.state`` under the
    plugin's name. ``log`` collects extra fields for the access log line.
    ``upstream_headers`` are set on (replacing) the forwarded request's headers;
    ``response_headers`` on the caller's response.
    """

    __slots__ = (
        "_json",
        "_json_error",
        "_resource_ids",
        "_response_json",
        "_usage",
        "app",
        "attempts",
        "body",
        "buffer_response",
        "ended",
        "error",
        "identity",
        "is_stream",
        "log",
        "method",
        "operation",
        "outcome",
        "path",
        "path_params",
        "query_string",
        "request",
        "request_id",
        "response_body",
        "response_bytes",
        "response_headers",
        "response_status",
        "state",
        "timing",
        "upstream_api_key",
        "upstream_headers",
        "upstream_status",
    )

    def __init__(
        self,
        request: web.Request,
        app: web.Application,
        request_id: str,
        operation: Operation | None,
        path_params: dict[str, str],
        path: str,
        query_string: str,
    ) -> None:
        self.request = request
        self.app = app
        self.request_id = request_id
        self.method = request.method
        #: The canonical, decoded path (:mod:`proxy.canonical`): what was classified and
        #: authorised, and what upstream receives.
        self.path = path
        #: The query string as upstream receives it (without ``?``).
        self.query_string = query_string
        self.operation = operation
        self.path_params = path_params
        self._resource_ids: dict[str, str] | None = None
        self.identity: Identity | None = None
        self.body: bytes | None = None
        self._json: Any = _UNSET
        self._json_error: ValueError | RecursionError | None = None
        self.is_stream = False
        self.upstream_api_key: str | None = None
        self.upstream_headers: CIMultiDict[str] = CIMultiDict()
        self.response_headers: dict[str, str] = {}
        self.buffer_response = False
        self.upstream_status: int | None = None
        self.response_status: int | None = None
        self.response_body: bytes | None = None
        self._response_json: Any = None
        self.response_bytes = 0
        self.attempts = 0
        self._usage: Any = _UNSET
        self.timing = Timing()
        self.state: dict[str, Any] = {}
        self.log: dict[str, Any] = {}
        #: How the request ended; ``None`` until it has (see ``on_end``).
        self.outcome: Outcome | None = None
        #: The error the sidecar answered with, or that cut a started response short.
        self.error: SidecarError | None = None
        #: Set by the core when it starts the one ``on_end`` notification.
        self.ended = False

    @property
    def operation_name(self) -> str:
        """The classified operation's name, ``"unknown"`` for paths outside the spec."""
        return self.operation.name if self.operation is not None else "unknown"

    @property
    def resource_ids(self) -> dict[str, str]:
        """Ids a policy cares about (conversation_id, agent_id, model ...), from path and body.

        Computed on first use, so requests nobody inspects never pay for it; reflects the body
        as it is at that moment.
        """
        if self._resource_ids is None:
            from proxy.operations import extract_resource_ids

            self._resource_ids = extract_resource_ids(self.operation, self.path_params, self.json)
        return self._resource_ids

    @property
    def json(self) -> Any:
        """The request body parsed as JSON (the one parse of it); ``None`` if there is no body
        or it is not JSON (``json_error`` says why). Of a key an object repeats, the last
        counts, as in every parser."""
        if self._json is _UNSET:
            self._parse_json()
        return self._json

    @property
    def json_error(self) -> ValueError | RecursionError | None:
        """Why the request body is not acceptable JSON, ``None`` when it is (or there is no
        body): the parser's exception, or :class:`proxy.jsoncodec.DuplicateKeyError` when an
        object repeats a key and :data:`UNIQUE_JSON_KEYS` is set."""
        if self._json is _UNSET:
            self._parse_json()
        return self._json_error

    def _parse_json(self) -> None:
        self._json, self._json_error = None, None
        if not self.body:
            return
        try:
            self._json = jsoncodec.loads(
                self.body, unique_keys=self.app.get(UNIQUE_JSON_KEYS, False))
        except jsoncodec.DuplicateKeyError as error:
            self._json, self._json_error = error.value, error
        except (ValueError, RecursionError) as error:
            self._json_error = error

    def set_json(self, value: Any) -> None:
        """Replace the request body with ``value`` serialised as JSON."""
        self._json, self._json_error = value, None
        self.body = jsoncodec.dumps_bytes(value)

    def set_response_body(self, body: bytes) -> None:
        """Record the complete JSON response body; it is parsed on first use."""
        self.response_body = body
        self._response_json = _UNSET
        self._usage = _UNSET

    @property
    def response_json(self) -> Any:
        """The response as JSON: the parsed body, or the object reassembled from a stream."""
        if self._response_json is _UNSET:
            self._response_json = None
            if self.response_body:
                try:
                    self._response_json = jsoncodec.loads(self.response_body)
                except (ValueError, UnicodeDecodeError, RecursionError):
                    self._response_json = None
        return self._response_json

    @response_json.setter
    def response_json(self, value: Any) -> None:
        self._response_json = value
        self._usage = _UNSET

    @property
    def usage(self) -> Usage | None:
        """Usage from the response (streamed or not; an OCR answer's pages), or the
        sidecar's estimate (``usage.estimated``) for a billed call cut short before upstream
        reported it; ``None`` when there is neither."""
        if self._usage is _UNSET:
            body = self.response_json
            self._usage = None
            if isinstance(body, dict):
                self._usage = Usage.from_json(body.get("usage"))
                if self._usage is None and "usage_info" in body:
                    self._usage = Usage.from_ocr(body["usage_info"])
        usage: Usage | None = self._usage
        return usage

    def estimate_usage(self, output_events: int = 0, output_chars: int = 0) -> None:
        """Give a call cut short after it reached upstream the estimate of
        :func:`proxy.estimate.estimate_tokens` as its usage, when upstream bills its operation
        by usage and reported none: ``output_events`` events carrying output, of
        ``output_chars`` characters in all, were relayed to the caller."""
        operation = self.operation
        if (operation is None or not operation.reports_usage or not self.attempts
                or self.body is None or self.usage is not None):
            return
        status = self.upstream_status
        if status is not None and status >= 400:
            return
        prompt, completion = estimate_tokens(len(self.body), output_events, output_chars)
        self._usage = Usage(prompt, completion, prompt + completion, estimated=True)
