"""Bounds of the task API that the service enforces and the runner keeps to.

The service's schemas (``app.models.agent``) refuse what is beyond them, and the runner
cuts what it sends to fit, so both read them from here. Nothing is imported: the runner
is installed without the service's dependencies.
"""

MIN_LEASE_SECONDS, MAX_LEASE_SECONDS, DEFAULT_LEASE_SECONDS = 5, 3600, 300
"""How long a claim may hold without a heartbeat, and how long it holds when not said."""
MAX_DIRECTION_CHARS = 64 * 1024
"""The longest direction; also the longest ``decision_prompt`` and ``decision``."""
MAX_STEP_CHARS = 500
"""The longest ``current_step``."""
MAX_DELAY_SECONDS = 1e8
"""The longest retry delay the service takes (about three years): now plus this stays a
valid date."""
MAX_LOG_APPEND_CHARS = 256 * 1024
"""The most output one PATCH may add to a task's log (``log_append``)."""
