"""Schemas of the task API and of the routing file."""
from __future__ import annotations

from typing import Any

import orjson
from marshmallow import Schema, ValidationError, fields, validate, validates, validates_schema

from app.api_limits import (
    DEFAULT_LEASE_SECONDS,
    MAX_DIRECTION_CHARS,
    MAX_LEASE_SECONDS,
    MAX_LOG_APPEND_CHARS,
    MAX_STEP_CHARS,
    MIN_LEASE_SECONDS,
)

MAX_OUTPUT_CHARS = 256 * 1024
MAX_CONTEXT_BYTES = 64 * 1024
TASK_TYPES = ("spec", "test", "impl", "review", "heal")
MAX_DURATION_SECONDS = 1e8
"""About three years: longer is a wrong clock or a typo, and it keeps sums in int64."""
STATUSES = ("pending", "running", "needs_decision", "completed", "failed")


def _not_blank(value: str) -> None:
    if not value.strip():
        raise ValidationError("Must not be blank.")


class TaskCreateSchema(Schema):
    direction = fields.String(
        required=True, validate=[_not_blank, validate.Length(max=MAX_DIRECTION_CHARS)]
    )
    task_type = fields.String(required=True, validate=validate.OneOf(TASK_TYPES))
    # A field named like marshmallow's own Schema.context attribute, hence the ignore.
    context = fields.Dict(  # type: ignore[assignment]
        keys=fields.String(), load_default=dict,
        metadata={"description": f"At most {MAX_CONTEXT_BYTES} bytes as compact JSON."},
    )

    @validates("context")
    def _model_override(self, context: dict[str, Any], **_: Any) -> None:
        override = context.get("model_override")
        if override is not None and not (isinstance(override, str) and override.strip()):
            raise ValidationError("model_override must be a non-empty string.")

    @validates("context")
    def _context_size(self, context: dict[str, Any], **_: Any) -> None:
        try:
            size = len(orjson.dumps(context))
        except orjson.JSONEncodeError as exc:
            raise ValidationError(f"context cannot be stored as JSON: {exc}") from exc
        if size > MAX_CONTEXT_BYTES:
            raise ValidationError(f"context must be at most {MAX_CONTEXT_BYTES} bytes as JSON.")


RUNNER_ID = fields.String(validate=[_not_blank, validate.Length(max=200)], metadata={
    "description": "Who claims: a runner names itself (host, pid and a random part)."})


class TaskPatchSchema(Schema):
    """A status change, a heartbeat of the runner holding the task (``runner_id``
    without ``status``), progress, or a decision; at least one field."""

    status = fields.String(validate=validate.OneOf(STATUSES))
    runner_id = RUNNER_ID
    output = fields.String(allow_none=True, validate=validate.Length(max=MAX_OUTPUT_CHARS))
    duration_seconds = fields.Float(
        validate=validate.Range(min=0, max=MAX_DURATION_SECONDS), allow_nan=False
    )
    progress_pct = fields.Float(validate=validate.Range(min=0, max=100), allow_nan=False)
    current_step = fields.String(validate=validate.Length(max=MAX_STEP_CHARS))
    decision_prompt = fields.String(validate=[_not_blank,
                                              validate.Length(max=MAX_DIRECTION_CHARS)],
                                    metadata={"description": "Required to go needs_decision."})
    decision = fields.String(validate=validate.Length(max=MAX_DIRECTION_CHARS), metadata={
        "description": "Answers a task that needs_decision; it goes back to pending."})
    log_append = fields.String(validate=validate.Length(max=MAX_LOG_APPEND_CHARS), metadata={
        "description": "Output since the runner's last PATCH, added to the task's log."})

    @validates_schema
    def _says_something(self, data: dict[str, Any], **_: Any) -> None:
        if not data:
            raise ValidationError("An empty PATCH changes nothing.")


class TaskClaimSchema(Schema):
    runner_id = fields.String(required=True, validate=[_not_blank, validate.Length(max=200)],
                              metadata=RUNNER_ID.metadata)
    task_types = fields.List(fields.String(validate=validate.OneOf(TASK_TYPES)), metadata={
        "description": "Claim only tasks of these types (default: any)."})
    lease_seconds = fields.Integer(
        load_default=DEFAULT_LEASE_SECONDS,
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


class TaskListSchema(Schema):
    tasks = fields.List(fields.Nested(TaskSummarySchema), required=True)
    total = fields.Integer(required=True)


class TaskCountSchema(Schema):
    total = fields.Integer(required=True)
    by_status = fields.Dict(keys=fields.String(), values=fields.Integer(), required=True)


ATTENTION_OUTPUT_CHARS = 4000


class AttentionTaskSchema(TaskSummarySchema):
    decision_prompt = fields.String(allow_none=True, dump_default=None)
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


class PendingTaskSchema(TaskSummarySchema):
    wait_seconds = fields.Float(required=True)


class StuckTaskSchema(TaskSummarySchema):
    age_seconds = fields.Float(required=True, metadata={
        "description": "Seconds since it was last updated (running) or created (pending)."})


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
    pending = fields.List(fields.Nested(PendingTaskSchema), required=True, metadata={
        "description": "The oldest 100 pending tasks."})
    recent_completed = fields.List(fields.Nested(TaskSummarySchema), required=True)
    attention = fields.Nested(PipelineAttentionSchema, required=True)


class TaskListQuerySchema(Schema):
    status = fields.String(validate=validate.OneOf(STATUSES))
    task_type = fields.String(validate=validate.OneOf(TASK_TYPES))
    limit = fields.Integer(load_default=20, validate=validate.Range(min=1, max=500))
    order = fields.String(
        load_default="newest", validate=validate.OneOf(("newest", "oldest")),
        metadata={"description": "newest (default) or oldest first, by created_at then id"},
    )
    offset = fields.Integer(load_default=0, validate=validate.Range(min=0), metadata={
        "description": "Matches to skip, for the next page."})


class RouteQuerySchema(Schema):
    task_type = fields.String(required=True, validate=validate.OneOf(TASK_TYPES))


class RouteSchema(Schema):
    task_type = fields.String(required=True)
    model = fields.String(required=True)
    command_template = fields.String(required=True)
    tier = fields.String(required=True)


class RoutingEntrySchema(Schema):
    """One entry of the routing file; fields left out keep their built-in values."""

    model = fields.String(validate=_not_blank)
    tier = fields.String(validate=_not_blank)
    command = fields.List(fields.String(), validate=validate.Length(min=1))
    accepts_end_of_options = fields.Boolean(metadata={
        "description": 'false for a CLI that takes no "--": {direction} may then come '
                       'anywhere, and directions starting with "-" are refused.'})


RoutingFileSchema = Schema.from_dict(
    {
        **{task_type: fields.Nested(RoutingEntrySchema) for task_type in TASK_TYPES},
        "models": fields.List(fields.String(validate=_not_blank), metadata={
            "description": "More models a task may name in context.model_override."}),
    },
    name="RoutingFileSchema",
)
"""The routing file: an entry per task type to override, and more known models."""
