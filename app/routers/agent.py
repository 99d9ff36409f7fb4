"""The ``agent`` blueprint: parse with schemas, call a service, serialize."""
from __future__ import annotations

from typing import Any

import orjson
from flask import Blueprint, Response, current_app, request, stream_with_context
from flask.typing import ResponseReturnValue
from werkzeug.exceptions import BadRequest, RequestEntityTooLarge

from app.models.agent import (
    RouteQuerySchema,
    RouteSchema,
    TaskCreateSchema,
    TaskListQuerySchema,
    TaskListSchema,
    TaskPatchSchema,
    TaskSchema,
)
from app.models.metrics import (
    MetricsAggregatesSchema,
    MetricsQuerySchema,
    RecordsQuerySchema,
    TimeseriesQuerySchema,
    TimeseriesSchema,
)
from app.services import Services, record_export
from app.services.metrics_series import default_bucket, service_timeseries

bp = Blueprint("agent", __name__, url_prefix="/api/agent")


def services() -> Services:
    return current_app.extensions["agent"]


def request_body() -> bytes:
    """The body, 413 if it is larger than MAX_CONTENT_LENGTH.

    A body without Content-Length (chunked) is cut at the limit by werkzeug without an
    error when it ends exactly there; one more byte from the server's stream tells a
    body that fits from one that was cut.
    """
    data = request.get_data()
    limit = request.max_content_length
    if (
        limit is not None
        and request.content_length is None
        and len(data) >= limit
        and request.environ["wsgi.input"].read(1)
    ):
        raise RequestEntityTooLarge()
    return data


def json_body() -> Any:
    """The request body as JSON whatever its content type (400 if it is not JSON).

    Parsed strictly (no NaN, no lone surrogates), as the stores will write it back.
    """
    try:
        return orjson.loads(request_body())
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"Malformed JSON body: {exc}") from exc


@bp.post("/tasks")
def create_task() -> ResponseReturnValue:
    fields = TaskCreateSchema().load(json_body())
    task = services().tasks.create(**fields)
    return TaskSchema().dump(task), 201


@bp.get("/tasks")
def list_tasks() -> ResponseReturnValue:
    query = TaskListQuerySchema().load(request.args)
    tasks, total = services().tasks.list_tasks(**query)
    return TaskListSchema().dump({"tasks": tasks, "total": total})


@bp.get("/tasks/<task_id>")
def get_task(task_id: str) -> ResponseReturnValue:
    return TaskSchema().dump(services().tasks.get(task_id))


@bp.patch("/tasks/<task_id>")
def update_task(task_id: str) -> ResponseReturnValue:
    fields = TaskPatchSchema().load(json_body())
    task = services().tasks.transition(task_id, **fields)
    return TaskSchema().dump(task)


@bp.get("/route")
def route() -> ResponseReturnValue:
    query = RouteQuerySchema().load(request.args)
    chosen = services().tasks.route(query["task_type"])
    return RouteSchema().dump({
        "task_type": chosen.task_type,
        "model": chosen.model,
        "command_template": chosen.command_template(),
        "tier": chosen.tier,
    })


@bp.get("/metrics")
def metrics() -> ResponseReturnValue:
    query = MetricsQuerySchema().load(request.args)
    aggregates = services().metrics.get_aggregates(query.get("window_days"))
    return MetricsAggregatesSchema().dump(aggregates)


def timeseries_query() -> tuple[int, str]:
    """``window_days`` and ``bucket`` from the query string, defaults filled in."""
    query = TimeseriesQuerySchema().load(request.args)
    window_days = query.get("window_days") or services().metrics.window_days
    return window_days, query.get("bucket", default_bucket(window_days))


@bp.get("/metrics/timeseries")
def metrics_timeseries() -> ResponseReturnValue:
    window_days, bucket = timeseries_query()
    series = service_timeseries(services().metrics, window_days, bucket)
    return TimeseriesSchema().dump(
        {"bucket": bucket, "window_days": window_days, "series": series}
    )


@bp.get("/metrics/records")
def metrics_records() -> ResponseReturnValue:
    filters = RecordsQuerySchema().load(request.args)
    file_format = filters.pop("format")
    chunks = record_export.export(services().metrics, file_format, **filters)
    return Response(
        stream_with_context(chunks),
        content_type=record_export.MEDIA_TYPES[file_format],
        headers={"Content-Disposition": f'attachment; filename="metric-records.{file_format}"'},
    )
