"""A corpus of real sender payloads (tests/senders/) posted through a real gunicorn with each sender's
own signature scheme and content type, rendered through a template into a real receiver; and what
gunicorn does with a header named with underscores."""
from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Callable, Iterator
from urllib.parse import urlencode

import pytest
import stripe
from slack_sdk.signature import SignatureVerifier

from app.security.signatures import sign_github, sign_shopify
from tests.receiver import Receiver
from tests.serverproc import CliUser, GunicornServer, create_user

CORPUS = Path(__file__).parent / "senders"
SECRETS = {"github": "gh-webhook-secret", "stripe": "whsec_stripeEndpointSecret0123456789",
           "slack": "8f742231b10e8888abcd99yyyzzz85a5", "shopify": "shpss_client_secret_0123"}
FORM = "application/x-www-form-urlencoded"


class Stack:
    def __init__(self, server: GunicornServer, user: CliUser, receiver: Receiver):
        self.server, self.user, self.receiver = server, user, receiver

    def workflow(self, scheme: str, text: str, path: str) -> str:
        response = self.server.request("POST", "/api/workflows", headers=self.user.auth, body={
            "name": f"{scheme} sender", "trigger_type": "webhook", "action_type": "http_request",
            "secret": SECRETS[scheme], "signature_scheme": scheme,
            "config": {"url": self.receiver.url(path), "body": {"text": text}}})
        assert response.status == 201, response.body
        return response.json()["id"]


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Iterator[Stack]:
    tmp_path = tmp_path_factory.mktemp("senders")
    user = create_user(tmp_path, "ops@acme.example", "acme")
    with Receiver() as receiver, GunicornServer({"IPAAS_ALLOW_PRIVATE_NETWORKS": "true"}, tmp_path) as server:
        yield Stack(server, user, receiver)


def corpus(name: str) -> bytes:
    return (CORPUS / name).read_bytes()


def github(body: bytes, event: str, content_type: str = "application/json") -> dict[str, str]:
    return {"Content-Type": content_type, "X-GitHub-Event": event, "X-GitHub-Delivery": str(uuid.uuid4()),
            "X-Hub-Signature-256": sign_github(SECRETS["github"], body), "User-Agent": "GitHub-Hookshot/a5788b1"}


def stripe_headers(body: bytes) -> dict[str, str]:
    header = stripe.WebhookSignature.generate_signature_header(body.decode(), SECRETS["stripe"])
    return {"Content-Type": "application/json; charset=utf-8", "Stripe-Signature": header,
            "User-Agent": "Stripe/1.0 (+https://stripe.com/docs/webhooks)"}


def slack(body: bytes, content_type: str) -> dict[str, str]:
    timestamp = str(int(time.time()))
    signature = SignatureVerifier(SECRETS["slack"]).generate_signature(timestamp=timestamp, body=body)
    return {"Content-Type": content_type, "X-Slack-Signature": signature, "X-Slack-Request-Timestamp": timestamp}


def shopify(body: bytes) -> dict[str, str]:
    return {"Content-Type": "application/json", "X-Shopify-Topic": "orders/create",
            "X-Shopify-Hmac-Sha256": sign_shopify(SECRETS["shopify"], body),
            "X-Shopify-Shop-Domain": "example.myshopify.com", "X-Shopify-Webhook-Id": str(uuid.uuid4())}


def as_form(name: str) -> bytes:
    """The body of GitHub's and Slack's form option: payload=<urlencoded JSON>."""
    return urlencode({"payload": json.dumps(json.loads(corpus(name)))}).encode()


PUSH_TEXT = ("{{ payload.repository.full_name }}@{{ payload.after[:7] }} by {{ payload.pusher.name }} "
             "({{ headers['x-github-event'] }}, {{ payload.commits | length }} commit): {{ payload.head_commit.message }}")
PUSH_RENDERED = "octo-org/hello-world@77527b4 by monalisa (push, 1 commit): Fix the café menu: prices in €"
CASES: list[tuple[str, str, Callable[[], tuple[bytes, dict[str, str]]], str, str]] = [
    ("github-push-json", "github", lambda: (corpus("github_push.json"), github(corpus("github_push.json"), "push")),
     PUSH_TEXT, PUSH_RENDERED),
    ("github-push-form", "github", lambda: (as_form("github_push.json"), github(as_form("github_push.json"), "push", FORM)),
     PUSH_TEXT, PUSH_RENDERED),
    ("github-issues", "github", lambda: (corpus("github_issues.json"), github(corpus("github_issues.json"), "issues")),
     "{{ payload.action }} #{{ payload.issue.number }} {{ payload.issue.title }} [{{ payload.issue.labels[0].name }}]"
     " locked={{ payload.issue.locked }} milestone={{ payload.issue.milestone }}",
     "opened #1347 Found a bug [bug] locked=false milestone=null"),
    ("stripe-event", "stripe", lambda: (corpus("stripe_event.json"), stripe_headers(corpus("stripe_event.json"))),
     "{{ payload.type }}: {{ payload.data.object.amount / 100 }} {{ payload.data.object.currency | upper }} "
     "for order {{ payload.data.object.metadata.order_id }}",
     "payment_intent.succeeded: 20.0 EUR for order 1042"),
    ("slack-event", "slack", lambda: (corpus("slack_event.json"), slack(corpus("slack_event.json"), "application/json")),
     "{{ payload.event.type }} in {{ payload.event.channel }}: {{ payload.event.text }}",
     "app_mention in C0LAN2Q65: <@U0LAN0Z89> is it everything a river should be?"),
    ("slack-interactivity", "slack", lambda: (as_form("slack_interactivity.json"),
                                              slack(as_form("slack_interactivity.json"), FORM)),
     "{{ payload.actions[0].value }} {{ payload.actions[0].text.text | lower }}d by {{ payload.user.username }}",
     "deploy-1042 approved by river.song"),
    ("shopify-order", "shopify", lambda: (corpus("shopify_order.json"), shopify(corpus("shopify_order.json"))),
     "{{ payload.name }}: {{ payload.line_items | length }} items ({{ payload.line_items | map(attribute='sku') "
     "| join(', ') }}) = {{ payload.total_price }} {{ payload.currency }}; {{ headers['x-shopify-topic'] }}",
     "#1234: 2 items (SKU2006-001, SKU2006-020) = 403.00 USD; orders/create"),
]


@pytest.mark.parametrize("case, scheme, make, template, rendered", CASES, ids=[c[0] for c in CASES])
def test_sender_payload_is_verified_and_rendered(stack, case, scheme, make, template, rendered):
    workflow_id = stack.workflow(scheme, template, f"/{case}")
    body, headers = make()
    response = stack.server.request("POST", f"/api/webhooks/{workflow_id}?wait=10", body=body, headers=headers)
    assert response.status == 200, response.body
    assert response.json()["status"] == "succeeded"
    [delivered] = stack.receiver.requests(f"/{case}")
    assert delivered.json() == {"text": rendered}
    tampered = stack.server.request("POST", f"/api/webhooks/{workflow_id}", body=body + b" ", headers=headers)
    assert tampered.status == 401


@pytest.mark.parametrize("case, scheme, make", [(c[0], c[1], c[2]) for c in CASES if c[1] != "slack"],
                         ids=[c[0] for c in CASES if c[1] != "slack"])
def test_sender_redelivery_runs_nothing_twice(stack, case, scheme, make):
    workflow_id = stack.workflow(scheme, "{{ execution.id }}", f"/again-{case}")
    body, headers = make()
    first = stack.server.request("POST", f"/api/webhooks/{workflow_id}?wait=10", body=body, headers=headers)
    again = stack.server.request("POST", f"/api/webhooks/{workflow_id}?wait=10", body=body, headers=headers)
    assert first.status == 200 and again.status == 202
    assert again.json()["execution_id"] == first.json()["id"]
    assert len(stack.receiver.requests(f"/again-{case}")) == 1


@pytest.mark.parametrize("name", ["X_Event_Type", "x_github_event", "Idempotency_Key"])
def test_header_with_underscores_is_refused_by_gunicorn(stack, name):
    """gunicorn's header_map = "refuse" (gunicorn.conf.py): a 400 instead of a header lost silently."""
    response = stack.server.request("POST", "/api/webhooks/wf_unknown", body={}, headers={name: "push"})
    assert response.status == 400 and b"Invalid HTTP header name" in response.body


def test_header_with_dashes_still_reaches_templates(stack):
    workflow_id = stack.workflow("github", "{{ headers['x-event-type'] }}", "/dashes")
    body = b'{"a": 1}'
    headers = {"X-Event-Type": "push", "X-Hub-Signature-256": sign_github(SECRETS["github"], body),
               "Content-Type": "application/json"}
    response = stack.server.request("POST", f"/api/webhooks/{workflow_id}?wait=10", body=body, headers=headers)
    assert response.status == 200 and stack.receiver.requests("/dashes")[0].json() == {"text": "push"}
