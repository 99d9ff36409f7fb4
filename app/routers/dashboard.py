"""The pages for people, server-rendered: ``GET /dashboard``, the metrics with charts
drawn as inline SVG, and ``GET /dashboard/compare``, an A/B comparison."""
from __future__ import annotations

from flask import Blueprint, render_template, request

from app import charts, compare_words
from app.models.agent import AttentionListSchema, PipelineStatusSchema
from app.models.compare import COMPARE_BY, ComparePageQuerySchema
from app.models.metrics import BUCKETS
from app.routers.common import schema, services, timeseries_query
from app.services.metrics_compare import compare as compare_arms
from app.services.metrics_series import service_timeseries
from app.services.pipeline_status import attention, pipeline_status

bp = Blueprint("dashboard", __name__)
WINDOW_CHOICES = (1, 7, 30)
QUEUE_BARS = ("waiting", "scheduled", "running", "needs_decision")
"""The parts of the queue charted; cancelled tasks are counted beside the chart."""
TASKS_SHOWN = 10
"""Rows of each list of tasks on the page."""


@bp.get("/dashboard")
def dashboard() -> str:
    window_days, bucket = timeseries_query()
    metrics, tasks = services().metrics, services().tasks
    series = service_timeseries(metrics, window_days, bucket)
    aggregates = metrics.get_aggregates(window_days)
    pipeline = schema(PipelineStatusSchema).dump(pipeline_status(tasks, metrics))
    return render_template(
        "dashboard.html",
        window_days=window_days,
        bucket=bucket,
        window_choices=sorted({*WINDOW_CHOICES, window_days}),
        bucket_choices=BUCKETS,
        totals=aggregates["success_rate"],
        execution_time=aggregates["execution_time"],
        by_task_type=aggregates["by_task_type"],
        by_model=aggregates["by_model"],
        usage=aggregates["usage"],
        queue_wait=aggregates["queue_wait"],
        finished=charts.finished_chart(series, bucket),
        success=charts.success_chart(series, bucket),
        durations=charts.duration_chart(series, bucket),
        queue=charts.queue_chart(pipeline["queue"], QUEUE_BARS),
        pipeline=pipeline,
        needing=schema(AttentionListSchema).dump(attention(tasks, TASKS_SHOWN)),
        shown=TASKS_SHOWN,
        format_seconds=charts.format_seconds,
        human_seconds=charts.human_seconds,
        human_count=charts.human_count,
        human_dollars=charts.human_dollars,
        format_time=charts.format_time,
        last_line=charts.last_line,
    )


@bp.get("/dashboard/compare")
def compare() -> str:
    """The comparison of arms ``a`` and ``b``; the form alone until both are given."""
    query = schema(ComparePageQuerySchema).load(request.args)
    window_days = query.pop("window_days", None) or services().metrics.window_days
    comparison = None
    if query.get("a") and query.get("b"):
        comparison = compare_arms(services().metrics, window_days=window_days, **query)
    return render_template(
        "compare.html",
        query=query,
        window_days=window_days,
        window_choices=sorted({*WINDOW_CHOICES, window_days}),
        by_choices=COMPARE_BY,
        comparison=comparison,
        findings=compare_words.findings(comparison) if comparison else [],
        warnings=compare_words.warnings(comparison) if comparison else [],
        seconds=compare_words.seconds,
        percent=compare_words.percent,
        points=compare_words.points,
        dollars=compare_words.dollars,
        signed=compare_words.signed,
    )
