"""The ``compare`` blueprint: an A/B comparison of two arms of the metric records."""
from __future__ import annotations

from flask import Blueprint, request
from flask.typing import ResponseReturnValue

from app.models.compare import CompareQuerySchema, ComparisonSchema
from app.routers.common import schema, services
from app.services.metrics_compare import compare

bp = Blueprint("compare", __name__, url_prefix="/api/agent")


@bp.get("/metrics/compare")
def metrics_compare() -> ResponseReturnValue:
    query = schema(CompareQuerySchema).load(request.args)
    return schema(ComparisonSchema).dump(compare(services().metrics, **query))
