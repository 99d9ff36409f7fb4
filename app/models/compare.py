"""Schemas of the A/B comparison: its query and its answer."""
from __future__ import annotations

from marshmallow import Schema, fields, validate

from app.models.metrics import MetricsQuerySchema
from app.models.text import Name
from app.services.ab_statistics import VERDICTS

COMPARE_BY = ("prompt_variant", "skill_version", "model", "executor")
"""The record fields two arms may differ by."""


class CompareQuerySchema(MetricsQuerySchema):
    """Which records make each arm: those whose ``by`` field is ``a`` or ``b``, created
    within the last ``window_days`` days, of ``task_type`` if given."""

    by = Name(required=True, validate=validate.OneOf(COMPARE_BY))
    a = Name(required=True, validate=validate.Length(min=1))
    b = Name(required=True, validate=validate.Length(min=1))
    task_type = Name()


class ComparePageQuerySchema(CompareQuerySchema):
    """The page's: without both arms it shows the form alone."""

    by = Name(load_default=COMPARE_BY[0], validate=validate.OneOf(COMPARE_BY))
    a = Name()
    b = Name()


def _nullable_float(description: str) -> fields.Float:
    return fields.Float(required=True, allow_none=True, metadata={"description": description})


class ArmSchema(Schema):
    value = fields.String(required=True)
    n = fields.Integer(required=True, metadata={"description": "Tasks of the arm."})
    completed = fields.Integer(required=True)
    failed = fields.Integer(required=True)
    success_rate = fields.Float(required=True, metadata={
        "description": "completed / n, unrounded; 0.0 without tasks."})
    success_rate_ci95 = fields.List(fields.Float(), required=True, allow_none=True, metadata={
        "description": "[low, high]: the 95% Wilson score interval; null without tasks."})
    p50_seconds = fields.Float(required=True, metadata={
        "description": "Nearest-rank, as GET /metrics; 0 without tasks."})
    p95_seconds = fields.Float(required=True)
    avg_cost_usd = _nullable_float("The mean of the known costs; null when none is known.")
    n_with_cost = fields.Integer(required=True)


class DifferenceSchema(Schema):
    delta = _nullable_float("b minus a; null when an arm has nothing to compare.")
    p_value = _nullable_float(
        "Two-sided; null when an arm has fewer than 2 values, or every value is the same.")


class DifferencesSchema(Schema):
    success_rate = fields.Nested(DifferenceSchema, required=True, metadata={
        "description": "p-value: Fisher's exact test."})
    p50_seconds = fields.Nested(DifferenceSchema, required=True, metadata={
        "description": "p-value: Mann-Whitney U test on the durations (tie-corrected)."})
    avg_cost_usd = fields.Nested(DifferenceSchema, required=True, metadata={
        "description": "p-value: Welch's t-test on the known costs."})


def _verdict() -> fields.String:
    return fields.String(required=True, validate=validate.OneOf(VERDICTS))


class VerdictSchema(Schema):
    """At the 5% level: higher success, lower duration and lower cost are better."""

    success = _verdict()
    duration = _verdict()
    cost = _verdict()


class ComparisonSchema(Schema):
    by = fields.String(required=True)
    task_type = fields.String(required=True, allow_none=True)
    window_days = fields.Integer(required=True)
    a = fields.Nested(ArmSchema, required=True)
    b = fields.Nested(ArmSchema, required=True)
    difference = fields.Nested(DifferencesSchema, required=True)
    verdict = fields.Nested(VerdictSchema, required=True)
