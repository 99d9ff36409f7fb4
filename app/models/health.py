"""The shape of ``GET /api/health``."""
from __future__ import annotations

from marshmallow import Schema, fields


class StoreHealthSchema(Schema):
    path = fields.String(required=True)
    writable = fields.Boolean(required=True)


class HealthSchema(Schema):
    status = fields.String(required=True, metadata={"enum": ["ok", "degraded"]})
    stores = fields.Dict(keys=fields.String(), values=fields.Nested(StoreHealthSchema),
                         metadata={"description": "Each store's location and whether it "
                                   "can be written; shown to tokens that may read (and "
                                   "to everyone when no token is configured)."})
