"""Every error leaves the API as JSON: ``{"detail": ...}`` (and ``"errors"`` for fields)."""
from __future__ import annotations

import logging

from flask import Flask, Response, jsonify
from flask.typing import ResponseReturnValue
from marshmallow import ValidationError
from werkzeug.exceptions import HTTPException, InternalServerError

from app.services.routing import RoutingError
from app.services.task_service import IllegalTransition, InvalidTask, TaskNotFound
from app.storage.stores import StoreUnavailable

log = logging.getLogger(__name__)


def error_response(status: int, detail: str, **extra: object) -> tuple[Response, int]:
    return jsonify({"detail": detail, **extra}), status


def _http_error(exc: HTTPException) -> ResponseReturnValue:
    """The error as JSON, keeping its headers (``Allow`` on a 405, for one)."""
    body, status = error_response(exc.code or 500, exc.description or exc.name)
    headers = [(name, value) for name, value in exc.get_headers() if name != "Content-Type"]
    return body, status, headers


def _validation_error(exc: ValidationError) -> ResponseReturnValue:
    errors = exc.messages if isinstance(exc.messages, dict) else {"_schema": exc.messages}
    return error_response(422, "Invalid request.", errors=errors)


def _invalid_task(exc: InvalidTask) -> ResponseReturnValue:
    return error_response(422, "Invalid request.", errors={exc.field: [str(exc)]})


def _unexpected(exc: Exception) -> ResponseReturnValue:
    if isinstance(exc, HTTPException):
        return _http_error(exc)
    log.exception("unhandled error")
    return error_response(500, InternalServerError.description)


def register_error_handlers(app: Flask) -> None:
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(ValidationError, _validation_error)
    app.register_error_handler(TaskNotFound, lambda exc: error_response(404, str(exc)))
    app.register_error_handler(IllegalTransition, lambda exc: error_response(409, str(exc)))
    app.register_error_handler(InvalidTask, _invalid_task)
    app.register_error_handler(StoreUnavailable, lambda exc: error_response(503, str(exc)))
    app.register_error_handler(RoutingError, lambda exc: error_response(503, str(exc)))
    app.register_error_handler(Exception, _unexpected)
