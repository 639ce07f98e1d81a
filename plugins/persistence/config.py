"""The persistence plugin's settings and the options object built from them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from proxy.settings import Setting, Settings

SPOOL_POLICIES = ("reject", "accept")


def declared() -> list[Setting]:
    """Every setting of the persistence plugin."""
    return [
        Setting("persistence.chat_content", "bool", False,
                "Also store the request and response content of chat, FIM and agent "
                "completions in usage_log (conversations are always stored in full).",
                deprecated_env=("SIDECAR_PERSIST_CHAT_CONTENT",)),
        Setting("persistence.batch_size", "int", 500,
                "Records written to the database per transaction.",
                deprecated_env=("SIDECAR_PERSIST_BATCH_SIZE",), minimum=1),
        Setting("persistence.flush_interval_seconds", "float", 0.2,
                "Longest a record waits before the background writer sends it.",
                deprecated_env=("SIDECAR_PERSIST_FLUSH_INTERVAL_SECONDS",), minimum=0.001),
        Setting("persistence.queue_max_records", "int", 20000,
                "Records awaiting the database that are kept in memory; beyond this they "
                "are read back from the spool file when their turn comes.",
                deprecated_env=("SIDECAR_PERSIST_QUEUE_SIZE",), minimum=1),
        Setting("persistence.write_timeout_seconds", "float", 10.0,
                "Longest one batch may take to commit before the database counts as down.",
                deprecated_env=("SIDECAR_PERSIST_WRITE_TIMEOUT_SECONDS",), minimum=0.01),
        Setting("persistence.retry_max_seconds", "float", 5.0,
                "Longest pause between write attempts while the database is down.",
                deprecated_env=("SIDECAR_PERSIST_RETRY_MAX_SECONDS",), minimum=0.01),
        Setting("persistence.shutdown_flush_seconds", "float", 10.0,
                "On SIGTERM, how long to keep writing to the database before leaving the "
                "rest in the spool for the next start.",
                deprecated_env=("SIDECAR_PERSIST_SHUTDOWN_FLUSH_SECONDS",), minimum=0),
        Setting("persistence.spool_max_bytes", "int", 1024 ** 3,
                "Size of the spool (records not yet in the database) at which the "
                "spool-full policy applies.", deprecated_env=("SIDECAR_SPOOL_MAX_BYTES",),
                minimum=1),
        Setting("persistence.spool_full_policy", "str", "reject",
                "With a full spool: 'reject' answers requests that would be recorded with 503 "
                "and Retry-After; 'accept' serves them and keeps their records in memory "
                "only (dropped beyond the queue size).",
                deprecated_env=("SIDECAR_SPOOL_FULL_POLICY",), choices=SPOOL_POLICIES),
        Setting("persistence.spool_retry_after_seconds", "int", 30,
                "Retry-After sent with the 503 of a full spool.",
                deprecated_env=("SIDECAR_SPOOL_RETRY_AFTER_SECONDS",), minimum=1),
        Setting("persistence.spool_segment_bytes", "int", 8 * 1024 ** 2,
                "Size at which the spool starts a new file (written files are deleted once "
                "the database has their records).",
                deprecated_env=("SIDECAR_SPOOL_SEGMENT_BYTES",), minimum=1024),
        Setting("persistence.retention_days", "int", 0,
                "Delete conversations idle, usage rows older and deleted agents older than "
                "this many days; 0 keeps everything.",
                deprecated_env=("SIDECAR_RETENTION_DAYS",), minimum=0),
        Setting("persistence.retention_interval_seconds", "float", 3600.0,
                "How often the retention purge runs.",
                deprecated_env=("SIDECAR_RETENTION_INTERVAL_SECONDS",), minimum=1),
    ]


@dataclass(frozen=True)
class Options:
    """Resolved options of the write-behind pipeline and the retention purge."""

    spool_dir: Path
    rejected_path: Path
    chat_content: bool = False
    batch_size: int = 500
    flush_interval: float = 0.2
    max_memory_records: int = 20000
    write_timeout: float = 10.0
    retry_max: float = 5.0
    shutdown_flush: float = 10.0
    spool_max_bytes: int = 1024 ** 3
    spool_full_policy: str = "reject"
    retry_after: int = 30
    segment_bytes: int = 8 * 1024 ** 2
    retention_days: int = 0
    retention_interval: float = 3600.0

    @classmethod
    def from_settings(cls, settings: Settings) -> Options:
        """Options from the resolved settings; the spool lives under ``SIDECAR_SERVER_DATA_DIR``."""
        data = Path(settings["server.data_dir"]) / "spool"
        return cls(
            spool_dir=data / "persistence",
            rejected_path=data / "persistence-rejected.jsonl",
            chat_content=bool(settings["persistence.chat_content"]),
            batch_size=int(settings["persistence.batch_size"]),
            flush_interval=float(settings["persistence.flush_interval_seconds"]),
            max_memory_records=int(settings["persistence.queue_max_records"]),
            write_timeout=float(settings["persistence.write_timeout_seconds"]),
            retry_max=float(settings["persistence.retry_max_seconds"]),
            shutdown_flush=float(settings["persistence.shutdown_flush_seconds"]),
            spool_max_bytes=int(settings["persistence.spool_max_bytes"]),
            spool_full_policy=str(settings["persistence.spool_full_policy"]),
            retry_after=int(settings["persistence.spool_retry_after_seconds"]),
            segment_bytes=int(settings["persistence.spool_segment_bytes"]),
            retention_days=int(settings["persistence.retention_days"]),
            retention_interval=float(settings["persistence.retention_interval_seconds"]),
        )
