"""The OpenAPI 3 document, generated from the marshmallow schemas.

:data:`OPERATIONS` names each view function (its endpoint, ``blueprint.function``) with
what it takes and returns; :func:`build_document` walks the app's URL rules and
describes each through that entry. A new endpoint is documented by adding one entry;
a test fails for any URL rule without one.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from flask import Flask
from marshmallow import Schema
from werkzeug.routing import Rule

from app.models.access import WhoAmISchema
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
from app.models.compare import ComparePageQuerySchema, CompareQuerySchema, ComparisonSchema
from app.models.errors import ErrorSchema
from app.models.health import HealthSchema
from app.models.metrics import (
    MetricsAggregatesSchema,
    MetricsQuerySchema,
    RecordsQuerySchema,
    TaskMetricRecordSchema,
    TimeseriesQuerySchema,
    TimeseriesSchema,
)

TITLE = "Agent task service"
API_VERSION = "0.1.0"
OPENAPI_VERSION = "3.0.3"
JSON = "application/json"
JSONL = "application/x-ndjson"
CSV = "text/csv"
SECURITY_SCHEME = "bearerAuth"
RULE_ARGUMENT = re.compile(r"<(?:[^<>:]+:)?([^<>]+)>")

ERROR_MEANINGS = {
    400: "Malformed JSON body, or a Host header not in AGENT_ALLOWED_HOSTS.",
    401: "Missing or wrong bearer token (only when tokens are configured).",
    403: "The token's role may not do this (the detail names the role needed), or a run "
         "token used a runner id not under its name.",
    404: "No such task.",
    409: "The task cannot go to that status (or be cancelled, or run again, now).",
    413: "Request body larger than the limit.",
    415: "A request body not sent as Content-Type: application/json.",
    422: "Invalid fields or query parameters, or a task id no task can have (more than "
         "200 characters, or a NUL).",
    503: "A store cannot be written (folder not writable, disk full).",
}

PATH_PARAMETERS: dict[str, dict[str, Any]] = {
    "task_id": {"type": "string", "pattern": "^[0-9a-f]{32}$",
                "description": "A task id as returned on creation."},
}


@dataclass(frozen=True)
class Operation:
    """How one view function is documented.

    ``response`` is a schema for JSON; for other media types leave it None and set
    ``media_types`` (e.g. ``("text/plain",)``). ``errors`` are the status codes it may answer
    besides ``status``, each with an :class:`ErrorSchema` body (400, for a Host not
    allowed, is added to every operation, and 401 unless ``public``). ``empty`` are other
    successful answers without a body. ``links`` are OpenAPI links from the success
    response. ``body_required`` false: the request may come without a body.
    """

    summary: str
    response: type[Schema] | None = None
    status: int = 200
    media_types: tuple[str, ...] = (JSON,)
    query: type[Schema] | None = None
    body: type[Schema] | None = None
    body_required: bool = True
    errors: tuple[int, ...] = ()
    empty: dict[int, str] = field(default_factory=dict)
    public: bool = False
    links: dict[str, dict[str, Any]] = field(default_factory=dict)


def _task_links() -> dict[str, dict[str, Any]]:
    parameters = {"task_id": "$response.body#/id"}
    return {
        "GetTask": {"operationId": "agent.get_task", "parameters": parameters},
        "UpdateTask": {"operationId": "agent.update_task", "parameters": parameters},
        "CancelTask": {"operationId": "agent.cancel_task", "parameters": parameters},
        "RerunTask": {"operationId": "agent.rerun_task", "parameters": parameters},
    }


OPERATIONS: dict[str, Operation] = {
    "agent.create_task": Operation(
        "Create a task", TaskSchema, status=201, body=TaskCreateSchema,
        errors=(400, 413, 415, 422, 503), links=_task_links(),
    ),
    "agent.list_tasks": Operation(
        "List tasks, newest first, as summaries (GET /tasks/{task_id} has the whole task)",
        TaskListSchema, query=TaskListQuerySchema, errors=(422,),
    ),
    "agent.claim_task": Operation(
        "Claim the next pending task under a lease: the highest priority, then the oldest, "
        "whose run_after has come and whose model and tier are under their caps (204 when "
        "there is none)", TaskSchema,
        body=TaskClaimSchema, errors=(413, 415, 422, 503),
        empty={204: "No task may be claimed now."}, links=_task_links(),
    ),
    "agent.cancel_task": Operation(
        "Cancel a task: pending or needs_decision at once; running, by asking its runner "
        "to stop (cancel_requested)", TaskSchema, body=TaskCancelSchema, body_required=False,
        errors=(404, 409, 413, 415, 422, 503), links=_task_links(),
    ),
    "agent.rerun_task": Operation(
        "Run an ended task again: a new pending task with its direction, task type, "
        "context and priority", TaskSchema, status=201, errors=(404, 409, 422, 503),
        links=_task_links(),
    ),
    "agent.get_task": Operation("One task", TaskSchema, errors=(404, 422)),
    "agent.count_tasks": Operation("How many tasks there are, by status", TaskCountSchema),
    "agent.tasks_needing_attention": Operation(
        "Tasks that need a person (needs_decision, or failed after their last attempt; "
        "never cancelled), newest first",
        AttentionListSchema, query=AttentionQuerySchema, errors=(422,),
    ),
    "agent.pipeline": Operation(
        "Running tasks, pending tasks waiting to run (in claim order) and scheduled, the "
        "queue's counts, recent completions, and what needs attention",
        PipelineStatusSchema,
    ),
    "agent.task_log": Operation(
        "What runners have sent of a task's output so far", TaskLogSchema,
        errors=(404, 422),
    ),
    "agent.update_task": Operation(
        "Change a task: its status (a final status records its metric), a runner's "
        "heartbeat and progress, or a decision", TaskSchema,
        body=TaskPatchSchema, errors=(400, 404, 409, 413, 415, 422, 503),
        links=_task_links(),
    ),
    "agent.route": Operation(
        "The model and command a task type is routed to", RouteSchema,
        query=RouteQuerySchema, errors=(422,),
    ),
    "agent.metrics": Operation(
        "Rolling-window aggregates of task metrics", MetricsAggregatesSchema,
        query=MetricsQuerySchema, errors=(422,),
    ),
    "agent.metrics_timeseries": Operation(
        "Finished tasks and p50/p95 per UTC hour or day of the window", TimeseriesSchema,
        query=TimeseriesQuerySchema, errors=(422,),
    ),
    "agent.metrics_records": Operation(
        "The raw metric records, filtered, as JSON Lines or CSV (streamed): each JSON line,"
        " and each CSV row under its header, is a TaskMetricRecord",
        media_types=(JSONL, CSV), query=RecordsQuerySchema, errors=(422,),
    ),
    "compare.metrics_compare": Operation(
        "A/B comparison of two arms of the window's records (by prompt_variant, "
        "skill_version, model or executor): success, durations and costs, each with a "
        "two-sided p-value and a verdict at 5%", ComparisonSchema,
        query=CompareQuerySchema, errors=(422,),
    ),
    "prometheus.scrape": Operation(
        "Task counters, duration histograms and queue gauges for Prometheus",
        media_types=("text/plain",),
    ),
    "dashboard.dashboard": Operation(
        "The dashboard page", media_types=("text/html",), query=TimeseriesQuerySchema,
        errors=(422,),
    ),
    "dashboard.compare": Operation(
        "The A/B comparison page (without both arms, its form alone)",
        media_types=("text/html",), query=ComparePageQuerySchema, errors=(422,),
    ),
    "system.health": Operation(
        "Whether the service can write its stores (where they are, to a token that may "
        "read)", HealthSchema, public=True,
    ),
    "access.whoami": Operation("The name and role of the caller's token", WhoAmISchema),
    "system.openapi": Operation("This document", public=True),
}


def openapi_path(rule: Rule) -> str:
    """A Flask rule as an OpenAPI path: ``/tasks/<task_id>`` -> ``/tasks/{task_id}``."""
    return RULE_ARGUMENT.sub(r"{\1}", rule.rule)


def _describe(endpoint: str, operation: Operation, rule: Rule) -> dict[str, Any]:
    success: dict[str, Any] = {
        "description": operation.summary,
        "content": {
            media_type: {"schema": operation.response
                         or {"type": "object" if media_type == JSON else "string"}}
            for media_type in operation.media_types
        },
    }
    if operation.links:
        success["links"] = operation.links
    errors = set(operation.errors) | {400} | (set() if operation.public else {401, 403})
    responses: dict[str, Any] = {str(operation.status): success}
    responses.update({str(status): {"description": meaning}
                      for status, meaning in operation.empty.items()})
    for status in sorted(errors):
        responses[str(status)] = {
            "description": ERROR_MEANINGS[status],
            "content": {JSON: {"schema": ErrorSchema}},
        }
    parameters: list[dict[str, Any]] = [
        {"in": "path", "name": name, "required": True,
         "schema": PATH_PARAMETERS.get(name, {"type": "string"})}
        for name in sorted(rule.arguments)
    ]
    if operation.query is not None:
        parameters.append({"in": "query", "schema": operation.query})
    described: dict[str, Any] = {
        "operationId": endpoint,
        "summary": operation.summary,
        "parameters": parameters,
        "responses": responses,
    }
    if operation.body is not None:
        described["requestBody"] = {
            "required": operation.body_required, "content": {JSON: {"schema": operation.body}},
        }
    if operation.public:
        described["security"] = []
    return described


def build_document(app: Flask) -> dict[str, Any]:
    """The OpenAPI document of every documented URL rule of ``app``."""
    spec = APISpec(TITLE, API_VERSION, OPENAPI_VERSION, plugins=[MarshmallowPlugin()],
                   security=[{SECURITY_SCHEME: []}])
    spec.components.security_scheme(SECURITY_SCHEME, {"type": "http", "scheme": "bearer"})
    spec.components.schema("TaskMetricRecord", schema=TaskMetricRecordSchema)
    paths: dict[str, dict[str, Any]] = {}
    for rule in sorted(app.url_map.iter_rules(), key=lambda rule: rule.rule):
        operation = OPERATIONS.get(rule.endpoint)
        if operation is None:
            continue
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            paths.setdefault(openapi_path(rule), {})[method.lower()] = _describe(
                rule.endpoint, operation, rule
            )
    for path, operations in paths.items():
        spec.path(path=path, operations=operations)
    return spec.to_dict()


def openapi_document(app: Flask) -> dict[str, Any]:
    """The document, built once per app."""
    if "openapi" not in app.extensions:
        app.extensions["openapi"] = build_document(app)
    return app.extensions["openapi"]
