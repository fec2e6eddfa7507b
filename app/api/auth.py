"""Bearer-key authentication for the API blueprints."""
from __future__ import annotations

from flask import Blueprint, current_app, g, request

from app import logutils
from app.models import Principal
from app.security.apikeys import authenticate
from app.services import Services


def services() -> Services:
    return current_app.extensions["ipaas"]


def protect(bp: Blueprint) -> None:
    """Require a valid API key on every route of the blueprint (CORS preflights excepted)."""

    @bp.before_request
    def require_key() -> None:
        if request.method == "OPTIONS":
            return
        g.principal = authenticate(services().store, request.headers.get("Authorization"))
        logutils.add(tenant_id=g.principal.tenant_id, user_id=g.principal.user_id)


def principal() -> Principal:
    return g.principal
