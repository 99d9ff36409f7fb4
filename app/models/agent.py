"""Schemas of the task API and of the routing file."""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import orjson
from marshmallow import Schema, ValidationError, fields, validate, validates, validates_schema

from app.api_limits import (
    DEFAULT_LEASE_SECONDS,
    MAX_DELAY_SECONDS,
    MAX_DIRECTION_CHARS,
    MAX_LEASE_SECONDS,
    MAX_LOG_APPEND_CHARS,
    MAX_STEP_CHARS,
    MIN_LEASE_SECONDS,
)
from app.models.text import MAX_NAME_CHARS, JsonObject, Name, Text

MAX_OUTPUT_CHARS = 256 * 1024
MAX_CONTEXT_BYTES = 64 * 1024
TASK_TYPES = ("spec", "test", "impl", "review", "heal")
MAX_DURATION_SECONDS = 1e8
"""About three years: longer is a wrong clock or a typo, and it keeps sums in int64."""
STATUSES = ("pending", "running", "needs_decision", "completed", "failed", "cancelled")
"""Every status; new ones go last (the JSONL store keeps a status as its index here)."""
ENDED_STATUSES = ("completed", "failed", "cancelled")
"""Statuses a task never leaves; only ``completed`` and ``failed`` leave a metric record."""
MIN_PRIORITY, MAX_PRIORITY = -100, 100
MAX_ATTEMPTS_LIMIT = 20
"""The most claims a task (or a routing entry) may allow."""
MAX_CANCEL_REASON_CHARS = 500
LAST_ERROR_CHARS = 4000
TOKEN_FIELDS = ("input_tokens", "output_tokens", "cache_read_input_tokens",
                "cache_creation_input_tokens")
"""The token counts a usage report may give, in the order records list them."""
MAX_TOKENS = 2 ** 53
"""The most tokens of a kind a report may give: exact as a float, and within bigint."""
MAX_COST_USD = 1e9
LABEL_CONTEXT_FIELDS = ("prompt_variant", "skill_version")
"""Context fields a task's metric record carries: strings of 1 to MAX_NAME_CHARS."""


def is_record_label(value: Any) -> bool:
    """Whether a metric record may carry ``value`` as a label of its own
    (``prompt_variant``, ``skill_version``, ``executor``)."""
    return isinstance(value, str) and 1 <= len(value) <= MAX_NAME_CHARS


def _not_blank(value: str) -> None:
    if not value.strip():
        raise ValidationError("Must not be blank.")


class StrictBoolean(fields.Boolean):
    """A JSON ``true`` or ``false``: not ``1``, ``"yes"`` or ``"true"``."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> bool:
        if not isinstance(value, bool):
            raise self.make_error("invalid", input=value)
        return value


class StrictFloat(fields.Float):
    """A JSON number: not a string holding one (nor ``true`` or ``false``, which
    marshmallow's numbers refuse already)."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        if isinstance(value, str):
            raise self.make_error("invalid", input=value)
        return super()._deserialize(value, attr, data, **kwargs)


class UtcDateTime(fields.AwareDateTime):
    """An ISO 8601 date and time with its offset (one without is refused), loaded as the
    same moment in UTC."""

    def _deserialize(self, value: Any, attr: str | None, data: Any,
                     **kwargs: Any) -> datetime:
        moment = super()._deserialize(value, attr, data, **kwargs)
        try:
            return moment.astimezone(timezone.utc)
        except OverflowError as exc:  # 0001-01-01T00:00+01:00 is no moment of UTC
            raise ValidationError("Not a date and time that UTC can hold.") from exc


def _priority(description: str, **kwargs: Any) -> fields.Integer:
    return fields.Integer(strict=True, validate=validate.Range(min=MIN_PRIORITY,
                                                               max=MAX_PRIORITY),
                          metadata={"description": description}, **kwargs)


def _max_attempts(description: str) -> fields.Integer:
    return fields.Integer(strict=True, validate=validate.Range(min=1, max=MAX_ATTEMPTS_LIMIT),
                          metadata={"description": description})


def _delay_seconds(description: str, *, zero: bool) -> StrictFloat:
    """Seconds to wait, up to :data:`MAX_DELAY_SECONDS`; ``zero``: no wait at all too."""
    return StrictFloat(validate=validate.Range(min=0, max=MAX_DELAY_SECONDS,
                                               min_inclusive=zero),
                       allow_nan=False, metadata={"description": description})


class TaskCreateSchema(Schema):
    direction = Text(
        required=True, validate=[_not_blank, validate.Length(max=MAX_DIRECTION_CHARS)]
    )
    task_type = Name(required=True, validate=validate.OneOf(TASK_TYPES))
    # A field named like marshmallow's own Schema.context attribute, hence the ignore.
    context = JsonObject(  # type: ignore[assignment]
        load_default=dict,
        metadata={"description": f"At most {MAX_CONTEXT_BYTES} bytes as compact JSON."},
    )
    priority = _priority("Claims take the highest priority first, then the oldest task.",
                         load_default=0)
    max_attempts = _max_attempts("How many times the task may be claimed (default: its "
                                 "routing entry's max_attempts, else AGENT_MAX_ATTEMPTS).")
    run_after = UtcDateTime(metadata={"description": "Not claimed before then (ISO 8601 "
                                                     "with its offset)."})

    @validates("context")
    def _model_override(self, context: dict[str, Any], **_: Any) -> None:
        override = context.get("model_override")
        if override is not None and not (isinstance(override, str) and override.strip()):
            raise ValidationError("model_override must be a non-empty string.")

    @validates("context")
    def _record_labels(self, context: dict[str, Any], **_: Any) -> None:
        for name in LABEL_CONTEXT_FIELDS:
            if name in context and not is_record_label(context[name]):
                raise ValidationError(f"{name} must be a string of 1 to {MAX_NAME_CHARS} "
                                      "characters.")

    @validates("context")
    def _context_size(self, context: dict[str, Any], **_: Any) -> None:
        try:
            size = len(orjson.dumps(context))
        except orjson.JSONEncodeError as exc:
            raise ValidationError(f"context cannot be stored as JSON: {exc}") from exc
        if size > MAX_CONTEXT_BYTES:
            raise ValidationError(f"context must be at most {MAX_CONTEXT_BYTES} bytes as JSON.")


class UsageSchema(Schema):
    """What a run used, as its runner measured it; each field optional."""

    input_tokens = fields.Integer(strict=True, validate=validate.Range(min=0, max=MAX_TOKENS))
    output_tokens = fields.Integer(strict=True, validate=validate.Range(min=0, max=MAX_TOKENS))
    cache_read_input_tokens = fields.Integer(strict=True,
                                             validate=validate.Range(min=0, max=MAX_TOKENS))
    cache_creation_input_tokens = fields.Integer(
        strict=True, validate=validate.Range(min=0, max=MAX_TOKENS))
    cost_usd = StrictFloat(validate=validate.Range(min=0, max=MAX_COST_USD), allow_nan=False,
                           metadata={"description": "What the run cost, in USD (without it, "
                                                    "the routing file's prices may tell)."})


RUNNER_ID = Name(validate=[_not_blank, validate.Length(max=MAX_NAME_CHARS)], metadata={
    "description": "Who claims: a runner names itself (host, pid and a random part)."})


class TaskPatchSchema(Schema):
    """A status change, a heartbeat of the runner holding the task (``runner_id``
    without ``status``), progress, or a decision; at least one field."""

    status = Name(validate=validate.OneOf(STATUSES))
    runner_id = RUNNER_ID
    output = Text(allow_none=True, validate=validate.Length(max=MAX_OUTPUT_CHARS))
    duration_seconds = StrictFloat(
        validate=validate.Range(min=0, max=MAX_DURATION_SECONDS), allow_nan=False
    )
    progress_pct = StrictFloat(validate=validate.Range(min=0, max=100), allow_nan=False)
    current_step = Text(validate=validate.Length(max=MAX_STEP_CHARS))
    decision_prompt = Text(validate=[_not_blank, validate.Length(max=MAX_DIRECTION_CHARS)],
                           metadata={"description": "Required to go needs_decision."})
    decision = Text(validate=validate.Length(max=MAX_DIRECTION_CHARS), metadata={
        "description": "Answers a task that needs_decision; it goes back to pending."})
    log_append = Text(validate=validate.Length(max=MAX_LOG_APPEND_CHARS), metadata={
        "description": "Output since the runner's last PATCH, added to the task's log."})
    retryable = StrictBoolean(metadata={
        "description": "With a runner's failed report: the failure is worth retrying; the "
                       "task goes back to pending while attempts remain."})
    retry_after_seconds = _delay_seconds(
        "With retryable: wait this long before the task may be claimed again (default: "
        "the routing entry's backoff).", zero=True)
    priority = _priority("A person changes the priority of a pending task (without status, "
                         "runner_id or decision).")
    usage = fields.Nested(UsageSchema, metadata={
        "description": "With the report that ends the task: what its run used."})
    executor = Name(validate=validate.Length(min=1, max=MAX_NAME_CHARS), metadata={
        "description": "With the report that ends the task: what ran it."})

    @validates_schema
    def _says_something(self, data: dict[str, Any], **_: Any) -> None:
        if not data:
            raise ValidationError("An empty PATCH changes nothing.")

    @validates_schema
    def _retry_in_a_failed_report(self, data: dict[str, Any], **_: Any) -> None:
        if data.get("retryable") and (data.get("status") != "failed"
                                      or "runner_id" not in data):
            raise ValidationError("retryable goes with a runner's report of status failed.",
                                  "retryable")
        if "retry_after_seconds" in data and not data.get("retryable"):
            raise ValidationError("retry_after_seconds goes with retryable: true.",
                                  "retry_after_seconds")

    @validates_schema
    def _usage_at_the_end(self, data: dict[str, Any], **_: Any) -> None:
        for name in ("usage", "executor"):
            if name in data and data.get("status") not in ENDED_STATUSES:
                raise ValidationError(f"{name} goes with the status that ends the task "
                                      f"({', '.join(ENDED_STATUSES)}).", name)

    @validates_schema
    def _priority_alone(self, data: dict[str, Any], **_: Any) -> None:
        if "priority" in data and {"status", "runner_id", "decision"} & set(data):
            raise ValidationError("priority is changed by a person, without status, "
                                  "runner_id or decision.", "priority")


class TaskCancelSchema(Schema):
    reason = Text(validate=validate.Length(max=MAX_CANCEL_REASON_CHARS),
                  metadata={"description": "Kept on the task as cancel_reason."})


class TaskClaimSchema(Schema):
    runner_id = Name(required=True, validate=RUNNER_ID.validators, metadata=RUNNER_ID.metadata)
    task_types = fields.List(Name(validate=validate.OneOf(TASK_TYPES)), metadata={
        "description": "Claim only tasks of these types (default: any)."})
    lease_seconds = fields.Integer(
        strict=True, load_default=DEFAULT_LEASE_SECONDS,
        validate=validate.Range(min=MIN_LEASE_SECONDS, max=MAX_LEASE_SECONDS),
        metadata={"description": "How long the claim holds without a heartbeat."})


class TaskSchema(Schema):
    id = fields.String(required=True)
    direction = fields.String(required=True)
    task_type = fields.String(required=True)
    status = fields.String(required=True)
    model = fields.String(required=True)
    command = fields.String(required=True)
    context = fields.Dict(required=True)  # type: ignore[assignment]
    output = fields.String(allow_none=True)
    created_at = fields.String(required=True)
    updated_at = fields.String(required=True)
    started_at = fields.String(allow_none=True)
    duration_seconds = fields.Float(allow_none=True)
    runner_id = fields.String(allow_none=True, dump_default=None)
    lease_expires_at = fields.String(allow_none=True, dump_default=None)
    attempts = fields.Integer(dump_default=0)
    progress_pct = fields.Float(allow_none=True, dump_default=None)
    current_step = fields.String(allow_none=True, dump_default=None)
    decision_prompt = fields.String(allow_none=True, dump_default=None)
    decision = fields.String(allow_none=True, dump_default=None)
    priority = fields.Integer(required=True)
    run_after = fields.String(allow_none=True, required=True, metadata={
        "description": "Not claimed before then (null: at once)."})
    max_attempts = fields.Integer(required=True, metadata={
        "description": "How many times it may be claimed."})
    last_error = fields.String(allow_none=True, dump_default=None, metadata={
        "description": f"The last {LAST_ERROR_CHARS} characters of the output of its last "
                       "failed attempt."})
    cancel_requested = fields.Boolean(dump_default=False, metadata={
        "description": "A person asked to cancel it while it runs: its runner stops it and "
                       "reports cancelled."})
    cancel_reason = fields.String(allow_none=True, dump_default=None)
    rerun_of = fields.String(allow_none=True, dump_default=None, metadata={
        "description": "The task this one runs again."})
    created_by = fields.String(allow_none=True, dump_default=None, metadata={
        "description": "The name of the token that created the task (null without one)."})
    decided_by = fields.String(allow_none=True, dump_default=None, metadata={
        "description": "The name of the token that answered its last decision."})
    cancelled_by = fields.String(allow_none=True, dump_default=None, metadata={
        "description": "The name of the token that cancelled it."})
    usage = fields.Nested(UsageSchema, allow_none=True, dump_default=None, metadata={
        "description": "What its run used, as the report that ended it said (null: unknown)."})
    executor = fields.String(allow_none=True, dump_default=None, metadata={
        "description": "What ran it, as the report that ended it said (null: unknown)."})


class TaskLogSchema(Schema):
    task_id = fields.String(required=True)
    log = fields.String(required=True, metadata={
        "description": "What runners sent of the output so far: at most the last MiB."})
    command = fields.String(required=True)
    output = fields.String(allow_none=True, required=True)


DIRECTION_PREVIEW_CHARS = 200


class TaskSummarySchema(Schema):
    """A task in a list: no ``output``, ``command`` or ``context``, and the direction's
    beginning only, so that a list of 500 tasks stays small; ``GET /tasks/<id>`` has it
    all."""

    id = fields.String(required=True)
    direction_preview = fields.Function(
        lambda task: task["direction"][:DIRECTION_PREVIEW_CHARS], required=True,
        metadata={"description": f"The first {DIRECTION_PREVIEW_CHARS} characters of "
                                 "the direction."})
    task_type = fields.String(required=True)
    status = fields.String(required=True)
    model = fields.String(required=True)
    created_at = fields.String(required=True)
    updated_at = fields.String(required=True)
    started_at = fields.String(allow_none=True)
    duration_seconds = fields.Float(allow_none=True)
    priority = fields.Integer(required=True)
    run_after = fields.String(allow_none=True, required=True)


class TaskListSchema(Schema):
    tasks = fields.List(fields.Nested(TaskSummarySchema), required=True)
    total = fields.Integer(required=True)


class TaskCountSchema(Schema):
    total = fields.Integer(required=True)
    by_status = fields.Dict(keys=fields.String(), values=fields.Integer(), required=True)


ATTENTION_OUTPUT_CHARS = 4000


def _attempts_shown() -> fields.Integer:
    return fields.Integer(required=True, dump_default=0, metadata={
        "description": "How many times it was claimed."})


def _max_attempts_shown() -> fields.Integer:
    return fields.Integer(required=True, metadata={
        "description": "How many times it may be claimed."})


class AttentionTaskSchema(TaskSummarySchema):
    decision_prompt = fields.String(allow_none=True, dump_default=None)
    attempts = _attempts_shown()
    max_attempts = _max_attempts_shown()
    last_error = fields.String(allow_none=True, required=True, dump_default=None, metadata={
        "description": f"The last {LAST_ERROR_CHARS} characters of the output of its last "
                       "failed attempt."})
    output = fields.Function(
        lambda task: None if task.get("output") is None
        else task["output"][-ATTENTION_OUTPUT_CHARS:],
        allow_none=True, metadata={"description": f"The last {ATTENTION_OUTPUT_CHARS} "
                                                  "characters of the output."})


class AttentionQuerySchema(Schema):
    limit = fields.Integer(load_default=20, validate=validate.Range(min=1, max=100))


class AttentionListSchema(Schema):
    tasks = fields.List(fields.Nested(AttentionTaskSchema), required=True)
    total = fields.Integer(required=True)


class RunningTaskSchema(TaskSummarySchema):
    runner_id = fields.String(allow_none=True, dump_default=None)
    lease_expires_at = fields.String(allow_none=True, dump_default=None)
    progress_pct = fields.Float(allow_none=True, dump_default=None)
    current_step = fields.String(allow_none=True, dump_default=None)
    live_tail = fields.List(fields.String(), required=True, metadata={
        "description": "The last 20 lines runners sent of its output."})
    cancel_requested = fields.Boolean(required=True, dump_default=False, metadata={
        "description": "A person asked to cancel it: its runner stops it at its next "
                       "heartbeat."})
    cancel_reason = fields.String(allow_none=True, required=True, dump_default=None)


class WaitingTaskSchema(TaskSummarySchema):
    wait_seconds = fields.Float(required=True, metadata={
        "description": "Seconds since it may be claimed: since it was created, or since "
                       "its run_after if that came later."})


class ScheduledTaskSchema(TaskSummarySchema):
    starts_in_seconds = fields.Float(required=True, metadata={
        "description": "Seconds until its run_after, when it may be claimed."})
    attempts = _attempts_shown()
    max_attempts = _max_attempts_shown()


class QueueCountsSchema(Schema):
    """How many tasks are in each state of the queue, pending split in two."""

    waiting = fields.Integer(required=True, metadata={
        "description": "Pending tasks that may be claimed now."})
    scheduled = fields.Integer(required=True, metadata={
        "description": "Pending tasks whose run_after has not come."})
    running = fields.Integer(required=True)
    needs_decision = fields.Integer(required=True)
    cancelled = fields.Integer(required=True, metadata={
        "description": "Cancelled tasks still kept (compaction drops old ones)."})


class StuckTaskSchema(TaskSummarySchema):
    age_seconds = fields.Float(required=True, metadata={
        "description": "Seconds since it was last updated (running), or since it may be "
                       "claimed (waiting)."})


class RepeatedFailuresSchema(Schema):
    task_type = fields.String(required=True)
    consecutive_failures = fields.Integer(required=True)


class LowSuccessRateSchema(Schema):
    window_days = fields.Integer(required=True)
    rate = fields.Float(required=True)
    total = fields.Integer(required=True)


class PipelineAttentionSchema(Schema):
    stuck = fields.List(fields.Nested(StuckTaskSchema), required=True)
    repeated_failures = fields.List(fields.Nested(RepeatedFailuresSchema), required=True)
    low_success_rate = fields.Nested(LowSuccessRateSchema, allow_none=True, required=True)
    flags = fields.List(fields.String(), required=True)


class PipelineStatusSchema(Schema):
    running = fields.List(fields.Nested(RunningTaskSchema), required=True)
    waiting = fields.List(fields.Nested(WaitingTaskSchema), required=True, metadata={
        "description": "The first 100 pending tasks that may be claimed now, in the order "
                       "claims take them: the highest priority, then the oldest."})
    scheduled = fields.List(fields.Nested(ScheduledTaskSchema), required=True, metadata={
        "description": "The first 100 pending tasks whose run_after has not come, the "
                       "soonest first."})
    queue = fields.Nested(QueueCountsSchema, required=True)
    recent_completed = fields.List(fields.Nested(TaskSummarySchema), required=True)
    attention = fields.Nested(PipelineAttentionSchema, required=True)


class TaskListQuerySchema(Schema):
    status = Name(validate=validate.OneOf(STATUSES))
    task_type = Name(validate=validate.OneOf(TASK_TYPES))
    limit = fields.Integer(load_default=20, validate=validate.Range(min=1, max=500))
    order = Name(
        load_default="newest", validate=validate.OneOf(("newest", "oldest")),
        metadata={"description": "newest (default) or oldest first, by created_at then id"},
    )
    offset = fields.Integer(load_default=0, validate=validate.Range(min=0), metadata={
        "description": "Matches to skip, for the next page."})


class RouteQuerySchema(Schema):
    task_type = Name(required=True, validate=validate.OneOf(TASK_TYPES))


class RouteSchema(Schema):
    task_type = fields.String(required=True)
    model = fields.String(required=True)
    command_template = fields.String(required=True)
    tier = fields.String(required=True)


class RoutingEntrySchema(Schema):
    """One entry of the routing file; fields left out keep their built-in values."""

    model = Name(validate=_not_blank)
    tier = Name(validate=_not_blank)
    command = fields.List(Name(), validate=validate.Length(min=1))
    accepts_end_of_options = fields.Boolean(metadata={
        "description": 'false for a CLI that takes no "--": {direction} may then come '
                       'anywhere, and directions starting with "-" are refused.'})
    max_attempts = _max_attempts("How many times a task of this type may be claimed.")
    backoff_seconds = _delay_seconds("The wait before the first retry of a retryable "
                                     "failure; it doubles with each attempt.", zero=False)
    backoff_max_seconds = _delay_seconds("The longest wait between retries.", zero=False)


def _caps(what: str) -> fields.Dict:
    return fields.Dict(keys=Name(validate=_not_blank),
                       values=fields.Integer(strict=True, validate=validate.Range(min=1)),
                       metadata={"description": f"At most this many tasks of each {what} "
                                                "run at once."})


def _price(kind: str) -> StrictFloat:
    return StrictFloat(validate=validate.Range(min=0, max=MAX_COST_USD), allow_nan=False,
                       metadata={"description": f"USD per million {kind} tokens."})


class ModelPricesSchema(Schema):
    """What a model's tokens cost; a kind left out has no price."""

    input_per_mtok = _price("input")
    output_per_mtok = _price("output")
    cache_read_per_mtok = _price("cache read input")
    cache_creation_per_mtok = _price("cache creation input")


class RoutingLimitsSchema(Schema):
    """How many tasks may run at once, per model and per tier."""

    models = _caps("model")
    tiers = _caps("tier (every model routed with that tier)")


RoutingFileSchema = Schema.from_dict(
    {
        **{task_type: fields.Nested(RoutingEntrySchema) for task_type in TASK_TYPES},
        "models": fields.List(Name(validate=_not_blank), metadata={
            "description": "More models a task may name in context.model_override."}),
        "limits": fields.Nested(RoutingLimitsSchema),
        "prices": fields.Dict(keys=Name(validate=_not_blank),
                              values=fields.Nested(ModelPricesSchema), metadata={
                                  "description": "Token prices by model, for the cost of a "
                                                 "run whose report gives none."}),
    },
    name="RoutingFileSchema",
)
"""The routing file: an entry per task type to override, more known models, how many
tasks may run at once, and token prices."""
