"""File-locked append-only JSONL stores."""
from app.storage.jsonl_log import Batch, Chunk, JsonlLog, LogReader, StoreUnavailable

__all__ = ["Batch", "Chunk", "JsonlLog", "LogReader", "StoreUnavailable"]
