"""File-locked append-only JSONL stores."""
from app.storage.jsonl_log import Batch, JsonlLog, LogReader, StoreUnavailable

__all__ = ["Batch", "JsonlLog", "LogReader", "StoreUnavailable"]
