"""Support for the door fuzzer (``test_fuzz_door.py``): Hypothesis strategies for hostile raw
HTTP requests, a blocking raw-socket client that reads every answer off the wire, the oracle
each answer must pass, and a TCP listener standing in for an attacker's host.

Requests are generated as *templates*: placeholders such as ``<<key:acme:user>>``,
``<<id:globex:conversation>>``, ``<<attacker>>`` and ``<<host>>`` stand for values that only
exist once a sidecar runs (keys, resource ids, ports). A :class:`World` fills them in when the
request is sent, so a generated example (and the reproducer Hypothesis prints) is the same in
every run, whatever keys and ports that run got.

:data:`KNOWN_REQUESTS` are hostile requests every run sends first: the findings of issue
#16 and of this fuzzer, so each known kind is checked whatever the generated sequence.
"""

from __future__ import annotations

import asyncio
import functools
import gzip
import json
import re
import selectors
import socket
import time
import urllib.parse
import urllib.request
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from hypothesis import strategies as st

from plugins.auth.references_table import REFERENCES
from plugins.guard.fields import path_steps
from proxy.mock_upstream import MockConfig, create_mock_app
from proxy.operations import Operation, OperationIndex

ORGS = ("acme", "globex")
ROLES = ("admin", "user", "read_only")
#: Resource kinds the test creates one of per organisation (placeholders ``<<id:ORG:KIND>>``).
ID_KINDS = ("conversation", "agent", "file")
CRLF = b"\r\n"

_PLACEHOLDER = re.compile(rb"<<(key|id|attacker|host|revoked)(?::([a-z_]+):([a-z_]+))?>>")


# --- the world a template is rendered in --------------------------------------------------


@dataclass
class World:
    """Run-specific values the placeholders of a request template stand for."""

    host: str
    port: int
    attacker: str
    keys: dict[str, str]
    ids: dict[str, str]
    revoked_key: str
    upstream_key: str
    mock_url: str

    def render(self, template: bytes) -> bytes:
        """``template`` with every placeholder replaced by its value."""

        def value(match: re.Match[bytes]) -> bytes:
            kind = match.group(1)
            if kind == b"host":
                return f"{self.host}:{self.port}".encode()
            if kind == b"attacker":
                return self.attacker.encode()
            if kind == b"revoked":
                return self.revoked_key.encode()
            name = f"{match.group(2).decode()}:{match.group(3).decode()}"
            table = self.keys if kind == b"key" else self.ids
            return table[name].encode()

        return _PLACEHOLDER.sub(value, template)

    def secrets(self) -> list[bytes]:
        """Every credential that must never appear in an answer."""
        return [k.encode() for k in (*self.keys.values(), self.revoked_key, self.upstream_key)]


# --- the request model --------------------------------------------------------------------


@dataclass(frozen=True)
class FuzzRequest:
    """One request, before its placeholders are filled in.

    ``body`` is encoded (``coding``: ``identity``, ``gzip``, ``deflate``, or ``broken-gzip``
    and ``broken-deflate`` for bytes that only claim to be compressed) and framed
    (``framing``: ``length`` with ``length_delta`` added to the true length, ``none``,
    ``chunked``, ``chunked-unterminated``, ``chunked-badsize`` or a literal ``Content-Length``
    value ``raw:VALUE``) after rendering, so lengths always count the rendered bytes.
    """

    method: str
    target: bytes
    version: bytes
    headers: tuple[bytes, ...]
    body: bytes = b""
    coding: str = "identity"
    framing: str = "length"
    length_delta: int = 0
    line_end: bytes = CRLF

    @property
    def is_head(self) -> bool:
        """Whether the answer carries no body (HEAD, however it is spelled)."""
        return self.method.upper() == "HEAD"

    @property
    def complete(self) -> bool:
        """Whether the request is complete on the wire: a server owes it an answer at once.

        A ``Content-Length`` larger than the body sent, or a chunked body with no last
        chunk, leaves a server waiting for bytes that never come: such requests are sent with
        the write side shut, and a silent close is a correct answer.
        """
        if self.framing == "length":
            return self.length_delta <= 0
        return self.framing != "chunked-unterminated"

    def encoded_body(self, world: World) -> bytes:
        """The body after rendering and content coding."""
        body = world.render(self.body)
        if self.coding == "gzip":
            return gzip.compress(body, mtime=0)
        if self.coding == "deflate":
            return zlib.compress(body)
        if self.coding == "broken-gzip":
            return gzip.compress(body, mtime=0)[: max(12, len(body) // 2)] + b"\x00garbage"
        if self.coding == "broken-deflate":
            return b"x\x9c" + body[:64]
        return body

    def to_bytes(self, world: World) -> bytes:
        """The bytes written on the socket."""
        body = self.encoded_body(world)
        lines = [self.method.encode("latin-1") + b" " + world.render(self.target)
                 + (b" " + self.version if self.version else b"")]
        lines += [world.render(h) for h in self.headers]
        payload = body
        if self.framing == "length":
            lines.append(b"Content-Length: %d" % max(0, len(body) + self.length_delta))
        elif self.framing.startswith("raw:"):
            lines.append(b"Content-Length: " + self.framing[4:].encode("latin-1"))
        elif self.framing.startswith("chunked"):
            lines.append(b"Transfer-Encoding: chunked")
            payload = _chunked(body, self.framing)
        end = self.line_end
        return end.join(lines) + end + end + payload


class _TemplateWorld(World):
    """Renders a template as itself, for printing reproducers."""

    def render(self, template: bytes) -> bytes:
        """``template`` unchanged."""
        return template


_TEMPLATE_WORLD = _TemplateWorld("", 0, "", {}, {}, "", "", "")


def _chunked(body: bytes, framing: str) -> bytes:
    size = max(1, len(body) // 3)
    chunks = [body[i:i + size] for i in range(0, len(body), size)]
    out = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks)
    if framing == "chunked-badsize":
        return b"zz\r\n" + out + b"0\r\n\r\n"
    if framing == "chunked-unterminated":
        return out
    return out + b"0\r\n\r\n"


# --- the raw client -------------------------------------------------------------------------


@dataclass
class RawResponse:
    """One HTTP response parsed off the wire."""

    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (case-insensitive), else ``None``."""
        name = name.lower()
        return next((v for k, v in self.headers if k.lower() == name), None)

    def __str__(self) -> str:
        head = "\n".join(f"{k}: {v}" for k, v in self.headers)
        body = self.body if len(self.body) <= 600 else self.body[:600] + b"..."
        return f"HTTP {self.status} {self.reason}\n{head}\n\n{body!r}"


@dataclass
class Exchange:
    """What came back for one request: the raw bytes, the responses parsed from them, and how
    the connection ended (``eof``, ``reset`` or ``timeout``)."""

    raw: bytes
    responses: list[RawResponse]
    ended: str
    seconds: float
    leftover: bytes = b""
    parse_error: str | None = None


def send_raw(host: str, port: int, data: bytes, *, timeout: float, half_close: bool = False,
             head_request: bool = False, linger: float = 0.3) -> Exchange:
    """Write ``data`` to a fresh connection to ``host:port`` and read until the server closes
    it, resets it or ``timeout`` seconds pass.

    Reading and writing are interleaved, so an early answer to a request whose body the
    server never reads is still collected. ``half_close`` shuts the write side (for requests
    that are incomplete on purpose) once ``linger`` seconds passed after the last byte with
    no answer: a server that answers such a request before its body must be seen doing so
    every time, not only when it wins a race against the shutdown.
    """
    started = time.monotonic()
    deadline = started + timeout
    received = bytearray()
    ended = "timeout"
    sock = socket.create_connection((host, port), timeout=timeout)
    sock.setblocking(False)
    selector = selectors.DefaultSelector()
    pending = memoryview(data)
    shut_at: float | None = None
    try:
        selector.register(sock, selectors.EVENT_READ | selectors.EVENT_WRITE)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            events = selector.select(min(left, 0.05 if shut_at is not None else 0.5))
            readable = any(mask & selectors.EVENT_READ for _, mask in events)
            writable = any(mask & selectors.EVENT_WRITE for _, mask in events)
            if writable and pending:
                try:
                    sent = sock.send(pending[:65536])
                    pending = pending[sent:]
                except (BrokenPipeError, ConnectionResetError):
                    pending = memoryview(b"")
                if not pending:
                    selector.modify(sock, selectors.EVENT_READ)
                    if half_close:
                        shut_at = time.monotonic() + linger
            if shut_at is not None and (received or time.monotonic() >= shut_at):
                shut_at = None
                try:
                    sock.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
            if readable:
                try:
                    chunk = sock.recv(65536)
                except ConnectionResetError:
                    ended = "reset"
                    break
                except BlockingIOError:
                    continue
                if not chunk:
                    ended = "eof"
                    break
                received += chunk
    finally:
        selector.close()
        sock.close()
    raw = bytes(received)
    exchange = Exchange(raw, [], ended, time.monotonic() - started)
    try:
        exchange.responses, exchange.leftover = parse_responses(raw, head_request)
    except ValueError as exc:
        exchange.parse_error = str(exc)
    return exchange


def parse_responses(raw: bytes, head_request: bool = False
                    ) -> tuple[list[RawResponse], bytes]:
    """Every complete response in ``raw`` (interim 1xx skipped) and any incomplete tail.

    Only the first final response answers the request; any further one answers bytes the
    server read as another request (``head_request`` applies to the first only).
    """
    responses: list[RawResponse] = []
    rest = raw
    while rest:
        head, sep, after = rest.partition(b"\r\n\r\n")
        if not sep:
            return responses, rest
        status_line, *lines = head.decode("latin-1").split("\r\n")
        parts = status_line.split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
            raise ValueError(f"not an HTTP status line: {status_line[:80]!r}")
        status = int(parts[1])
        headers = []
        for line in lines:
            name, _, value = line.partition(":")
            headers.append((name.strip(), value.strip()))
        response = RawResponse(status, parts[2] if len(parts) > 2 else "", headers, b"")
        head_answer = head_request and not responses and status >= 200
        if head_answer and after and not after.startswith(b"HTTP/"):
            # A server that could not parse the method does not know it was HEAD.
            response.body, rest = after, b""
        elif status < 200 or status in (204, 304) or head_answer:
            rest = after
        elif (response.header("transfer-encoding") or "").lower() == "chunked":
            response.body, rest = _dechunk(after)
        elif (length := response.header("content-length")) is not None:
            size = int(length)
            if len(after) < size:
                return responses, rest
            response.body, rest = after[:size], after[size:]
        else:
            response.body, rest = after, b""
        if status >= 200:
            responses.append(response)
    return responses, b""


def _dechunk(data: bytes) -> tuple[bytes, bytes]:
    out = bytearray()
    while True:
        size_line, sep, rest = data.partition(b"\r\n")
        if not sep:
            raise ValueError("chunked response ends early")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            _trailers, sep, rest = rest.partition(b"\r\n") if rest.startswith(b"\r\n") \
                else rest.partition(b"\r\n\r\n")
            return bytes(out), rest
        out += rest[:size]
        data = rest[size + 2:]


# --- the oracle -----------------------------------------------------------------------------


class FuzzFinding(AssertionError):
    """An answer that breaks one of the door's promises.

    Every (kind, status) gets its own subclass (:func:`finding_class`) so that Hypothesis,
    which tells failures apart by exception type, shrinks and reports each one separately.
    """

    kind = "finding"


@functools.cache
def finding_class(kind: str, status: int | None) -> type[FuzzFinding]:
    """The exception class for findings of ``kind`` on answers with ``status``."""
    name = "".join(part.capitalize() for part in kind.split("_")) + (
        f"{status}" if status is not None else "")
    return type(name, (FuzzFinding,), {"kind": kind, "__module__": __name__})


@dataclass(frozen=True)
class Problem:
    """One broken promise of one answer; ``signature`` tells apart answers of the same kind
    and status that different code made (:func:`answer_signature`)."""

    kind: str
    status: int | None
    detail: str
    signature: str = ""


def answer_signature(response: RawResponse) -> str:
    """The start of an answer's message (a JSON error's ``message``, else the body) up to
    the first ``:`` or ``(``, numbers and hex ids blurred: what made it, not what it quotes."""
    try:
        document = json.loads(response.body)
    except ValueError:
        document = None
    if isinstance(document, dict):
        text = str(document.get("message", ""))
    else:
        text = response.body[:120].decode("latin-1")
    text = re.split(r"[:(]", text, maxsplit=1)[0]
    return " ".join(re.sub(r"[0-9a-f]{8,}|\d+", "#", text).split()[:8])


def is_mistral_error(body: Any) -> bool:
    """Whether ``body`` has Mistral's error shape."""
    return (isinstance(body, dict) and body.get("object") == "error"
            and {"message", "type", "code"} <= set(body))


def judge(request: FuzzRequest, exchange: Exchange, world: World,
          upstream_statuses: Sequence[int] = ()) -> list[Problem]:
    """Every broken promise in ``exchange``.

    - the connection answers a complete request in time, with a parseable response;
    - no 5xx unless it is upstream's own: the mock recorded that status for this request
      (``upstream_statuses``) and the answer carries the mock's ``mistral-correlation-id``;
    - every 4xx/5xx is ``application/json`` in Mistral's error shape (a HEAD answer has no
      body: only its ``Content-Type`` is checked); an upstream error relayed as it came is
      reported as its own kind (``relayed_...``), since the fix belongs elsewhere;
    - no traceback and no caller or upstream key anywhere in an answer;
    - no redirect to another host.
    """
    problems: list[Problem] = []
    if exchange.parse_error is not None:
        problems.append(Problem("unparseable_answer", None, exchange.parse_error))
        return problems
    if not exchange.responses:
        if request.complete:
            kind = "hang" if exchange.ended == "timeout" else "no_answer"
            problems.append(Problem(kind, None, f"connection ended by {exchange.ended} after "
                                                f"{exchange.seconds:.1f}s with "
                                                f"{exchange.raw[:200]!r}"))
        return problems
    for index, response in enumerate(exchange.responses):
        status = response.status
        ctype = (response.header("content-type") or "").split(";")[0].strip().lower()
        relayed = (index == 0 and status in upstream_statuses
                   and response.header("mistral-correlation-id") is not None)
        prefix = "relayed_" if relayed else ""
        signature = answer_signature(response)
        shown = redact(str(response), world)
        if status >= 500 and not relayed:
            problems.append(Problem("sidecar_5xx", status, shown, signature))
        if status >= 400:
            if ctype != "application/json":
                problems.append(Problem(prefix + "error_not_json", status,
                                        f"Content-Type {ctype!r}: {shown}", signature))
            elif response.body or not (request.is_head and index == 0):
                try:
                    document = json.loads(response.body)
                except ValueError:
                    document = None
                if not is_mistral_error(document):
                    problems.append(Problem(prefix + "error_not_mistral_shape", status,
                                            shown, signature))
        if 300 <= status < 400:
            location = response.header("location") or ""
            if "//" in location and f"//{world.host}:{world.port}" not in location:
                problems.append(Problem("open_redirect", status, shown, signature))
    answer = exchange.raw
    first = exchange.responses[0].status
    signature = answer_signature(exchange.responses[0])
    if b"Traceback" in answer:
        problems.append(Problem("traceback", first,
                                redact(answer[:2000].decode("latin-1"), world), signature))
    for secret in world.secrets():
        if secret in answer:
            problems.append(Problem("secret_echoed", first,
                                    answer.replace(secret, b"<SECRET>")[:2000]
                                    .decode("latin-1"), signature))
    return problems


def redact(text: str, world: World) -> str:
    """``text`` with every key of ``world`` replaced by ``<SECRET>``."""
    for secret in world.secrets():
        text = text.replace(secret.decode(), "<SECRET>")
    return text


def reproducer(request: FuzzRequest, exchange: Exchange, world: World) -> str:
    """A readable account of one failing exchange (keys redacted)."""
    shown = redact(exchange.raw.decode("latin-1"), world)
    responses = redact("\n---\n".join(str(r) for r in exchange.responses), world) \
        or "(no response)"
    return (f"request (template: placeholders unfilled, so a Content-Length counts the "
            f"template; FuzzRequest.to_bytes(world) renders it):\n"
            f"  {request.to_bytes(_TEMPLATE_WORLD)!r}\n"
            f"connection: {exchange.ended} after {exchange.seconds:.2f}s\n"
            f"responses:\n{responses}\nraw answer: {shown[:1500]!r}")


@dataclass
class Sighting:
    """Every time one kind of finding was seen: how often, and the shortest request."""

    count: int
    request: bytes
    detail: str


@dataclass
class Sightings:
    """Distinct findings of a run, by kind, status and answer signature, each with its
    shortest request."""

    by_kind: dict[tuple[str, int | None, str], Sighting] = field(default_factory=dict)

    def add(self, request: FuzzRequest, problems: Sequence[Problem]) -> None:
        """Count ``problems`` of ``request``."""
        template = request.to_bytes(_TEMPLATE_WORLD)
        for problem in problems:
            key = (problem.kind, problem.status, problem.signature)
            seen = self.by_kind.get(key)
            if seen is None:
                self.by_kind[key] = Sighting(1, template, problem.detail)
                continue
            seen.count += 1
            if len(template) < len(seen.request):
                seen.request, seen.detail = template, problem.detail

    def summary(self) -> str:
        """One paragraph per distinct finding."""
        parts = [f"{len(self.by_kind)} distinct finding(s) (requests as templates, see "
                 f"FuzzRequest.to_bytes):"]
        for (kind, status, signature), seen in sorted(self.by_kind.items(), key=str):
            parts.append(f"* {kind} ({status}) {signature!r}, seen {seen.count} time(s); "
                         f"shortest request:\n"
                         f"  {seen.request[:1500]!r}\n  answer: {seen.detail[:600]}")
        return "\n".join(parts)


# --- the mock's view ------------------------------------------------------------------------


def mock_records(mock_url: str, clear: bool = False) -> list[dict[str, Any]]:
    """The mock upstream's request log (and empty it when ``clear``)."""
    with urllib.request.urlopen(mock_url + "/__mock__/requests", timeout=10) as resp:
        records: list[dict[str, Any]] = json.loads(resp.read())
    if clear:
        request = urllib.request.Request(mock_url + "/__mock__/requests", method="DELETE")
        with urllib.request.urlopen(request, timeout=10):
            pass
    return records


_OVERRIDE_HEADERS = frozenset({"x-http-method-override", "x-http-method", "x-method-override",
                               "x-original-url", "x-rewrite-url"})


def judge_upstream(records: Sequence[Mapping[str, Any]], world: World) -> list[Problem]:
    """What upstream received must carry nothing a caller chose in place of the sidecar:
    its own host, the configured key, no method-override headers."""
    problems: list[Problem] = []
    mock_host = world.mock_url.removeprefix("http://")
    for record in records:
        headers = [(str(k).lower(), str(v)) for k, v in record["headers"]]
        hosts = [v for k, v in headers if k == "host"]
        auth = [v for k, v in headers if k == "authorization"]
        where = f"{record['method']} {record['path']}"
        if hosts != [mock_host]:
            problems.append(Problem("upstream_host", None, f"{where}: Host {hosts}"))
        if auth != [f"Bearer {world.upstream_key}"]:
            shown = [a.replace(world.upstream_key, "<UPSTREAM KEY>") for a in auth]
            problems.append(Problem("upstream_authorization", None, f"{where}: {shown}"))
        overrides = sorted({k for k, _ in headers} & _OVERRIDE_HEADERS)
        if overrides:
            problems.append(Problem("upstream_method_override", None, f"{where}: {overrides}"))
    return problems


# --- an attacker's host ---------------------------------------------------------------------


@dataclass
class RecordingListener:
    """A TCP listener that records every connection made to it (the first bytes of each):
    the host an absolute-form target names, which must never hear from the sidecar."""

    host: str = "127.0.0.1"
    port: int = 0
    connections: list[bytes] = field(default_factory=list)
    _server: Any = None

    async def start(self) -> RecordingListener:
        """Listen on a free loopback port."""

        async def record(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                data = await asyncio.wait_for(reader.read(4096), 2)
            except (TimeoutError, ConnectionError):
                data = b""
            self.connections.append(data)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                         b"Content-Length: 2\r\nConnection: close\r\n\r\n{}")
            try:
                await writer.drain()
            except ConnectionError:
                pass
            writer.close()

        self._server = await asyncio.start_server(record, self.host, 0)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    async def close(self) -> None:
        """Stop listening."""
        self._server.close()
        await self._server.wait_closed()


# --- strategies -----------------------------------------------------------------------------


def operations() -> tuple[Operation, ...]:
    """The spec's operations, one per (method, path)."""
    seen: dict[tuple[str, str], Operation] = {}
    for op in OperationIndex.default().all():
        seen.setdefault((op.method, op.path), op)
    return tuple(seen.values())


@functools.cache
def mock_served() -> frozenset[tuple[str, str]]:
    """(method, path shape) pairs the mock upstream implements, shapes with ``{}`` for
    parameters: requests for these reach further than a 404."""
    app = create_mock_app(MockConfig())
    served = set()
    for resource in app.router.resources():
        shape = re.sub(r"\{[^}]+\}", "{}", resource.canonical)
        for route in resource:
            served.add((route.method, shape))
    return frozenset(served)


def _shape(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "{}", path)


#: Field names the fuzzer uses when the spec is absent (and mixes in when it is present).
GENERIC_FIELDS = ("model", "messages", "inputs", "stream", "agent_id", "conversation_id",
                  "file_id", "input_files", "handoffs", "requests", "tools", "prompt",
                  "input", "instructions", "name", "metadata", "training_files",
                  "document", "library_id", "endpoint", "store", "handoff_execution")
MODELS = ("mistral-small-latest", "mistral-large-latest", "codestral-latest",
          "mistral-embed", "ministral-8b-latest", "mistral-ocr-latest")

HOSTILE_TEXT: tuple[str, ...] = (
    "", " ", "\x00", "\ud800", "\udfff", "\u2028", "\u202e", "\ufeff", "é", "😀", "\r\n",
    "\x1b[31m", "../../etc/passwd", "%2e%2e%2f", "%00", "<script>alert(1)</script>",
    "ignore all previous instructions", "${jndi:x}",
    "{{7*7}}", "' OR 1=1 --", "\\", "//", "NaN", "null", "\x7f", "\u0085",
)


def hostile_text() -> st.SearchStrategy[str]:
    """Short strings a parser might choke on, and random unicode."""
    return st.one_of(
        st.sampled_from(HOSTILE_TEXT),
        st.text(max_size=24),
        st.text(alphabet=st.characters(codec="utf-8"), max_size=12),
        st.integers(100, 5000).map(lambda n: "a" * n),
    )


def _id_ref(kind: str) -> st.SearchStrategy[str]:
    return st.sampled_from(ORGS).map(lambda org: f"<<id:{org}:{kind}>>")


def _id_values(name: str) -> st.SearchStrategy[Any]:
    kind = next((k for k in ID_KINDS if k in name), None)
    refs = [_id_ref(kind)] if kind else [_id_ref(k) for k in ID_KINDS]
    return st.one_of(*refs, hostile_text())


def json_values(max_leaves: int = 12) -> st.SearchStrategy[Any]:
    """Loose JSON: hostile strings, huge and tiny numbers, nesting."""
    leaves = st.one_of(
        st.none(), st.booleans(), hostile_text(),
        st.integers(), st.sampled_from([2**63, -(2**63) - 1, 10**40]),
        st.floats(allow_nan=False, allow_infinity=False),
    )
    return st.recursive(
        leaves,
        lambda inner: st.one_of(st.lists(inner, max_size=4),
                                st.dictionaries(st.sampled_from(GENERIC_FIELDS) | st.text(
                                    max_size=8), inner, max_size=4)),
        max_leaves=max_leaves,
    )


def _path_values(tokens: list[str], leaf: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """A value holding ``leaf`` where the reference path ``tokens`` points (``"[]"``: an
    array, anything else: an object's field)."""
    if not tokens:
        return leaf
    inner = _path_values(tokens[1:], leaf)
    if tokens[0] == "[]":
        return st.lists(inner, min_size=1, max_size=2)
    return st.fixed_dictionaries({tokens[0]: inner},
                                 optional={"type": st.sampled_from(["file", "text", "x"])})


def _field_values(name: str) -> st.SearchStrategy[Any]:
    if name == "model":
        return st.sampled_from(MODELS) | hostile_text()
    if name.endswith(("_id", "_ids")) or name in ("handoffs", "input_files"):
        ids = _id_values(name)
        return st.one_of(ids, st.lists(ids, max_size=3), json_values(4))
    return json_values(4)


@functools.cache
def _body_values(op: Operation) -> st.SearchStrategy[Any]:
    """Generic bodies, and bodies that name (foreign, hostile) ids wherever the operation's
    body may name one (the committed table of body references, made from the spec)."""
    generic = st.fixed_dictionaries({"model": st.sampled_from(MODELS)}, optional={
        name: _field_values(name) for name in GENERIC_FIELDS if name != "model"})
    name = op.name.removesuffix("_stream") if op.stream_variant else op.name
    shaped = [
        _path_values(path_steps(path), _id_values(kind))
        for operation, form, path, kind in REFERENCES if form == "json" and operation == name]
    if not shaped:
        return generic
    return st.one_of(generic, *shaped)


def _dump_json(value: Any, style: int) -> bytes:
    if style == 0:
        return json.dumps(value).encode()  # \ud800 escaped: valid JSON, a lone surrogate
    if style == 1:  # the same as raw (invalid) UTF-8
        return json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass")
    return json.dumps(value, ensure_ascii=False, indent=1).encode("utf-8", "replace")


def json_bodies(op: Operation, broken: bool = False) -> st.SearchStrategy[bytes]:
    """JSON bodies for ``op``: generic or naming ids where its body may, hostile values;
    ``broken``: invalid, truncated, deeply nested, huge numbers, duplicate keys."""
    shaped = st.builds(_dump_json, _body_values(op), st.integers(0, 2))
    nested = st.tuples(st.sampled_from([b"[", b'{"a":']), st.integers(10, 200_000)).map(
        lambda t: t[0] * t[1] + (b"]" if t[0] == b"[" else b"}") * t[1])
    invalid = st.sampled_from([
        b"", b"{", b"{}", b"[]", b"null", b'"x"', b"1", b"{'a': 1}", b'{"a":}', b'{"a":1,}',
        b"NaN", b'{"model": NaN}', b'{"model": Infinity}', b'{"n": 1e999999}',
        b'{"n": ' + b"9" * 5000 + b"}", b'{"model":"a","model":"b"}',
        b"\xef\xbb\xbf{}", '{"model": "x"}'.encode("utf-16"), b'{"s": "\\ud800"}',
        b'{"s": "\xed\xa0\x80"}', b'{"s": "\\u0000"}', b"\x00" * 16, b'{"stream": true}',
        b'{"model": "mistral-small-latest", "stream": true, "messages": '
        b'[{"role": "user", "content": "hi"}]}',
    ])
    truncated = shaped.flatmap(lambda b: st.integers(0, max(0, len(b) - 1)).map(
        lambda n: b[:n]))
    if not broken:
        return shaped
    return st.one_of(nested, invalid, invalid, truncated, st.binary(max_size=64))


def multipart_bodies() -> st.SearchStrategy[tuple[bytes, bytes]]:
    """(Content-Type value, body) of uploads: well-formed, mismatched and broken."""

    def build(boundary: str, declared: str, purpose: str, content: bytes, close: bool
              ) -> tuple[bytes, bytes]:
        b = boundary.encode()
        body = (b"--" + b + b'\r\nContent-Disposition: form-data; name="purpose"\r\n\r\n'
                + purpose.encode("utf-8", "surrogatepass") + b"\r\n--" + b
                + b'\r\nContent-Disposition: form-data; name="file"; filename="in.jsonl"\r\n'
                + b"Content-Type: application/octet-stream\r\n\r\n" + content + b"\r\n")
        if close:
            body += b"--" + b + b"--\r\n"
        return f"multipart/form-data; boundary={declared}".encode("utf-8", "replace"), body

    boundaries = st.sampled_from(["xyz", "----b0undary", "a" * 70, "", '"q"'])
    return st.builds(
        lambda b, same, other, purpose, content, close: build(b, b if same else other,
                                                              purpose, content, close),
        boundaries, st.booleans() | st.just(True), boundaries,
        st.sampled_from(["batch", "fine-tune", "ocr"]) | hostile_text(),
        st.sampled_from([b'{"custom_id": "1", "body": {}}\n', b""]) | st.binary(max_size=64),
        st.booleans() | st.just(True),
    )


# --- one request, part by part ---------------------------------------------------------------

#: The parts of a request the fuzzer may make hostile, weighted by repetition. Each example
#: makes a few of them hostile and leaves the rest as a well-behaved client sends them, so
#: most requests get past the HTTP parser and into the chain, and a shrunk reproducer is
#: hostile only where it has to be.
PARTS = (
    "param", "param", "param", "param", "encoding", "encoding", "literal", "literal", "query",
    "raw_query", "form", "form", "method", "method", "method", "version", "host", "auth",
    "auth", "auth",
    "body", "body", "json", "json", "json", "content_type", "coding", "coding", "declared",
    "framing", "framing", "headers", "headers", "many_headers", "line_end", "order",
)


@dataclass(frozen=True)
class Knobs:
    """The hostile parts of one request, and the draw function that fills them in."""

    draw: st.DrawFn
    hostile: frozenset[str]

    def pick(self, part: str, normal: Any, hostile: Sequence[Any]) -> Any:
        """``normal``, or one of ``hostile`` when ``part`` is hostile in this request."""
        if part in self.hostile:
            return self.draw(st.sampled_from(list(hostile)))
        return normal


# Path parameters: how a hostile caller might spell an id.
def _percent_all(text: str) -> str:
    return "".join(f"%{b:02X}" for b in text.encode())


def _percent_some(text: str) -> str:
    return "".join(f"%{ord(c):02x}" if c.isalpha() and i % 2 else c for i, c in enumerate(text))


ID_SPELLINGS = (
    "{}%2F..%2F", "{}%2f", "{}%5C", "{}\\", "..%2F{}", "../{}", "./{}", "{}/..", "%2e%2e", "..",
    ".", "{}/", "/{}", "{}%00", "{}%0A", "{}%0d%0a", "{}%", "{}%4", "%zz{}", "{}%C3%28",
    "{}%FF", "{}%E2%80%AE", "{}?x=1", "{}#f", "{};p=1", "{}%20", "{}%25", "{}%252F",
)


def _quote(text: str) -> str:
    """``text`` percent-encoded (UTF-8, lone surrogates kept as their raw bytes)."""
    return urllib.parse.quote(text.encode("utf-8", "surrogatepass"), safe="")


def path_param(knobs: Knobs, name: str) -> str:
    """One path parameter: a real id of either organisation or junk (percent-encoded unless
    the raw encoding is the hostile part), spelled hostilely when the parameter is."""
    draw = knobs.draw
    kind = next((k for k in ID_KINDS if k in name), None)
    base = draw(st.one_of(
        _id_ref(kind) if kind else _id_ref(draw(st.sampled_from(ID_KINDS))),
        st.sampled_from(["x", "conv_1", "ag_1", "00000000-0000-0000-0000-000000000000",
                         "mistral-small-latest", "1"]),
        hostile_text().map(_quote),
    ))
    value = knobs.pick("param", "{}", ID_SPELLINGS).replace("{}", base)
    mangle = knobs.pick("encoding", "none", ["encode_some", "encode_some", "encode_all",
                                             "raw_unicode", "raw_control", "raw_space",
                                             "raw_text"])
    if mangle == "encode_some" and "<<" not in value:
        value = _percent_some(value)
    elif mangle == "encode_all" and "<<" not in value:
        value = _percent_all(value)
    elif mangle == "raw_control":
        value += draw(st.sampled_from(["\x00", "\t", "\x7f", "\x1b", "\r", "\n", "\r\nX: y"]))
    elif mangle == "raw_unicode":
        value += draw(st.sampled_from(["é", "\u2028", "😀", "\ufeff", "\u0130"]))
    elif mangle == "raw_space":
        value = value[:1] + " " + value[1:]
    elif mangle == "raw_text":
        value += draw(hostile_text()).replace("<<", "")
    return value


def _target_encode(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


QUERY_PARAMS = ("page", "page_size", "model", "agent_id", "metadata", "created_after",
                "status", "purpose", "search", "order_by", "x")
QUERY_VALUES = ("1", "0", "-1", "%31", "%00", "%g1", "a%2Fb", "<<id:acme:agent>>",
                "<<id:globex:conversation>>", "x" * 3000, "true", "%E2%80%AE")


def query_string(knobs: Knobs) -> str:
    """A query string: none, or a few parameters (percent-encoded, or raw when that is the
    hostile part) with an odd ending when the query is hostile."""
    draw = knobs.draw
    if not draw(st.booleans()) and "query" not in knobs.hostile:
        return ""
    encode = (lambda t: t) if "raw_query" in knobs.hostile else _quote
    names = st.sampled_from(QUERY_PARAMS) | hostile_text().map(encode)
    values = st.sampled_from(QUERY_VALUES) | hostile_text().map(encode)
    pairs = draw(st.lists(st.tuples(names, values), max_size=4))
    query = "&".join(f"{k}={v}" for k, v in pairs)
    return "?" + query + knobs.pick("query", "", ["#frag", "&", "&&", "=", "?", "%", "#"])


def literal_mangling(knobs: Knobs, path: str) -> str:
    """The same path with its literal segments spelled differently (when hostile)."""
    draw = knobs.draw
    how = knobs.pick("literal", "none", ["encode_letter", "encode_letter", "double_slash",
                                         "dot", "dotdot", "trailing", "upper", "backslash",
                                         "v2", "no_v1"])
    segments = path.split("/")
    literal = [i for i, s in enumerate(segments) if s and "<<" not in s and i > 0]
    if how == "encode_letter" and literal:
        i = draw(st.sampled_from(literal))
        seg = segments[i]
        j = draw(st.integers(0, len(seg) - 1))
        if seg[j].isascii():
            segments[i] = seg[:j] + f"%{ord(seg[j]):02X}" + seg[j + 1:]
    elif how == "double_slash":
        segments.insert(draw(st.integers(1, max(1, len(segments) - 1))), "")
    elif how == "dot":
        segments.insert(draw(st.integers(1, len(segments))), ".")
    elif how == "dotdot":
        i = draw(st.integers(2, max(2, len(segments))))
        segments[i:i] = ["x", ".."] if draw(st.booleans()) else [".."]
    elif how == "trailing":
        segments.append("")
    elif how == "upper":
        segments = [s.upper() if "<<" not in s else s for s in segments]
    elif how == "backslash":
        return "\\".join(segments)
    elif how == "v2" and len(segments) > 1:
        segments[1] = "v2"
    elif how == "no_v1" and len(segments) > 2:
        del segments[1]
    return "/".join(segments)


EXTRA_PATHS = ("/healthz", "/readyz", "/metrics", "/", "/v1", "/v1/", "/v2/models",
               "/__mock__/requests", "/__mock__/faults", "/favicon.ico", "/v1/unknown/thing",
               "/v1/models/../../__mock__/requests", "*", "")


def target(knobs: Knobs, op: Operation | None) -> bytes:
    """A request target: the operation's path with hostile parameters, in origin form, or
    (when the form is hostile) absolute form naming another host, or neither."""
    draw = knobs.draw
    if op is None:
        path = draw(st.sampled_from(EXTRA_PATHS))
    else:
        path = re.sub(r"\{([^}]+)\}", lambda m: path_param(knobs, m.group(1)), op.path)
        path = literal_mangling(knobs, path)
    path += query_string(knobs)
    form = knobs.pick("form", "origin", ["absolute", "absolute", "absolute", "absolute",
                                         "authority", "network", "glued", "long"])
    if form == "absolute":
        scheme = draw(st.sampled_from(["http", "https", "HTTP", "ftp", "rforce", "file",
                                       "ws", "x-y+z"]))
        host = draw(st.sampled_from(["<<attacker>>", "<<host>>", "user:pw@<<attacker>>",
                                     "<<attacker>>@<<host>>", "localhost:1", "evil.invalid",
                                     "[::1]:1", "<<attacker>>:", "<<attacker>>#"]))
        path = f"{scheme}://{host}{path}"
    elif form == "authority":
        path = draw(st.sampled_from(["<<attacker>>", "<<host>>"])) + path
    elif form == "network":
        path = "//<<attacker>>" + path
    elif form == "glued":
        path = draw(st.sampled_from(["@<<attacker>>", "1", ":1", ".invalid", "rforce://x"])) \
            + path
    elif form == "long":
        path += "/" + "a" * draw(st.integers(1000, 40_000))
    return _target_encode(path)


METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "HEAD", "HEAD", "OPTIONS",
           "TRACE", "CONNECT", "CONNECT", "get", "post", "Delete", "head", "PROPFIND", "FOO", "PRI",
           "M-SEARCH", "GET\t", "G\x00T", "BREW", "QUERY")

AUTH_SPELLINGS = ("missing", "missing", "revoked", "lower", "basic", "empty", "bearer_only",
                  "extra", "suffix", "tab", "folded", "folded_key", "twice_same",
                  "twice_other", "x_api_key", "unicode", "space_name")


def auth_lines(knobs: Knobs) -> list[bytes]:
    """The ``Authorization`` line(s): a valid key of any role and organisation, or (when
    hostile) missing, revoked, malformed, folded or repeated."""
    draw = knobs.draw
    key = f"<<key:{draw(st.sampled_from(ORGS))}:{draw(st.sampled_from(ROLES))}>>".encode()
    lines = {
        "valid": [b"Authorization: Bearer " + key],
        "missing": [],
        "revoked": [b"Authorization: Bearer <<revoked>>"],
        "lower": [b"authorization: bearer " + key],
        "basic": [b"Authorization: Basic " + key],
        "empty": [b"Authorization:"],
        "bearer_only": [b"Authorization: Bearer"],
        "extra": [b"Authorization: Bearer " + key + b" extra"],
        "suffix": [b"Authorization: Bearer " + key + b"x"],
        "tab": [b"Authorization:\tBearer\t" + key + b"\t"],
        "folded": [b"Authorization: Bearer", b" " + key],
        "folded_key": [b"Authorization: Bearer " + key[:9], b"\t" + key[9:]],
        "twice_same": [b"Authorization: Bearer " + key] * 2,
        "twice_other": [b"Authorization: Bearer " + key,
                        b"Authorization: Bearer <<key:globex:admin>>"],
        "x_api_key": [b"X-API-Key: " + key],
        "unicode": [b"Authorization: Bearer \xc3\xa9" + key],
        "space_name": [b"Authorization : Bearer " + key],
    }
    return lines[knobs.pick("auth", "valid", AUTH_SPELLINGS)]


#: Headers a server or proxy treats specially (``Expect`` and ``Upgrade`` weighted up: aiohttp
#: answers them before any application code runs), and some it should not trust.
HEADER_NAMES = (b"Expect", b"Expect", b"Expect", b"Upgrade", b"Upgrade",
                b"X-HTTP-Method-Override", b"X-HTTP-Method", b"X-Method-Override",
                b"X-Original-URL", b"X-Rewrite-URL", b"X-Forwarded-Host", b"X-Forwarded-For",
                b"Forwarded", b"X-Request-ID", b"Traceparent", b"Accept", b"Accept-Encoding",
                b"Range", b"Cookie", b"Via", b"Max-Forwards", b"Te", b"X-Sidecar-Org",
                b"Mistral-Org", b"Trailer", b"Proxy-Authorization")
BAD_HEADER_NAMES = (b"bad name", b"\xc3\xa9", b"", b"X-Y\x00", b"X(Y)")
HEADER_VALUES = (b"GET", b"POST", b"PUT", b"DELETE", b"PATCH", b"HEAD", b"100-continue",
                 b"websocket", b"h2c", b"bytes=0-1", b"gzip, br", b"*/*", b"", b" ",
                 b"for=<<attacker>>;host=<<attacker>>", b"http://<<attacker>>/v1/models",
                 b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", b"../../",
                 b"<<attacker>>", b"%0d%0a", b"() { :; };", b"x" * 9000, b"\xc3\xa9",
                 b"\xff\xfe", b"Bearer <<key:acme:admin>>")
BAD_HEADER_VALUES = (b"\x00", b"\x7f", b"a\rb", b"\x01")


def extra_lines(knobs: Knobs) -> list[bytes]:
    """Further header lines: method overrides, forwarding, ``Expect``, junk (when hostile);
    with ``many_headers``, more lines than a server should take."""
    draw = knobs.draw
    lines: list[bytes] = []
    if "headers" in knobs.hostile:
        for _ in range(draw(st.integers(1, 4))):
            bad = draw(st.integers(0, 9)) == 0
            name = draw(st.sampled_from(BAD_HEADER_NAMES if bad else HEADER_NAMES))
            bad = draw(st.integers(0, 9)) == 0
            value = draw(st.sampled_from(BAD_HEADER_VALUES if bad else HEADER_VALUES))
            lines.append(name + b": " + value)
    if "many_headers" in knobs.hostile:
        lines += [b"X-Many: 1"] * draw(st.sampled_from([99, 130, 200]))
    return lines


@st.composite
def fuzz_requests(draw: st.DrawFn) -> FuzzRequest:
    """Any request the fuzzer sends: an operation's or another target, a method, headers
    (authorization, content type and coding, framing, overrides, junk) and a body, hostile
    in a few of its parts (:data:`PARTS`)."""
    knobs = Knobs(draw, frozenset(draw(st.sets(st.sampled_from(PARTS), max_size=3))))
    ops = operations()
    served = [op for op in ops if (op.method, _shape(op.path)) in mock_served()]
    op = draw(st.one_of(st.sampled_from(served), st.sampled_from(served), st.sampled_from(ops),
                        st.none()))
    method = knobs.pick("method", op.method if op else "GET", METHODS)
    request_target = target(knobs, op)
    version = knobs.pick("version", b"HTTP/1.1", [b"HTTP/1.0", b"HTTP/1.0", b"HTTP/2.0", b"",
                                                  b"http/1.1", b"HTTP/1.1 x", b"HTTP/1.10",
                                                  b"HTTP/9.9"])
    host = knobs.pick("host", "normal", ["missing", "attacker", "attacker", "twice", "empty"])
    headers: list[bytes] = {"normal": [b"Host: <<host>>"], "missing": [],
                            "attacker": [b"Host: <<attacker>>"],
                            "twice": [b"Host: <<host>>", b"Host: <<attacker>>"],
                            "empty": [b"Host:"]}[host]
    headers += auth_lines(knobs)

    kind = op.request_kind if op else "none"
    body_kind = knobs.pick("body", kind, ["json", "none", "multipart", "binary"])
    body = b""
    ctype: bytes | None = None
    if body_kind == "json":
        body = draw(json_bodies(op or ops[0], broken="json" in knobs.hostile))
        ctype = b"application/json"
    elif body_kind == "multipart":
        ctype, body = draw(multipart_bodies())
    elif body_kind == "binary":
        body = draw(st.binary(max_size=256))
        ctype = b"application/octet-stream"
    ctype = knobs.pick("content_type", ctype, [
        None, b"text/plain", b"application/json", b"application/json; charset=utf-16",
        b"application/vnd.x+json", b"multipart/form-data", b"application/x-www-form-urlencoded",
        b"\xff/\xff", b"application/json, text/html", b"application/json\r\nContent-Type: x"])
    if ctype is not None:
        headers.append(b"Content-Type: " + ctype)

    coding = knobs.pick("coding", "identity", ["gzip", "gzip", "deflate", "deflate",
                                               "broken-gzip", "broken-deflate"])
    declared = {"identity": None, "gzip": b"gzip", "deflate": b"deflate",
                "broken-gzip": b"gzip", "broken-deflate": b"deflate"}[coding]
    declared = knobs.pick("declared", declared, [b"br", b"compress", b"identity",
                                                 b"gzip, gzip", b"x-unknown", b"GZIP",
                                                 b"gzip", b"deflate"])
    if declared is not None:
        headers.append(b"Content-Encoding: " + declared)

    framing = knobs.pick("framing", "length", [
        "none", "chunked", "chunked", "chunked", "chunked+length", "chunked-badsize",
        "chunked-unterminated", "raw:-1", "raw:abc", "raw:1, 2", "raw:+0", "raw:0x10",
        "raw:99999999999999999999", "delta", "delta"])
    delta = 0
    if framing == "delta":
        framing = "length"
        delta = draw(st.sampled_from([-1, -5, 1, 100]))
    elif framing == "chunked+length":
        framing = "chunked"
        headers.append(b"Content-Length: %d" % len(body))
    headers += extra_lines(knobs)
    headers.append(b"Connection: close")
    if "order" in knobs.hostile:
        headers = draw(st.permutations(headers))
    line_end = knobs.pick("line_end", CRLF, [b"\n", b"\r", b"\r\r\n"])
    return FuzzRequest(method=method, target=request_target, version=version,
                       headers=tuple(headers), body=body, coding=coding, framing=framing,
                       length_delta=delta, line_end=line_end)


def _known(method: str, target: bytes, *headers: bytes, body: bytes = b"",
           content_type: bytes | None = None, **fields: Any) -> FuzzRequest:
    """A known request: ``Host`` first, ``Connection: close`` last, other fields as given."""
    lines = [b"Host: <<host>>", *headers]
    if content_type is not None:
        lines.append(b"Content-Type: " + content_type)
    return FuzzRequest(method, target, b"HTTP/1.1", (*lines, b"Connection: close"), body,
                       **fields)


_READER = b"Authorization: Bearer <<key:acme:read_only>>"
_USER = b"Authorization: Bearer <<key:acme:user>>"
_OTHER_ADMIN = b"Authorization: Bearer <<key:globex:admin>>"
_CHAT = b'{"model": "mistral-small-latest", "messages": [{"role": "user", "content": "hi"}]}'

#: Requests every run sends first, whatever the generated sequence: the findings of issue #16
#: and of this fuzzer, so each known kind is checked every time.
KNOWN_REQUESTS: tuple[FuzzRequest, ...] = (
    _known("GET", b"http://<<attacker>>/v1/models", _READER),
    _known("GET", b"rforce://x/v1/models", _READER),
    _known("GET", b"1/v1/models", _READER),
    _known("GET", b"http://localhost:1", _READER),
    _known("GET", b"/v1/models", b"Authorization: Bearer", b" <<key:acme:user>>"),
    _known("GET", b"/v1/models", _READER, line_end=b"\n"),
    _known("GET", b"/v1/conver%73ations", _OTHER_ADMIN),
    _known("HEAD", b"/v1/conversations/<<id:acme:conversation>>", _OTHER_ADMIN),
    _known("GET", b"/v1/conversations/%2e%2e/<<id:acme:conversation>>", _OTHER_ADMIN),
    _known("GET", b"/v1/agents/<<id:acme:agent>>", _READER, b"X-HTTP-Method-Override: DELETE"),
    _known("POST", b"/v1/chat/completions", _USER, b"Content-Encoding: gzip",
           body=_CHAT, content_type=b"application/json", coding="broken-gzip"),
    _known("POST", b"/v1/chat/completions", _USER, b"Content-Encoding: deflate",
           body=_CHAT, content_type=b"application/json", coding="broken-deflate"),
    _known("POST", b"/v1/chat/completions", _USER, body=_CHAT,
           content_type=b"application/json", framing="chunked"),
    _known("CONNECT", b"/v1/agents", _USER),
    _known("GET", b"/v1/agents", _USER, b"Expect: GET"),
    _known("GET", b"/v1/agents", _USER, b"Expect: \xff\xfe"),
    _known("GET", b"/v1/agents", _USER, b"Expect: Bearer <<key:acme:admin>>"),
    _known("GET", b"/v1/models", _USER, b"Via: " + b"x" * 9000),
    _known("POST", b"/v1/agents/completions", _USER, body=b'{"messages": [], "agent_id": '
           b'"\\ud800"}', content_type=b"application/json"),
    _known("POST", b"/v1/embeddings", _USER, body=b'{"model": "mistral-embed\\ud800", '
           b'"input": ["hi"]}', content_type=b"application/json"),
    _known("POST", b"/v1/batch/jobs", _USER, body=b'{"endpoint": "/v1/chat/completions", '
           b'"requests": [{"custom_id": "1", "body": {"agent_id": "<<id:globex:agent>>", '
           b'"messages": []}}]}', content_type=b"application/json"),
)
