"""HTTP layer: blueprints, JSON errors, request ids and access logs, CORS."""
from __future__ import annotations

from flask import Flask
from flask_cors import CORS

from app.api import credentials, errors, executions, ops, requestlog, webhooks, workflows


def register_api(app: Flask) -> None:
    for module in (workflows, executions, webhooks, ops, credentials):
        app.register_blueprint(module.bp)
    errors.init_app(app)
    requestlog.init_app(app)
    origins = [o.strip() for o in app.config["CORS_ORIGINS"].split(",") if o.strip()]
    # Webhook senders are servers, not browsers: no CORS on /api/webhooks/*.
    CORS(app, resources={r"^/api/(?!webhooks(/|$)).*": {"origins": origins}}, supports_credentials=True,
         expose_headers=["X-Request-ID", "Retry-After"])
