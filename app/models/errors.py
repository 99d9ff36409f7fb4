"""The shape of every error the API returns."""
from __future__ import annotations

from marshmallow import Schema, fields


class ErrorSchema(Schema):
    detail = fields.String(required=True)
    errors = fields.Dict(
        keys=fields.String(),
        metadata={"description": "Per-field messages, when fields failed validation."},
    )
