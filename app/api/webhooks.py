"""The public webhook receiver: verify, record, queue, answer 202 at once (or at the end with ?wait=)."""
from __future__ import annotations

import logging
import select
import socket
import time
from typing import Any

from flask import Blueprint, Response, current_app, g, jsonify, request

from app import logutils, validation
from app.api.auth import services
from app.api.bodies import collapse, webhook_payload
from app.api.encodings import decode_content
from app.api.requestlog import logged_by_outcome
from app.api.serialize import execution_json
from app.errors import BadRequest, PayloadTooLarge
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
    limit = current_app.config["MAX_PAYLOAD_BYTES"]
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge(f"body is larger than {limit} bytes")
    wait = validation.wait_arg(request.args.get("wait"))
    svc = services()
    workflow = svc.webhook_workflow(workflow_id)
    logutils.add(tenant_id=workflow.tenant_id, workflow_id=workflow.id)
    raw = request.get_data(cache=True)
    if workflow.secret is not None:
        _verify(svc.reveal_secret(workflow), workflow.signature_scheme, raw)
    body = decode_content(raw, request.headers.get("Content-Encoding"), limit)
    payload = webhook_payload(body, request.mimetype, request.mimetype_params)
    execution, created = svc.ingest(workflow, trigger="webhook", payload=payload,
                                    headers=_recorded_headers(),
                                    query=collapse(request.args.lists()), idempotency_key=_idempotency_key(payload))
    if created and svc.engine is not None and svc.engine.logs_outcome_with_request_id:
        logged_by_outcome()
    if wait is None or not created:
        return jsonify({"execution_id": execution.id}), 202
    finished = svc.wait(execution, wait, _sender_hung_up)
    if not finished.status.terminal:
        return jsonify({"execution_id": finished.id, "status": finished.status.value}), 202
    return jsonify(execution_json(finished, svc.steps_of(finished.tenant_id, [finished])[finished.id])), 200


def _verify(secret: str, scheme: str, raw: bytes) -> None:
    try:
        verify_signature(secret, raw, request.headers, now=time.time(), scheme=scheme)
    except SignatureError as error:
        log.warning("webhook signature refused", extra={"data": {"reason": error.message}})
        raise


def _recorded_headers() -> dict[str, str]:
    """The request's headers as the execution keeps them: names in lower case (as templates and most
    gateways show them, and as HTTP/2 sends them), secret values redacted."""
    return redact_headers({name.lower(): value for name, value in request.headers.items()})


def _idempotency_key(payload: Any) -> str | None:
    """Idempotency-Key, else webhook-id; one that is sent must be 1 to 255 characters (an empty one
    is refused, not taken for no key: the sender believes the request is protected). Without
    either, the sender's own delivery id, so a redelivery from its dashboard runs nothing twice."""
    for header in ("Idempotency-Key", "webhook-id"):
        key = request.headers.get(header)
        if key is not None:
            if not 1 <= len(key) <= IDEMPOTENCY_KEY_MAX:
                raise BadRequest(f"{header} must be 1 to {IDEMPOTENCY_KEY_MAX} characters")
            return key
    return _delivery_id(payload)


def _delivery_id(payload: Any) -> str | None:
    """GitHub's X-GitHub-Delivery, Shopify's X-Shopify-Webhook-Id, or the top-level `id` of a Stripe
    event (a request carrying Stripe-Signature); one out of bounds is no key rather than a refusal
    (the sender cannot change it)."""
    candidates = [request.headers.get("X-GitHub-Delivery"), request.headers.get("X-Shopify-Webhook-Id")]
    if "Stripe-Signature" in request.headers and isinstance(payload, dict):
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
