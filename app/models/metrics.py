"""Schemas of metric records and of the aggregates endpoint."""
from __future__ import annotations

from datetime import datetime
from typing import Any

from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from app.clock import parse_iso
from app.models.agent import ENDED_STATUSES, STATUSES, TOKEN_FIELDS
from app.models.text import Name

FINAL_STATUSES = ("completed", "failed")
"""The statuses a metric record holds."""
RECORD_FIELDS = ("task_id", "task_type", "model", "duration_seconds", "status", "created_at")
"""What every metric record holds."""
OPTIONAL_RECORD_FIELDS = ("attempts", "wait_seconds", *TOKEN_FIELDS, "cost_usd",
                          "prompt_variant", "skill_version", "executor")
"""What a metric record may also hold, each absent when unknown; new ones go last."""
QUEUE_STATUSES = tuple(status for status in STATUSES if status not in ENDED_STATUSES)
BUCKETS = ("hour", "day")
EXPORT_FORMATS = ("jsonl", "csv")


class TaskMetricRecordSchema(Schema):
    """One line of metrics.jsonl; the fields after ``created_at`` are absent when
    unknown."""

    task_id = fields.String(required=True)
    task_type = fields.String(required=True)
    model = fields.String(required=True)
    duration_seconds = fields.Float(required=True)
    status = fields.String(required=True, validate=validate.OneOf(FINAL_STATUSES))
    created_at = fields.String(required=True, metadata={"format": "date-time"})
    attempts = fields.Integer(metadata={"description": "How many times the task was claimed."})
    wait_seconds = fields.Float(metadata={
        "description": "Seconds from the task's creation to its first claim."})
    input_tokens = fields.Integer()
    output_tokens = fields.Integer()
    cache_read_input_tokens = fields.Integer()
    cache_creation_input_tokens = fields.Integer()
    cost_usd = fields.Float(metadata={
        "description": "The cost its report gave, else the one the routing file's prices "
                       "give for its tokens."})
    prompt_variant = fields.String(metadata={"description": "The task's context.prompt_variant."})
    skill_version = fields.String(metadata={"description": "The task's context.skill_version."})
    executor = fields.String(metadata={"description": "What ran it, as its final report said."})


class MetricsQuerySchema(Schema):
    window_days = fields.Integer(validate=validate.Range(min=1, max=365))


class SuccessRateSchema(Schema):
    completed = fields.Integer(required=True)
    failed = fields.Integer(required=True)
    total = fields.Integer(required=True)
    rate = fields.Float(required=True)


class ExecutionTimeSchema(Schema):
    p50_seconds = fields.Float(required=True)
    p95_seconds = fields.Float(required=True)
    p90_seconds = fields.Float()
    p99_seconds = fields.Float()
    max_seconds = fields.Float()
    count = fields.Integer(metadata={"description": "Durations the percentiles are over."})


def _known_sum(what: str, *, number: bool = False) -> fields.Field:
    """A sum over the records that know it; null when none does."""
    kind = fields.Float if number else fields.Integer
    return kind(required=True, allow_none=True, metadata={
        "description": f"{what} of the records that know it; null when none does."})


class CostAndTokensMixin(Schema):
    cost_usd = _known_sum("The cost in USD", number=True)
    input_tokens = _known_sum("The input tokens")
    output_tokens = _known_sum("The output tokens")


class TaskTypeBreakdownSchema(CostAndTokensMixin):
    count = fields.Integer(required=True)
    completed = fields.Integer(required=True)
    failed = fields.Integer(required=True)
    success_rate = fields.Float(required=True)


class ModelBreakdownSchema(CostAndTokensMixin):
    count = fields.Integer(required=True)
    avg_duration = fields.Float(required=True)


class LabelBreakdownSchema(Schema):
    """One prompt variant, skill version or executor in the window."""

    count = fields.Integer(required=True)
    completed = fields.Integer(required=True)
    failed = fields.Integer(required=True)
    success_rate = fields.Float(required=True)
    p50_seconds = fields.Float(required=True)
    avg_duration = fields.Float(required=True)
    cost_usd = _known_sum("The cost in USD", number=True)


class UsageTotalsSchema(Schema):
    tasks_with_usage = fields.Integer(required=True, metadata={
        "description": "Records that carry any token count or a cost."})
    input_tokens = _known_sum("The input tokens")
    output_tokens = _known_sum("The output tokens")
    cache_read_input_tokens = _known_sum("The cache-read input tokens")
    cache_creation_input_tokens = _known_sum("The cache-creation input tokens")
    cost_usd = _known_sum("The cost in USD", number=True)
    cost_per_completed_task = fields.Float(required=True, allow_none=True, metadata={
        "description": "cost_usd divided by the completed tasks of the window (failed "
                       "tasks cost too); null without a known cost or a completed task."})


class QueueWaitSchema(Schema):
    """Seconds from creation to first claim, of the records that know it."""

    p50_seconds = fields.Float(required=True, allow_none=True)
    p95_seconds = fields.Float(required=True, allow_none=True)
    count = fields.Integer(required=True)


def _breakdown(schema: type[Schema]) -> fields.Dict:
    return fields.Dict(keys=fields.String(), values=fields.Nested(schema), required=True)


class MetricsAggregatesSchema(Schema):
    window_days = fields.Integer(required=True)
    success_rate = fields.Nested(SuccessRateSchema, required=True)
    execution_time = fields.Nested(ExecutionTimeSchema, required=True)
    by_task_type = _breakdown(TaskTypeBreakdownSchema)
    by_model = _breakdown(ModelBreakdownSchema)
    usage = fields.Nested(UsageTotalsSchema, required=True)
    queue_wait = fields.Nested(QueueWaitSchema, required=True)
    by_prompt_variant = _breakdown(LabelBreakdownSchema)
    by_skill_version = _breakdown(LabelBreakdownSchema)
    by_executor = _breakdown(LabelBreakdownSchema)


class TimeseriesQuerySchema(MetricsQuerySchema):
    bucket = Name(validate=validate.OneOf(BUCKETS))


class TimeseriesPointSchema(CostAndTokensMixin):
    start = fields.String(required=True, metadata={"format": "date-time"})
    completed = fields.Integer(required=True)
    failed = fields.Integer(required=True)
    p50_seconds = fields.Float(required=True)
    p95_seconds = fields.Float(required=True)


class TimeseriesSchema(Schema):
    bucket = fields.String(required=True)
    window_days = fields.Integer(required=True)
    series = fields.List(fields.Nested(TimeseriesPointSchema), required=True)


class IsoDateTime(fields.Field):
    """An ISO 8601 date or datetime, read like the store reads ``created_at``: a
    moment without an offset is UTC."""

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> datetime:
        try:
            return parse_iso(value)
        except (TypeError, ValueError) as exc:
            raise ValidationError("Not an ISO 8601 date or datetime.") from exc


class RecordsQuerySchema(Schema):
    """Filters of the raw-record export; ``since`` inclusive, ``until`` exclusive."""

    format = Name(load_default="jsonl", validate=validate.OneOf(EXPORT_FORMATS))
    since = IsoDateTime()
    until = IsoDateTime()
    task_type = Name()
    model = Name()
    status = Name(validate=validate.OneOf(FINAL_STATUSES))

    @validates_schema
    def _ordered(self, data: dict[str, Any], **_: Any) -> None:
        if "since" in data and "until" in data and data["since"] > data["until"]:
            raise ValidationError("since must not be later than until.", "until")
