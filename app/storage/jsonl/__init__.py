"""The embedded backend: each store an append-only JSONL file on this machine's disk,
written under a file lock (:mod:`~app.storage.jsonl.log_writer`), followed by every
process without it (:mod:`~app.storage.jsonl.log_reader`), and kept in memory as columns
and rows that checkpoints let a new process resume."""
from app.storage.jsonl.metrics import JsonlMetricStore
from app.storage.jsonl.tasks import JsonlTaskStore

__all__ = ["JsonlMetricStore", "JsonlTaskStore"]
