"""What the blueprints share: the app's services and reading requests."""
from __future__ import annotations

from functools import cache
from typing import Any, TypeVar

import orjson
from flask import current_app, request
from marshmallow import Schema
from werkzeug.exceptions import BadRequest, RequestEntityTooLarge

from app.models.metrics import TimeseriesQuerySchema
from app.services import Services
from app.services.metrics_series import default_bucket

SchemaT = TypeVar("SchemaT", bound=Schema)


@cache
def schema(schema_class: type[SchemaT]) -> SchemaT:
    """The one instance of a schema class the blueprints use: building one takes about a
    millisecond, a tenth of a claim, and loading or dumping keeps nothing in it."""
    return schema_class()


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


def timeseries_query() -> tuple[int, str]:
    """``window_days`` and ``bucket`` from the query string, defaults filled in."""
    query = schema(TimeseriesQuerySchema).load(request.args)
    window_days = query.get("window_days") or services().metrics.window_days
    return window_days, query.get("bucket", default_bucket(window_days))
