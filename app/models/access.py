"""What ``GET /api/whoami`` answers."""
from __future__ import annotations

from marshmallow import Schema, fields, validate

from app.access.roles import ROLES


class WhoAmISchema(Schema):
    name = fields.String(allow_none=True, required=True, metadata={
        "description": "The token's name; null when the service has no token configured."})
    role = fields.String(required=True, validate=validate.OneOf(ROLES))
