"""The public webhook receiver: verify, record, queue, answer 202 at once (or at the end with ?wait=).

The view is one of two ways in: api/thin.py answers plain POSTs without Flask's request machinery,
calling `accept`, `acknowledgement` and the hooks below as Flask calls them for the view."""
from __future__ import annotations

import logging
import select
import socket
import time
from typing import Any

from flask import Blueprint, Request, Response, current_app, g, jsonify, request

from app import logutils, validation
from app.api.auth import services
from app.api.bodies import collapse, webhook_payload
from app.api.encodings import decode_content
from app.api.requestlog import logged_by_outcome
from app.api.serialize import execution_json
from app.errors import BadRequest, PayloadTooLarge
from app.models import Execution
from app.security.redact import redact_headers
from app.security.signatures import SignatureError, verify_signature

bp = Blueprint("webhooks", __name__, url_prefix="/api/webhooks")
log = logging.getLogger(__name__)
IDEMPOTENCY_KEY_MAX = 255


@bp.before_request
def start_clock() -> None:
    g.webhook_started = time.perf_counter()


@bp.after_request
def count(response: Response) -> Response:
    metrics = services().metrics
    metrics.webhooks_received.labels(status=str(response.status_code)).inc()
    metrics.webhook_ack.observe(time.perf_counter() - g.webhook_started)
    return response


@bp.post("/<workflow_id>")
def receive(workflow_id: str):
    wait = validation.wait_arg(request.args.get("wait"))
    execution, created = accept(request, workflow_id)
    if wait is None or not created:
        return acknowledgement(execution)
    svc = services()
    finished = svc.wait(execution, wait, _sender_hung_up)
    if not finished.status.terminal:
        return jsonify({"execution_id": finished.id, "status": finished.status.value}), 202
    return jsonify(execution_json(finished, svc.steps_of(finished.tenant_id, [finished])[finished.id])), 200


def accept(req: Request, workflow_id: str) -> tuple[Execution, bool]:
    """Verify, decode and record one delivery to the workflow: (its execution, whether this request
    created it rather than repeating an idempotency key). `req` is the view's `request`, or the
    Flask Request that api/thin.py makes from the same environ; an app context must be pushed.

    Raises the AppError of each refusal (400, 401, 404, 413, 415, 429, 503) or StoreError."""
    limit = current_app.config["MAX_PAYLOAD_BYTES"]
    if req.content_length is not None and req.content_length > limit:
        raise PayloadTooLarge(f"body is larger than {limit} bytes")
    svc = services()
    workflow = svc.webhook_workflow(workflow_id)
    logutils.add(tenant_id=workflow.tenant_id, workflow_id=workflow.id)
    raw = _body(req, limit)
    if workflow.secret is not None:
        _verify(req, svc.reveal_secret(workflow), workflow.signature_scheme, raw)
    body = decode_content(raw, req.headers.get("Content-Encoding"), limit)
    payload = webhook_payload(body, req.mimetype, req.mimetype_params)
    execution, created = svc.ingest(workflow, trigger="webhook", payload=payload,
                                    headers=_recorded_headers(req), query=collapse(req.args.lists()),
                                    idempotency_key=_idempotency_key(req, payload))
    if created and svc.engine is not None and svc.engine.logs_outcome_with_request_id:
        logged_by_outcome()
    return execution, created


def _body(req: Request, limit: int) -> bytes:
    """The body, refused (413) past `limit` bytes. Werkzeug refuses a Content-Length over MAX_CONTENT_LENGTH
    (the same limit), but cuts a body without one (chunked) at the limit without a word
    (LimitedStream.readall, werkzeug 3.1), so the server's stream is asked for one byte more."""
    raw = req.get_data(cache=True)
    if req.content_length is None and len(raw) >= limit and req.environ["wsgi.input"].read(1):
        raise PayloadTooLarge(f"body is larger than {limit} bytes")
    return raw


def acknowledgement(execution: Execution) -> Response:
    """202 {"execution_id": ...}: the answer before the execution has run."""
    response = jsonify({"execution_id": execution.id})
    response.status_code = 202
    return response


def _verify(req: Request, secret: str, scheme: str, raw: bytes) -> None:
    try:
        verify_signature(secret, raw, req.headers, now=time.time(), scheme=scheme)
    except SignatureError as error:
        log.warning("webhook signature refused", extra={"data": {"reason": error.message}})
        raise


def _recorded_headers(req: Request) -> dict[str, str]:
    """The request's headers as the execution keeps them: names in lower case (as templates and most
    gateways show them, and as HTTP/2 sends them), secret values redacted."""
    return redact_headers({name.lower(): value for name, value in req.headers.items()})


def _idempotency_key(req: Request, payload: Any) -> str | None:
    """Idempotency-Key, else webhook-id; one that is sent must be 1 to 255 characters (an empty one
    is refused, not taken for no key: the sender believes the request is protected). Without
    either, the sender's own delivery id, so a redelivery from its dashboard runs nothing twice."""
    for header in ("Idempotency-Key", "webhook-id"):
        key = req.headers.get(header)
        if key is not None:
            if not 1 <= len(key) <= IDEMPOTENCY_KEY_MAX:
                raise BadRequest(f"{header} must be 1 to {IDEMPOTENCY_KEY_MAX} characters")
            return key
    return _delivery_id(req, payload)


def _delivery_id(req: Request, payload: Any) -> str | None:
    """GitHub's X-GitHub-Delivery, Shopify's X-Shopify-Webhook-Id, or the top-level `id` of a Stripe
    event (a request carrying Stripe-Signature); one out of bounds is no key rather than a refusal
    (the sender cannot change it)."""
    candidates = [req.headers.get("X-GitHub-Delivery"), req.headers.get("X-Shopify-Webhook-Id")]
    if "Stripe-Signature" in req.headers and isinstance(payload, dict):
        candidates.append(payload.get("id"))
    for key in candidates:
        if isinstance(key, str) and 1 <= len(key) <= IDEMPOTENCY_KEY_MAX:
            return key
    return None


def _sender_hung_up() -> bool:
    """True when the sender closed its connection (gunicorn exposes the client socket)."""
    sock: socket.socket | None = request.environ.get("gunicorn.socket")
    if sock is None:
        return False
    try:
        readable, _, _ = select.select([sock], [], [], 0)
        return bool(readable) and sock.recv(1, socket.MSG_PEEK) == b""
    except (OSError, ValueError):
        return True
