"""An in-process fault-injecting TCP proxy that speaks the part of Toxiproxy's HTTP API we use.

Tests drive it through the real ``toxiproxy-python`` client, exactly as they would drive a real
Toxiproxy server, so the same tests run against either. The server owns a private asyncio event
loop in a background thread: the synchronous client can therefore be called from async tests
without blocking the proxy.

Supported toxics (Toxiproxy's names and attributes): ``latency`` (latency, jitter ms),
``bandwidth`` (rate KB/s), ``timeout`` (timeout ms, 0 = hold forever), ``reset_peer``
(timeout ms), ``limit_data`` (bytes), ``slow_close`` (delay ms) and ``slicer`` (average_size,
size_variation bytes, delay us). ``toxicity`` is drawn once per connection and toxic.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import socket
import struct
import threading
from dataclasses import dataclass, replace
from types import TracebackType
from typing import Any, Literal, Self

from aiohttp import web

__all__ = [
    "STREAMS",
    "TOXIC_DEFAULTS",
    "VERSION",
    "ApiError",
    "FaultProxyServer",
    "ProxyRegistry",
    "TcpProxy",
    "Toxic",
    "build_app",
]

VERSION = "2.12.0-faultproxy"

STREAMS = ("upstream", "downstream")

#: Every supported toxic type with its attributes and their defaults.
TOXIC_DEFAULTS: dict[str, dict[str, int]] = {
    "latency": {"latency": 0, "jitter": 0},
    "bandwidth": {"rate": 0},
    "slow_close": {"delay": 0},
    "timeout": {"timeout": 0},
    "reset_peer": {"timeout": 0},
    "slicer": {"average_size": 0, "size_variation": 0, "delay": 0},
    "limit_data": {"bytes": 0},
}

_CHUNK_SIZE = 32 * 1024
# Chunks buffered between a connection's reader and its (possibly sleeping) writer; the reader
# must keep reading while the writer sleeps, or latency would accumulate per chunk.
_QUEUE_CHUNKS = 128
_UPSTREAM_CONNECT_TIMEOUT = 10.0

CloseMode = Literal["graceful", "abort", "reset"]


class ApiError(Exception):
    """An error answered to the API client as Toxiproxy does: ``{"error": ..., "status": ...}``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message

    def response(self) -> web.Response:
        """Render this error as a Toxiproxy-shaped JSON response."""
        return web.json_response({"error": self.message, "status": self.status}, status=self.status)


@dataclass(frozen=True, eq=False)
class Toxic:
    """One toxic. Immutable and compared by identity: an update replaces the object, which makes
    every live connection draw its toxicity again, as Toxiproxy restarts the toxic."""

    name: str
    type: str
    stream: str
    toxicity: float
    attributes: dict[str, int]

    def to_json(self) -> dict[str, Any]:
        """The toxic as Toxiproxy serialises it."""
        return {
            "name": self.name,
            "type": self.type,
            "stream": self.stream,
            "toxicity": self.toxicity,
            "attributes": dict(self.attributes),
        }


def _int_attribute(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float) or int(value) != value:
        raise ApiError(400, f"bad request body: attribute {name!r} must be an integer")
    return int(value)


def _toxicity(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise ApiError(400, "bad request body: toxicity must be a number between 0 and 1")
    return float(value)


def _attributes(toxic_type: str, given: Any, base: dict[str, int]) -> dict[str, int]:
    if not isinstance(given, dict):
        raise ApiError(400, "bad request body: attributes must be an object")
    merged = dict(base)
    for key, value in given.items():
        # Toxiproxy ignores attributes a toxic does not have; so do we.
        if key in TOXIC_DEFAULTS[toxic_type]:
            merged[key] = _int_attribute(key, value)
    return merged


def toxic_from_json(body: dict[str, Any]) -> Toxic:
    """Validate a ``POST /proxies/{name}/toxics`` body into a :class:`Toxic`."""
    toxic_type = body.get("type")
    if toxic_type not in TOXIC_DEFAULTS:
        raise ApiError(400, "invalid toxic type")
    stream = body.get("stream") or "downstream"
    if stream not in STREAMS:
        raise ApiError(400, "stream was invalid, can be either upstream or downstream")
    name = body.get("name") or f"{toxic_type}_{stream}"
    if not isinstance(name, str):
        raise ApiError(400, "bad request body: name must be a string")
    toxicity = _toxicity(body.get("toxicity", 1.0))
    attributes = _attributes(toxic_type, body.get("attributes") or {}, TOXIC_DEFAULTS[toxic_type])
    return Toxic(name, toxic_type, stream, toxicity, attributes)


def split_host_port(address: str) -> tuple[str, int]:
    """Split ``"host:port"`` (IPv6 hosts in brackets) into its parts."""
    host, sep, port_text = address.rpartition(":")
    if not sep or not port_text.isdigit() or int(port_text) > 65535:
        raise ApiError(400, f"bad request body: invalid address {address!r}")
    return host.strip("[]"), int(port_text)


def join_host_port(host: str, port: int) -> str:
    """Join a host and port as Toxiproxy reports them."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _bind(listen: str) -> socket.socket:
    """Bind one listening socket, so a port-0 listen resolves to a single, reusable port."""
    host, port = split_host_port(listen)
    family, kind, proto, _, address = socket.getaddrinfo(
        host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


class Connection:
    """One proxied client connection: two pumps (upstream = client to server, downstream =
    server to client) that consult the proxy's *current* toxics for every chunk."""

    def __init__(
        self,
        proxy: TcpProxy,
        client_reader: asyncio.StreamReader,
        client_writer: asyncio.StreamWriter,
    ) -> None:
        self._proxy = proxy
        self._client_reader = client_reader
        self._client_writer = client_writer
        self._server_writer: asyncio.StreamWriter | None = None
        self._decisions: dict[Toxic, bool] = {}
        self._timers: dict[Toxic, asyncio.Task[None]] = {}
        self._passed: dict[Toxic, int] = {}
        self._pace_clock = {stream: 0.0 for stream in STREAMS}
        self._finished_streams: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing = False
        self._done = asyncio.Event()

    async def run(self) -> None:
        """Connect upstream and pump bytes until the connection is closed."""
        host, port = split_host_port(self._proxy.upstream)
        try:
            server_reader, server_writer = await asyncio.wait_for(
                asyncio.open_connection(host, port), _UPSTREAM_CONNECT_TIMEOUT
            )
        except (OSError, TimeoutError):
            self.close("abort")
            return
        self._server_writer = server_writer
        if self._closing:  # the proxy was disabled while we were connecting
            server_writer.transport.abort()
            return
        self._spawn(self._pump("upstream", self._client_reader, server_writer))
        self._spawn(self._pump("downstream", server_reader, self._client_writer))
        self.sync_toxics()
        await self._done.wait()

    def _spawn(self, coro: Any) -> None:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _enabled(self, toxic: Toxic) -> bool:
        if toxic not in self._decisions:
            self._decisions[toxic] = random.random() < toxic.toxicity
        return self._decisions[toxic]

    def _active(self, stream: str) -> list[Toxic]:
        return [t for t in self._proxy.toxics if t.stream == stream and self._enabled(t)]

    def sync_toxics(self) -> None:
        """Follow a change of the proxy's toxics: forget removed ones, arm timeout timers."""
        live = set(self._proxy.toxics)
        for toxic in [t for t in self._decisions if t not in live]:
            del self._decisions[toxic]
            self._passed.pop(toxic, None)
        for toxic in [t for t in self._timers if t not in live]:
            self._timers.pop(toxic).cancel()
        if self._closing:
            return
        for toxic in self._proxy.toxics:
            timeout_ms = toxic.attributes.get("timeout", 0)
            if (
                toxic.type == "timeout"
                and timeout_ms > 0
                and toxic not in self._timers
                and self._enabled(toxic)
            ):
                self._timers[toxic] = asyncio.get_running_loop().create_task(
                    self._close_later(timeout_ms / 1000)
                )

    async def _close_later(self, delay: float) -> None:
        await asyncio.sleep(delay)
        self.close("graceful")

    async def _read_into(
        self, source: asyncio.StreamReader, queue: asyncio.Queue[tuple[float, bytes] | None]
    ) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                data = await source.read(_CHUNK_SIZE)
            except OSError:
                data = b""
            await queue.put((loop.time(), data) if data else None)
            if not data:
                return

    async def _pump(
        self, stream: str, source: asyncio.StreamReader, dest: asyncio.StreamWriter
    ) -> None:
        queue: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue(_QUEUE_CHUNKS)
        self._spawn(self._read_into(source, queue))
        try:
            while (item := await queue.get()) is not None:
                await self._deliver(stream, item[0], item[1], dest)
                if self._closing:
                    return
            await self._finish(stream, dest)
        except OSError:
            self.close("abort")

    async def _deliver(
        self, stream: str, arrived: float, data: bytes, dest: asyncio.StreamWriter
    ) -> None:
        loop = asyncio.get_running_loop()
        rate = 0
        slicer: Toxic | None = None
        close_after = False
        for toxic in self._active(stream):
            attrs = toxic.attributes
            if toxic.type == "latency":
                jitter = attrs["jitter"]
                delay_ms = attrs["latency"] + (random.uniform(-jitter, jitter) if jitter else 0)
                await asyncio.sleep(max(0.0, arrived + delay_ms / 1000 - loop.time()))
            elif toxic.type == "timeout":
                return  # Toxiproxy drops data while a timeout toxic is in place
            elif toxic.type == "reset_peer":
                await asyncio.sleep(attrs["timeout"] / 1000)
                if toxic in self._proxy.toxics:
                    self.close("reset")
                    return
            elif toxic.type == "limit_data":
                passed = self._passed.get(toxic, 0)
                data = data[: max(0, attrs["bytes"] - passed)]
                self._passed[toxic] = passed + len(data)
                close_after = close_after or self._passed[toxic] >= attrs["bytes"]
            elif toxic.type == "bandwidth" and attrs["rate"] > 0:
                rate = min(rate, attrs["rate"]) if rate else attrs["rate"]
            elif toxic.type == "slicer" and attrs["average_size"] > 0:
                slicer = toxic
        if self._closing:
            return
        for piece in _slices(data, slicer):
            await self._write(stream, piece, rate, dest)
            if slicer is not None and slicer.attributes["delay"] > 0:
                await asyncio.sleep(slicer.attributes["delay"] / 1_000_000)
        if close_after:
            self.close("graceful")

    async def _write(self, stream: str, data: bytes, rate: int, dest: asyncio.StreamWriter) -> None:
        if not rate:
            dest.write(data)
            await dest.drain()
            return
        loop = asyncio.get_running_loop()
        # Like Toxiproxy, send at most 100 ms worth of data at a time; pace against a clock
        # rather than sleeping per piece so timer overshoot does not lower the rate.
        step = max(1, rate * 100)
        for start in range(0, len(data), step):
            piece = data[start : start + step]
            due = max(self._pace_clock[stream], loop.time()) + len(piece) / (rate * 1000)
            self._pace_clock[stream] = due
            await asyncio.sleep(max(0.0, due - loop.time()))
            if self._closing:
                return
            dest.write(piece)
            await dest.drain()

    async def _finish(self, stream: str, dest: asyncio.StreamWriter) -> None:
        delays = [t.attributes["delay"] for t in self._active(stream) if t.type == "slow_close"]
        if delays:
            await asyncio.sleep(max(delays) / 1000)
        if self._closing:
            return
        self._finished_streams.add(stream)
        if len(self._finished_streams) == len(STREAMS):
            self.close("graceful")
        elif dest.can_write_eof():
            dest.write_eof()

    def close(self, mode: CloseMode = "abort") -> None:
        """Close both sides: ``graceful`` flushes then sends FIN, ``abort`` drops buffered data,
        ``reset`` sends a TCP RST (SO_LINGER 0) to both peers."""
        if self._closing:
            return
        self._closing = True
        current = asyncio.current_task()
        for task in [*self._tasks, *self._timers.values()]:
            if task is not current:
                task.cancel()
        for writer in (self._client_writer, self._server_writer):
            if writer is None:
                continue
            if mode == "graceful":
                writer.close()
                continue
            if mode == "reset":
                sock = writer.get_extra_info("socket")
                if sock is not None:
                    with contextlib.suppress(OSError):
                        sock.setsockopt(
                            socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                        )
            writer.transport.abort()
        self._proxy.forget(self)
        self._done.set()


def _slices(data: bytes, slicer: Toxic | None) -> list[bytes]:
    if not data:
        return []
    if slicer is None:
        return [data]
    average = slicer.attributes["average_size"]
    variation = min(slicer.attributes["size_variation"], average - 1)
    pieces: list[bytes] = []
    position = 0
    while position < len(data):
        size = average + (random.randint(-variation, variation) if variation > 0 else 0)
        pieces.append(data[position : position + size])
        position += size
    return pieces


class TcpProxy:
    """A named proxy: a listener on ``listen`` forwarding to ``upstream`` through its toxics."""

    def __init__(self, name: str, listen: str, upstream: str) -> None:
        self.name = name
        self.listen = listen
        self.upstream = upstream
        self.toxics: list[Toxic] = []
        self._server: asyncio.Server | None = None
        self._connections: set[Connection] = set()

    @property
    def enabled(self) -> bool:
        """Whether the proxy is listening."""
        return self._server is not None

    def to_json(self) -> dict[str, Any]:
        """The proxy as Toxiproxy serialises it."""
        return {
            "name": self.name,
            "listen": self.listen,
            "upstream": self.upstream,
            "enabled": self.enabled,
            "toxics": [t.to_json() for t in self.toxics],
        }

    async def start(self) -> None:
        """Listen (again) on ``listen``; a port of 0 is replaced by the port obtained."""
        if self._server is not None:
            return
        try:
            sock = _bind(self.listen)
        except OSError as exc:
            raise ApiError(500, f"listen tcp {self.listen}: {exc.strerror or exc}") from exc
        host, port = sock.getsockname()[:2]
        self.listen = join_host_port(host, port)
        self._server = await asyncio.start_server(self._accept, sock=sock)

    async def stop(self) -> None:
        """Stop listening and drop every live connection."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        for connection in list(self._connections):
            connection.close("abort")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(server.wait_closed(), 2.0)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connection = Connection(self, reader, writer)
        self._connections.add(connection)
        try:
            await connection.run()
        finally:
            connection.close("abort")

    def forget(self, connection: Connection) -> None:
        """Drop a closed connection from the live set."""
        self._connections.discard(connection)

    def _changed(self) -> None:
        for connection in list(self._connections):
            connection.sync_toxics()

    def find_toxic(self, name: str) -> Toxic:
        """The toxic called ``name``; 404 if there is none."""
        for toxic in self.toxics:
            if toxic.name == name:
                return toxic
        raise ApiError(404, "toxic not found")

    def add_toxic(self, toxic: Toxic) -> None:
        """Append a toxic; it applies to live connections at once."""
        if any(t.name == toxic.name for t in self.toxics):
            raise ApiError(409, "toxic already exists")
        self.toxics.append(toxic)
        self._changed()

    def update_toxic(self, name: str, body: dict[str, Any]) -> Toxic:
        """Change a toxic's toxicity and/or attributes (type and stream are fixed)."""
        old = self.find_toxic(name)
        new = replace(
            old,
            toxicity=_toxicity(body.get("toxicity", old.toxicity)),
            attributes=_attributes(old.type, body.get("attributes") or {}, old.attributes),
        )
        self.toxics[self.toxics.index(old)] = new
        self._changed()
        return new

    def remove_toxic(self, name: str) -> None:
        """Remove a toxic; live connections stop applying it at once."""
        self.toxics.remove(self.find_toxic(name))
        self._changed()

    def clear_toxics(self) -> None:
        """Remove every toxic."""
        self.toxics.clear()
        self._changed()


class ProxyRegistry:
    """All proxies of one server, by name."""

    def __init__(self) -> None:
        self.proxies: dict[str, TcpProxy] = {}

    def get(self, name: str) -> TcpProxy:
        """The proxy called ``name``; 404 if there is none."""
        try:
            return self.proxies[name]
        except KeyError:
            raise ApiError(404, "proxy not found") from None

    async def create(self, name: str, listen: str, upstream: str, enabled: bool) -> TcpProxy:
        """Create (and by default start) a proxy; 409 if the name is taken."""
        if name in self.proxies:
            raise ApiError(409, "proxy already exists")
        split_host_port(upstream)
        proxy = TcpProxy(name, listen, upstream)
        if enabled:
            await proxy.start()
        self.proxies[name] = proxy
        return proxy

    async def update(self, proxy: TcpProxy, body: dict[str, Any]) -> None:
        """Apply a partial update of listen, upstream and enabled, as Toxiproxy does."""
        listen = _string_field(body, "listen", proxy.listen)
        upstream = _string_field(body, "upstream", proxy.upstream)
        enabled = body.get("enabled", proxy.enabled)
        if not isinstance(enabled, bool):
            raise ApiError(400, "bad request body: enabled must be a boolean")
        split_host_port(listen)
        split_host_port(upstream)
        if (listen, upstream) != (proxy.listen, proxy.upstream):
            await proxy.stop()
            proxy.listen, proxy.upstream = listen, upstream
        if enabled:
            await proxy.start()
        else:
            await proxy.stop()

    async def delete(self, name: str) -> None:
        """Stop and forget a proxy."""
        await self.get(name).stop()
        del self.proxies[name]

    async def reset(self) -> None:
        """Re-enable every proxy and remove every toxic."""
        for proxy in self.proxies.values():
            await proxy.start()
            proxy.clear_toxics()

    async def close(self) -> None:
        """Stop every proxy (server shutdown)."""
        for proxy in self.proxies.values():
            await proxy.stop()


def _string_field(body: dict[str, Any], key: str, default: str) -> str:
    value = body.get(key, default)
    if not isinstance(value, str) or not value:
        raise ApiError(400, f"bad request body: {key} must be a non-empty string")
    return value


REGISTRY_KEY = web.AppKey("faultproxy_registry", ProxyRegistry)


async def _json_body(request: web.Request) -> dict[str, Any]:
    text = await request.text()
    try:
        body = json.loads(text) if text.strip() else {}
    except ValueError as exc:
        raise ApiError(400, f"bad request body: {exc}") from None
    if not isinstance(body, dict):
        raise ApiError(400, "bad request body: expected a JSON object")
    return body


@web.middleware
async def _api_errors(request: web.Request, handler: Any) -> web.StreamResponse:
    try:
        response: web.StreamResponse = await handler(request)
    except ApiError as error:
        return error.response()
    return response


async def _version(request: web.Request) -> web.Response:
    return web.json_response({"version": VERSION})


async def _reset(request: web.Request) -> web.Response:
    await request.app[REGISTRY_KEY].reset()
    return web.Response(status=204)


async def _list_proxies(request: web.Request) -> web.Response:
    proxies = request.app[REGISTRY_KEY].proxies
    return web.json_response({name: proxy.to_json() for name, proxy in proxies.items()})


async def _create_proxy(request: web.Request) -> web.Response:
    body = await _json_body(request)
    for key in ("name", "upstream"):
        if not isinstance(body.get(key), str) or not body[key]:
            raise ApiError(400, f"missing required field: {key}")
    enabled = body.get("enabled", True)
    if not isinstance(enabled, bool):
        raise ApiError(400, "bad request body: enabled must be a boolean")
    proxy = await request.app[REGISTRY_KEY].create(
        body["name"], _string_field(body, "listen", "127.0.0.1:0"), body["upstream"], enabled
    )
    return web.json_response(proxy.to_json(), status=201)


async def _show_proxy(request: web.Request) -> web.Response:
    proxy = request.app[REGISTRY_KEY].get(request.match_info["proxy"])
    return web.json_response(proxy.to_json())


async def _update_proxy(request: web.Request) -> web.Response:
    registry = request.app[REGISTRY_KEY]
    proxy = registry.get(request.match_info["proxy"])
    await registry.update(proxy, await _json_body(request))
    return web.json_response(proxy.to_json())


async def _delete_proxy(request: web.Request) -> web.Response:
    await request.app[REGISTRY_KEY].delete(request.match_info["proxy"])
    return web.Response(status=204)


async def _list_toxics(request: web.Request) -> web.Response:
    proxy = request.app[REGISTRY_KEY].get(request.match_info["proxy"])
    return web.json_response([t.to_json() for t in proxy.toxics])


async def _create_toxic(request: web.Request) -> web.Response:
    proxy = request.app[REGISTRY_KEY].get(request.match_info["proxy"])
    toxic = toxic_from_json(await _json_body(request))
    proxy.add_toxic(toxic)
    return web.json_response(toxic.to_json())


async def _show_toxic(request: web.Request) -> web.Response:
    proxy = request.app[REGISTRY_KEY].get(request.match_info["proxy"])
    return web.json_response(proxy.find_toxic(request.match_info["toxic"]).to_json())


async def _update_toxic(request: web.Request) -> web.Response:
    proxy = request.app[REGISTRY_KEY].get(request.match_info["proxy"])
    toxic = proxy.update_toxic(request.match_info["toxic"], await _json_body(request))
    return web.json_response(toxic.to_json())


async def _delete_toxic(request: web.Request) -> web.Response:
    proxy = request.app[REGISTRY_KEY].get(request.match_info["proxy"])
    proxy.remove_toxic(request.match_info["toxic"])
    return web.Response(status=204)


def build_app(registry: ProxyRegistry) -> web.Application:
    """The Toxiproxy-compatible HTTP API over ``registry``."""
    app = web.Application(middlewares=[_api_errors])
    app[REGISTRY_KEY] = registry
    proxy_path = "/proxies/{proxy}"
    toxic_path = "/proxies/{proxy}/toxics/{toxic}"
    app.router.add_get("/version", _version)
    app.router.add_post("/reset", _reset)
    app.router.add_get("/proxies", _list_proxies)
    app.router.add_post("/proxies", _create_proxy)
    app.router.add_get(proxy_path, _show_proxy)
    app.router.add_post(proxy_path, _update_proxy)
    app.router.add_patch(proxy_path, _update_proxy)
    app.router.add_delete(proxy_path, _delete_proxy)
    app.router.add_get(proxy_path + "/toxics", _list_toxics)
    app.router.add_post(proxy_path + "/toxics", _create_toxic)
    app.router.add_get(toxic_path, _show_toxic)
    app.router.add_post(toxic_path, _update_toxic)
    app.router.add_patch(toxic_path, _update_toxic)
    app.router.add_delete(toxic_path, _delete_toxic)
    return app


class FaultProxyServer:
    """The API server and its proxies, running on their own event loop in a daemon thread.

    ``start()`` returns once the API listens and sets :attr:`port` (useful with ``port=0``);
    ``stop()`` closes every proxy and connection and joins the thread. Usable as a context
    manager.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self.port = port
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        """Base URL of the HTTP API, e.g. ``http://127.0.0.1:41234``."""
        return f"http://{join_host_port(self.host, self.port)}"

    def start(self) -> Self:
        """Start the server thread and wait until the API is listening."""
        if self._thread is not None:
            raise RuntimeError("FaultProxyServer already started")
        self._thread = threading.Thread(target=self._run, name="faultproxy", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout=10):
            raise RuntimeError("FaultProxyServer did not start within 10 s")
        if self._error is not None:
            self._thread.join()
            self._thread = None
            raise RuntimeError(f"FaultProxyServer failed to start: {self._error}") from self._error
        return self

    def stop(self) -> None:
        """Close every proxy and live connection, stop the API and join the thread."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        if self._loop is not None and self._stopping is not None:
            with contextlib.suppress(RuntimeError):  # the loop may already be gone
                self._loop.call_soon_threadsafe(self._stopping.set)
        thread.join(timeout=10)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:
            self._error = exc
        finally:
            self._ready.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        registry = ProxyRegistry()
        runner = web.AppRunner(build_app(registry), access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        try:
            site = web.TCPSite(runner, self.host, self.port)
            await site.start()
            self.port = runner.addresses[0][1]
            self._ready.set()
            await self._stopping.wait()
        finally:
            await registry.close()
            await runner.cleanup()
