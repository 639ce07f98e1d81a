"""Injected faults: their JSON form, validation and first-match consumption."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

ACTIONS = frozenset({"respond", "drop", "delay", "stall", "cut_stream"})
FOREVER = -1


@dataclass
class Fault:
    """One registered fault; ``times`` counts down on every match (``-1`` never runs out)."""

    action: str
    method: str | None = None
    path_prefix: str | None = None
    #: Only requests whose JSON body names this ``model`` (``None``: any request).
    model: str | None = None
    times: int = 1
    status: int = 503
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    delay_ms: float = 0.0
    after_frames: int = 0
    id: str = field(default_factory=lambda: f"fault_{uuid.uuid4().hex[:12]}")
    hits: int = 0

    def matches(self, method: str, path: str, model: str | None = None) -> bool:
        """Whether this fault applies to a request with ``method``, ``path`` and (the JSON
        body's) ``model``."""
        if self.times == 0:
            return False
        if self.method is not None and self.method != method.upper():
            return False
        if self.model is not None and self.model != model:
            return False
        return self.path_prefix is None or path.startswith(self.path_prefix)

    def to_json(self) -> dict[str, Any]:
        """The fault as returned by the control API."""
        return {
            "id": self.id,
            "action": self.action,
            "method": self.method,
            "path_prefix": self.path_prefix,
            "model": self.model,
            "times": self.times,
            "status": self.status,
            "body": self.body,
            "headers": self.headers,
            "delay_ms": self.delay_ms,
            "after_frames": self.after_frames,
            "hits": self.hits,
        }


def _number(data: dict[str, Any], name: str, default: float, kind: type) -> Any:
    value = data.get(name, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} must be a number")
    return kind(value)


def parse_fault(data: Any) -> Fault:
    """Build a :class:`Fault` from the control API's JSON, raising ``ValueError`` if invalid."""
    if not isinstance(data, dict):
        raise ValueError("body must be a JSON object")
    action = data.get("action")
    if action not in ACTIONS:
        raise ValueError(f"action must be one of {sorted(ACTIONS)}")
    method = data.get("method")
    if method is not None and not isinstance(method, str):
        raise ValueError("method must be a string or null")
    path_prefix = data.get("path_prefix")
    if path_prefix is not None and not isinstance(path_prefix, str):
        raise ValueError("path_prefix must be a string or null")
    model = data.get("model")
    if model is not None and (not isinstance(model, str) or not model):
        raise ValueError("model must be a non-empty string or null")
    headers = data.get("headers") or {}
    if not isinstance(headers, dict) or not all(isinstance(k, str) for k in headers):
        raise ValueError("headers must be an object")
    times = _number(data, "times", 1, int)
    if times == 0 or times < FOREVER:
        raise ValueError("times must be a positive count or -1 (forever)")
    status = _number(data, "status", 503, int)
    if not 100 <= status <= 599:
        raise ValueError("status must be an HTTP status code")
    after_frames = _number(data, "after_frames", 0, int)
    delay_ms = _number(data, "delay_ms", 0.0, float)
    if after_frames < 0 or delay_ms < 0:
        raise ValueError("after_frames and delay_ms must not be negative")
    return Fault(
        action=action,
        method=method.upper() if method else None,
        path_prefix=path_prefix or None,
        model=model,
        times=times,
        status=status,
        body=data.get("body"),
        headers={k: str(v) for k, v in headers.items()},
        delay_ms=delay_ms,
        after_frames=after_frames,
    )


def take_fault(faults: list[Fault], method: str, path: str,
               model: str | None = None) -> Fault | None:
    """Consume one use of the first registered fault matching the request, if any."""
    for fault in faults:
        if fault.matches(method, path, model):
            fault.hits += 1
            if fault.times > 0:
                fault.times -= 1
            if fault.times == 0:
                faults.remove(fault)
            return fault
    return None
