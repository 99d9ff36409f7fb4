"""The stores in PostgreSQL, for many API servers on many hosts sharing one database."""
from app.storage.postgres.database import PostgresDatabase, redacted
from app.storage.postgres.metrics import PostgresMetricStore
from app.storage.postgres.tasks import PostgresTaskStore

__all__ = ["PostgresDatabase", "PostgresMetricStore", "PostgresTaskStore", "redacted"]
