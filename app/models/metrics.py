"""Schemas of metric records and of the aggregates endpoint."""
from __future__ import annotations

from marshmallow import Schema, fields, validate

FINAL_STATUSES = ("completed", "failed")
MAX_DURATION_SECONDS = 1e8
"""About three years: longer is a wrong clock or a typo, and it keeps sums in int64."""


class TaskMetricRecordSchema(Schema):
    """One line of metrics.jsonl."""

    task_id = fields.String(required=True)
    task_type = fields.String(required=True)
    model = fields.String(required=True)
    duration_seconds = fields.Float(required=True)
    status = fields.String(required=True, validate=validate.OneOf(FINAL_STATUSES))
    created_at = fields.String(required=True, metadata={"format": "date-time"})


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


class TaskTypeBreakdownSchema(Schema):
    count = fields.Integer(required=True)
    completed = fields.Integer(required=True)
    failed = fields.Integer(required=True)
    success_rate = fields.Float(required=True)


class ModelBreakdownSchema(Schema):
    count = fields.Integer(required=True)
    avg_duration = fields.Float(required=True)


class MetricsAggregatesSchema(Schema):
    window_days = fields.Integer(required=True)
    success_rate = fields.Nested(SuccessRateSchema, required=True)
    execution_time = fields.Nested(ExecutionTimeSchema, required=True)
    by_task_type = fields.Dict(
        keys=fields.String(), values=fields.Nested(TaskTypeBreakdownSchema), required=True
    )
    by_model = fields.Dict(
        keys=fields.String(), values=fields.Nested(ModelBreakdownSchema), required=True
    )
