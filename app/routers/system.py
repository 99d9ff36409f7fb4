"""The ``system`` blueprint: health and the OpenAPI document, open without a token."""
from __future__ import annotations

from flask import Blueprint, current_app
from flask.typing import ResponseReturnValue

from app.access.callers import known_caller
from app.access.roles import READERS
from app.models.health import HealthSchema
from app.openapi import openapi_document
from app.routers.common import schema, services

bp = Blueprint("system", __name__, url_prefix="/api")


@bp.get("/health")
def health() -> ResponseReturnValue:
    """200 while the process serves; ``status`` says whether writes can succeed. Where
    the stores are is told only to a caller whose token may read."""
    stores = {
        name: {"path": path, "writable": writable}
        for name, (path, writable) in services().stores().items()
    }
    healthy = all(store["writable"] for store in stores.values())
    answer: dict[str, object] = {"status": "ok" if healthy else "degraded"}
    caller = known_caller()
    if caller is not None and caller.role in READERS:
        answer["stores"] = stores
    return schema(HealthSchema).dump(answer)


@bp.get("/openapi.json")
def openapi() -> ResponseReturnValue:
    return openapi_document(current_app)
