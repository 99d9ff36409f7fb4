"""``GET /metrics``: the Prometheus scrape endpoint, in a blueprint of its own."""
from __future__ import annotations

from flask import Blueprint, Response, current_app
from flask.blueprints import BlueprintSetupState
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from app.services.prometheus_collector import build_registry

bp = Blueprint("prometheus", __name__)
REGISTRY_KEY = "prometheus_registry"


@bp.record_once
def _build_registry(state: BlueprintSetupState) -> None:
    state.app.extensions[REGISTRY_KEY] = build_registry(
        state.app.extensions["agent"], state.app.config["AGENT_METRICS_MAX_MODELS"])


@bp.get("/metrics")
def scrape() -> Response:
    body = generate_latest(current_app.extensions[REGISTRY_KEY])
    return Response(body, content_type=CONTENT_TYPE_LATEST)
