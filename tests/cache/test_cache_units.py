"""The cache's parts on their own: keys, the in-process store, entries, the caller's
directives, completeness and the replayed stream."""

from __future__ import annotations

from typing import Any

from plugins.cache.complete import is_complete
from plugins.cache.entry import Entry, decode, encode
from plugins.cache.keys import cache_key
from plugins.cache.memory import MemoryBackend
from plugins.cache.policy import directives, is_deterministic, upstream_forbids_storing
from plugins.cache.render import completion_as_sse
from proxy.sse import ChatStreamAssembler, SSEParser

BODY = {"model": "mistral-small-latest", "temperature": 0,
        "messages": [{"role": "user", "content": "hi"}]}


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _key(scope: tuple[str, ...] = ("acme",), body: dict[str, Any] | None = None) -> str:
    return cache_key(scope, "chat.complete", "/v1/chat/completions", "", body or BODY)


def test_keys_depend_on_content_and_organisation_not_on_spelling() -> None:
    reordered = {"messages": [{"content": "hi", "role": "user"}], "temperature": 0,
                 "model": "mistral-small-latest"}
    assert _key(body=reordered) == _key()
    # A streamed and a plain request for the same content share the stored answer.
    assert _key(body={**BODY, "stream": True}) == _key()
    assert _key(scope=("globex",)) != _key()
    assert _key(scope=("acme", "fingerprint")) != _key()
    assert _key(body={**BODY, "temperature": 0.1}) != _key()
    assert _key(body={**BODY, "max_tokens": 5}) != _key()
    assert cache_key(("acme",), "fim.complete", "/v1/chat/completions", "", BODY) != _key()
    # Parts cannot run together: moving a character from one part to the next changes it.
    assert cache_key(("ab",), "c", "", "", {}) != cache_key(("a",), "bc", "", "", {})
    assert len(_key()) == 64 and "acme" not in _key()


def _entry(text: str = "x") -> Entry:
    return Entry(text.encode(), stream=False, stored_at=0.0)


def test_memory_store_expires_entries_after_their_time_to_live() -> None:
    clock = Clock()
    store = MemoryBackend(10, clock=clock)
    store.store("k", _entry(), ttl=60)
    clock.now += 59.9
    assert store.lookup("k") == _entry()
    clock.now += 0.1
    assert store.lookup("k") is None
    assert len(store) == 0


def test_memory_store_evicts_the_least_recently_used() -> None:
    store = MemoryBackend(2, clock=Clock())
    store.store("a", _entry("a"), ttl=60)
    store.store("b", _entry("b"), ttl=60)
    assert store.lookup("a") is not None  # "a" is now the most recently used
    store.store("c", _entry("c"), ttl=60)
    assert store.lookup("b") is None
    assert store.lookup("a") == _entry("a")
    assert store.lookup("c") == _entry("c")
    assert len(store) == 2


def test_entries_survive_encoding_and_garbage_is_no_entry() -> None:
    entry = Entry(b'{"a":"\xc3\xa9\n"}', stream=True, stored_at=1700000000.123)
    assert decode(encode(entry)) == entry
    for raw in (b"", b"{}", b"sidecar-cache/1 2 0\n{}", b"sidecar-cache/1 1 x\n{}",
                b"sidecar-cache/9 1 1\n{}"):
        assert decode(raw) is None


def test_the_callers_cache_control_has_its_standard_meaning() -> None:
    plain = directives({})
    assert (plain.lookup, plain.store, plain.max_age, plain.force) == (True, True, None, False)
    no_cache = directives({"Cache-Control": "no-cache"})
    assert not no_cache.lookup and no_cache.store
    no_store = directives({"Cache-Control": "No-Store"})
    assert no_store.lookup and not no_store.store
    aged = directives({"Cache-Control": "max-age=30, max-age=60"})
    assert aged.max_age == 30 and aged.force and aged.lookup
    assert not directives({"Cache-Control": "max-age=0"}).lookup
    assert directives({"X-Sidecar-Cache": "force"}).force
    bypass = directives({"X-Sidecar-Cache": "bypass"})
    assert not bypass.lookup and not bypass.store
    assert directives({"Cache-Control": "max-age=abc"}).max_age is None
    assert upstream_forbids_storing("private, no-store")
    assert not upstream_forbids_storing("max-age=0")


def test_only_temperature_zero_is_deterministic_for_sampling_operations() -> None:
    assert is_deterministic("chat.complete", {"temperature": 0})
    assert is_deterministic("fim.complete", {"temperature": 0.0})
    for temperature in (0.7, None, "0", False):
        assert not is_deterministic("chat.complete", {"temperature": temperature})
    assert not is_deterministic("chat.complete", {})
    assert is_deterministic("embeddings.create", {"input": ["a"]})


def _completion(**message: Any) -> dict[str, Any]:
    return {"id": "c1", "object": "chat.completion", "created": 1, "model": "m",
            "choices": [{"index": 0, "message": {"role": "assistant", **message},
                         "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}}


def test_only_complete_answers_count_as_complete() -> None:
    assert is_complete("chat.complete", _completion(content="hello"))
    failed = _completion(content="hel")
    failed["choices"][0]["finish_reason"] = "error"
    assert not is_complete("chat.complete", failed)
    unfinished = _completion(content="hel")
    unfinished["choices"][0]["finish_reason"] = None
    assert not is_complete("chat.complete", unfinished)
    assert not is_complete("chat.complete", {"object": "error", "message": "boom"})
    assert not is_complete("chat.complete", None)
    assert is_complete("embeddings.create", {"data": [{"embedding": [0.1]}]})
    assert not is_complete("embeddings.create", {"data": []})


def test_a_stored_completion_replays_as_a_stream_that_reassembles_to_it() -> None:
    calls = [{"id": "call_1", "type": "function",
              "function": {"name": "lookup", "arguments": '{"q": "x"}'}}]
    for completion in (_completion(content="Echo: hello world"),
                       _completion(content="", tool_calls=calls)):
        raw = completion_as_sse(completion)
        assert raw.endswith(b"data: [DONE]\n\n")
        assembler = ChatStreamAssembler()
        for event in SSEParser().feed(raw):
            assembler.add(event)
        assert assembler.done
        rebuilt = assembler.result()
        assert rebuilt["choices"][0]["message"]["content"] == \
            completion["choices"][0]["message"]["content"]
        assert rebuilt["choices"][0]["finish_reason"] == "stop"
        assert rebuilt["usage"] == completion["usage"]
        assert rebuilt["id"] == "c1" and rebuilt["model"] == "m"
        if "tool_calls" in completion["choices"][0]["message"]:
            call = rebuilt["choices"][0]["message"]["tool_calls"][0]
            assert call["function"] == calls[0]["function"] and call["id"] == "call_1"
