"""Per-app in-memory state of the mock upstream."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from .config import MockConfig
from .faults import Fault

REQUEST_LOG_SIZE = 1000


@dataclass
class RequestRecord:
    """One ``/v1`` request as received, updated when its handling ends."""

    seq: int
    method: str
    path: str
    query_string: str
    headers: list[list[str]]
    started_at: float = field(default_factory=time.time)
    body_size: int = 0
    status: int | None = None
    completed: bool = False
    cancelled: bool = False
    fault: str | None = None
    duration_ms: float | None = None

    def to_json(self) -> dict[str, Any]:
        """The record as listed by ``GET /__mock__/requests``."""
        return dataclasses.asdict(self)


@dataclass
class AgentRecord:
    """An agent: its current document and a snapshot per version."""

    current: dict[str, Any]
    versions: dict[int, dict[str, Any]]


@dataclass
class ConversationRecord:
    """A conversation's metadata document and its entries, oldest first."""

    meta: dict[str, Any]
    entries: list[dict[str, Any]]


@dataclass
class FileRecord:
    """An uploaded file: its API document and where its bytes live."""

    meta: dict[str, Any]
    path: Path


@dataclass
class MockState:
    """Everything the mock remembers; one instance per application."""

    initial: MockConfig
    settings: MockConfig
    agents: dict[str, AgentRecord] = field(default_factory=dict)
    conversations: dict[str, ConversationRecord] = field(default_factory=dict)
    files: dict[str, FileRecord] = field(default_factory=dict)
    batch_jobs: dict[str, dict[str, Any]] = field(default_factory=dict)
    faults: list[Fault] = field(default_factory=list)
    requests: deque[RequestRecord] = field(default_factory=lambda: deque(maxlen=REQUEST_LOG_SIZE))
    stats: Counter[str] = field(default_factory=Counter)
    request_seq: int = 0
    upload_dir: Path | None = None
    closing: asyncio.Event = field(default_factory=asyncio.Event)

    @classmethod
    def from_config(cls, config: MockConfig) -> MockState:
        """Fresh state whose run-time settings start as a copy of ``config``."""
        return cls(initial=config, settings=dataclasses.replace(config))

    def reset(self) -> None:
        """Forget all resources, faults, logged requests and run-time setting changes."""
        for record in self.files.values():
            record.path.unlink(missing_ok=True)
        self.agents.clear()
        self.conversations.clear()
        self.files.clear()
        self.batch_jobs.clear()
        self.faults.clear()
        self.requests.clear()
        self.stats.clear()
        self.settings = dataclasses.replace(self.initial)

    def upload_path(self, file_id: str) -> Path:
        """Where the bytes of ``file_id`` are stored (the app must be started)."""
        if self.upload_dir is None:
            raise RuntimeError("mock upstream app is not started: no upload directory")
        return self.upload_dir / file_id


STATE_KEY = web.AppKey("mock_upstream_state", MockState)
