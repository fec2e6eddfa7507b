"""Credentials CRUD, scoped to the caller's tenant; `data` is write-only and never leaves through here."""
from __future__ import annotations

from flask import Blueprint, jsonify, request

from app import validation
from app.api.auth import principal, protect, services
from app.api.bodies import json_body
from app.api.serialize import credential_json, page_json

bp = Blueprint("credentials", __name__, url_prefix="/api/credentials")
protect(bp)


@bp.post("")
def create():
    return jsonify(credential_json(services().create_credential(principal(), json_body()))), 201


@bp.get("")
def index():
    limit, cursor = validation.page_args(request.args)
    page = services().list_credentials(principal(), limit=limit, cursor=cursor)
    return jsonify(page_json(page, credential_json))


@bp.get("/<credential_id>")
def show(credential_id: str):
    return jsonify(credential_json(services().get_credential(principal(), credential_id)))


@bp.put("/<credential_id>")
def replace(credential_id: str):
    return jsonify(credential_json(services().update_credential(principal(), credential_id, json_body())))


@bp.delete("/<credential_id>")
def delete(credential_id: str):
    services().delete_credential(principal(), credential_id)
    return "", 204
