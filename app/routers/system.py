"""The ``system`` blueprint: health and the OpenAPI document, open without a token."""
from __future__ import annotations

from flask import Blueprint, current_app
from flask.typing import ResponseReturnValue

from app.models.health import HealthSchema
from app.openapi import openapi_document
from app.routers.common import schema, services

bp = Blueprint("system", __name__, url_prefix="/api")


@bp.get("/health")
def health() -> ResponseReturnValue:
    """200 while the process serves; ``status`` says whether writes can succeed."""
    stores = {
        name: {"path": path, "writable": writable}
        for name, (path, writable) in services().stores().items()
    }
    healthy = all(store["writable"] for store in stores.values())
    return schema(HealthSchema).dump({"status": "ok" if healthy else "degraded", "stores": stores})


@bp.get("/openapi.json")
def openapi() -> ResponseReturnValue:
    return openapi_document(current_app)
