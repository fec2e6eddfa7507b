"""Workflows CRUD and manual runs, scoped to the caller's tenant."""
from __future__ import annotations

from flask import Blueprint, jsonify, request

from app import validation
from app.api.auth import principal, protect, services
from app.api.bodies import json_body
from app.api.serialize import page_json, workflow_json

bp = Blueprint("workflows", __name__, url_prefix="/api/workflows")
protect(bp)


@bp.post("")
def create():
    workflow = services().create_workflow(principal(), json_body())
    return jsonify(workflow_json(workflow)), 201


@bp.get("")
def index():
    limit, cursor = validation.page_args(request.args)
    page = services().list_workflows(principal(), limit=limit, cursor=cursor)
    return jsonify(page_json(page, workflow_json))


@bp.get("/<workflow_id>")
def show(workflow_id: str):
    return jsonify(workflow_json(services().get_workflow(principal(), workflow_id)))


@bp.put("/<workflow_id>")
def replace(workflow_id: str):
    workflow = services().update_workflow(principal(), workflow_id, json_body(), partial=False)
    return jsonify(workflow_json(workflow))


@bp.patch("/<workflow_id>")
def patch(workflow_id: str):
    workflow = services().update_workflow(principal(), workflow_id, json_body(), partial=True)
    return jsonify(workflow_json(workflow))


@bp.delete("/<workflow_id>")
def delete(workflow_id: str):
    services().delete_workflow(principal(), workflow_id)
    return "", 204


@bp.post("/<workflow_id>/run")
def run(workflow_id: str):
    execution = services().run_now(principal(), workflow_id, json_body(default={}))
    return jsonify({"execution_id": execution.id}), 202
