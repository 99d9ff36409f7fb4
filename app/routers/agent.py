"""The ``agent`` blueprint: parse with schemas, call a service, serialize."""
from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, request, stream_with_context
from flask.typing import ResponseReturnValue

from app.access.callers import current_caller
from app.models.agent import (
    AttentionListSchema,
    AttentionQuerySchema,
    PipelineStatusSchema,
    RouteQuerySchema,
    RouteSchema,
    TaskCancelSchema,
    TaskClaimSchema,
    TaskCountSchema,
    TaskCreateSchema,
    TaskListQuerySchema,
    TaskListSchema,
    TaskLogSchema,
    TaskPatchSchema,
    TaskSchema,
)
from app.models.metrics import (
    MetricsAggregatesSchema,
    MetricsQuerySchema,
    RecordsQuerySchema,
    TimeseriesSchema,
)
from app.routers.common import json_body, request_body, schema, services, timeseries_query
from app.services import pipeline_status, record_export
from app.services.metrics_series import service_timeseries
from app.services.task_retries import Retry
from app.services.task_service import Progress

bp = Blueprint("agent", __name__, url_prefix="/api/agent")


@bp.post("/tasks")
def create_task() -> ResponseReturnValue:
    fields = schema(TaskCreateSchema).load(json_body())
    task = services().tasks.create(**fields, by=current_caller().name)
    return schema(TaskSchema).dump(task), 201


@bp.get("/tasks")
def list_tasks() -> ResponseReturnValue:
    query = schema(TaskListQuerySchema).load(request.args)
    tasks, total = services().tasks.list_tasks(**query)
    return schema(TaskListSchema).dump({"tasks": tasks, "total": total})


@bp.get("/tasks/count")
def count_tasks() -> ResponseReturnValue:
    return schema(TaskCountSchema).dump(pipeline_status.counts(services().tasks))


@bp.get("/tasks/attention")
def tasks_needing_attention() -> ResponseReturnValue:
    query = schema(AttentionQuerySchema).load(request.args)
    return schema(AttentionListSchema).dump(pipeline_status.attention(services().tasks, **query))


@bp.get("/pipeline-status")
def pipeline() -> ResponseReturnValue:
    return schema(PipelineStatusSchema).dump(
        pipeline_status.pipeline_status(services().tasks, services().metrics))


@bp.post("/tasks/claim")
def claim_task() -> ResponseReturnValue:
    fields = schema(TaskClaimSchema).load(json_body())
    current_caller().check_runner(fields["runner_id"])
    task = services().tasks.claim(**fields)
    return ("", 204) if task is None else schema(TaskSchema).dump(task)


@bp.get("/tasks/<task_id>")
def get_task(task_id: str) -> ResponseReturnValue:
    task = services().tasks.get(task_id)
    current_caller().check_holds(task.get("runner_id"))
    return schema(TaskSchema).dump(task)


@bp.patch("/tasks/<task_id>")
def update_task(task_id: str) -> ResponseReturnValue:
    return schema(TaskSchema).dump(_patch(task_id, schema(TaskPatchSchema).load(json_body())))


def _patch(task_id: str, body: dict[str, Any]) -> dict[str, Any]:
    """The change the body asks for: a decision answers the task; a runner's PATCH is a
    heartbeat (no status), a start (running) or a report (another status); a person's
    moves the task (a status) or edits its progress (and a pending task's priority)."""
    tasks, progress, caller = services().tasks, Progress.of(body), current_caller()
    status, runner_id = body.get("status"), body.get("runner_id")
    duration = body.get("duration_seconds")
    if "decision" in body or runner_id is None:
        caller.check_person()
    if "decision" in body:
        return tasks.answer(task_id, body["decision"], progress, status=status,
                            runner_id=runner_id, by=caller.name)
    if runner_id is None:
        return (tasks.edit(task_id, progress, body.get("priority")) if status is None
                else tasks.transition(task_id, status, progress, duration))
    caller.check_runner(runner_id)
    if status is None:
        return tasks.heartbeat(task_id, runner_id, progress, held_only=caller.holds_only)
    if status == "running":
        return tasks.start(task_id, runner_id, progress, held_only=caller.holds_only)
    return tasks.report(task_id, runner_id, status, progress, duration, Retry.of(body),
                        held_only=caller.holds_only)


@bp.post("/tasks/<task_id>/cancel")
def cancel_task(task_id: str) -> ResponseReturnValue:
    body = schema(TaskCancelSchema).load(json_body() if request_body() else {})
    return schema(TaskSchema).dump(services().tasks.cancel(task_id, body.get("reason"),
                                                           by=current_caller().name))


@bp.post("/tasks/<task_id>/rerun")
def rerun_task(task_id: str) -> ResponseReturnValue:
    return schema(TaskSchema).dump(services().tasks.rerun(task_id,
                                                          by=current_caller().name)), 201


@bp.get("/tasks/<task_id>/log")
def task_log(task_id: str) -> ResponseReturnValue:
    return schema(TaskLogSchema).dump(services().tasks.task_log(task_id))


@bp.get("/route")
def route() -> ResponseReturnValue:
    query = schema(RouteQuerySchema).load(request.args)
    chosen = services().tasks.route(query["task_type"])
    return schema(RouteSchema).dump({
        "task_type": chosen.task_type,
        "model": chosen.model,
        "command_template": chosen.command_template(),
        "tier": chosen.tier,
    })


@bp.get("/metrics")
def metrics() -> ResponseReturnValue:
    query = schema(MetricsQuerySchema).load(request.args)
    aggregates = services().metrics.get_aggregates(query.get("window_days"))
    return schema(MetricsAggregatesSchema).dump(aggregates)


@bp.get("/metrics/timeseries")
def metrics_timeseries() -> ResponseReturnValue:
    window_days, bucket = timeseries_query()
    series = service_timeseries(services().metrics, window_days, bucket)
    return schema(TimeseriesSchema).dump(
        {"bucket": bucket, "window_days": window_days, "series": series}
    )


@bp.get("/metrics/records")
def metrics_records() -> ResponseReturnValue:
    filters = schema(RecordsQuerySchema).load(request.args)
    file_format = filters.pop("format")
    chunks = record_export.export(services().metrics, file_format, **filters)
    return Response(
        stream_with_context(chunks),
        content_type=record_export.MEDIA_TYPES[file_format],
        headers={"Content-Disposition": f'attachment; filename="metric-records.{file_format}"'},
    )
