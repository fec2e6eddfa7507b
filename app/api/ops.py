"""Operations endpoints: liveness, readiness, Prometheus metrics, the OpenAPI document."""
from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources

from flask import Blueprint, Response, jsonify

from app.api.auth import services
from app.metrics import CONTENT_TYPE
from app.store import StoreError

bp = Blueprint("ops", __name__)


@bp.get("/healthz")
def healthz():
    return jsonify({"status": "ok"})


@bp.get("/readyz")
def readyz():
    svc = services()
    checks = {"store": "ok", "engine": "ok"}
    try:
        svc.store.ping()
    except StoreError as error:
        checks["store"] = f"unreachable: {error}"
    if svc.engine is None:
        checks["engine"] = "not running in this process"
    else:
        stats = svc.engine.stats()
        if stats.queue_length + stats.busy >= stats.capacity:
            checks["engine"] = "saturated: queue full"
        checks.update(svc.engine.checks())
    ready = all(value == "ok" for value in checks.values())
    return jsonify({"status": "ready" if ready else "not ready", "checks": checks}), 200 if ready else 503


@bp.get("/metrics")
def metrics():
    if services().engine is not None:
        services().engine.stats()  # distributed mode: brings ipaas_backlog up to date
    return Response(services().metrics.render(), content_type=CONTENT_TYPE)


@bp.get("/openapi.json")
def openapi():
    return Response(_openapi_text(), content_type="application/json")


@lru_cache(maxsize=1)
def _openapi_text() -> str:
    return json.dumps(json.loads(resources.files("app").joinpath("openapi.json").read_text()))
