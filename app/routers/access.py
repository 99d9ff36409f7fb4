"""The ``access`` blueprint: who the caller's token says it is."""
from __future__ import annotations

from flask import Blueprint
from flask.typing import ResponseReturnValue

from app.access.callers import current_caller
from app.models.access import WhoAmISchema
from app.routers.common import schema

bp = Blueprint("access", __name__, url_prefix="/api")


@bp.get("/whoami")
def whoami() -> ResponseReturnValue:
    caller = current_caller()
    return schema(WhoAmISchema).dump({"name": caller.name, "role": caller.role})
