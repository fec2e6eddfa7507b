"""Senders' own signature schemes (Stripe, Slack, Shopify beside Standard Webhooks and GitHub), checked
against the senders' libraries; `signature_scheme`, secrets at save time and delivery ids as
idempotency keys through the Flask test client."""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time

import pytest
import stripe
from slack_sdk.signature import SignatureVerifier

from app.security.signatures import (SignatureError, sign_github, sign_shopify, sign_slack, sign_standard,
                                     sign_stripe, verify_signature)

NOW = 1_700_000_000
BODY = b'{"id": "evt_1", "type": "charge.succeeded", "note": "caf\xc3\xa9"}'
STRIPE_SECRET = "whsec_testStripeSecret0123456789abcdef"
SLACK_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"  # the example secret of Slack's documentation
KEY24 = "whsec_" + base64.b64encode(bytes(range(24))).decode()


class FixedClock:
    def now(self) -> float:
        return NOW


# --- each scheme against its sender's own library ---------------------------------------------------
def test_stripe_signature_from_the_stripe_library_verifies():
    header = stripe.WebhookSignature.generate_signature_header(BODY.decode(), STRIPE_SECRET, timestamp=NOW)
    assert verify_signature(STRIPE_SECRET, BODY, {"Stripe-Signature": header}, now=NOW, scheme="stripe") == "stripe"
    assert verify_signature(STRIPE_SECRET, BODY, {"Stripe-Signature": header}, now=NOW) == "stripe"


def test_sign_stripe_is_accepted_by_the_stripe_library():
    header = sign_stripe(STRIPE_SECRET, int(time.time()), BODY)
    stripe.WebhookSignature.verify_header(BODY, header, STRIPE_SECRET, tolerance=300)


def test_slack_signature_from_slack_sdk_verifies():
    verifier = SignatureVerifier(SLACK_SECRET, clock=FixedClock())
    signature = verifier.generate_signature(timestamp=str(NOW), body=BODY)
    headers = {"X-Slack-Signature": signature, "X-Slack-Request-Timestamp": str(NOW)}
    assert verify_signature(SLACK_SECRET, BODY, headers, now=NOW, scheme="slack") == "slack"
    assert verifier.is_valid(body=BODY, timestamp=str(NOW), signature=sign_slack(SLACK_SECRET, NOW, BODY))


def test_shopify_signature_matches_its_documented_computation():
    # shopify.dev "Verify webhooks": Base64(HMAC-SHA256(client secret, raw body)).
    expected = base64.b64encode(hmac.new(b"shpss_secret", BODY, hashlib.sha256).digest()).decode()
    assert sign_shopify("shpss_secret", BODY) == expected
    headers = {"X-Shopify-Hmac-Sha256": expected}
    assert verify_signature("shpss_secret", BODY, headers, now=NOW, scheme="shopify") == "shopify"


def test_stripe_accepts_any_of_several_v1_signatures_while_a_secret_rolls():
    old = sign_stripe("whsec_old", NOW, BODY).split(",")[1]
    header = f"t={NOW},{old},{sign_stripe(STRIPE_SECRET, NOW, BODY).split(',')[1]},v0=abc"
    assert verify_signature(STRIPE_SECRET, BODY, {"Stripe-Signature": header}, now=NOW) == "stripe"


def test_stripe_keys_with_the_whole_secret_string_not_its_base64():
    decoded_key = base64.b64decode(KEY24.removeprefix("whsec_"))
    digest = hmac.new(decoded_key, f"{NOW}.".encode() + BODY, hashlib.sha256).hexdigest()
    with pytest.raises(SignatureError):
        verify_signature(KEY24, BODY, {"Stripe-Signature": f"t={NOW},v1={digest}"}, now=NOW)


def _stripe(secret=STRIPE_SECRET, ts=NOW, body=BODY):
    return {"Stripe-Signature": sign_stripe(secret, ts, body)}


def _slack(secret=SLACK_SECRET, ts=NOW, body=BODY):
    return {"X-Slack-Signature": sign_slack(secret, ts, body), "X-Slack-Request-Timestamp": str(ts)}


@pytest.mark.parametrize("scheme, secret, headers, reason", [
    ("stripe", STRIPE_SECRET, _stripe(ts=NOW - 301), "timestamp outside tolerance"),
    ("stripe", STRIPE_SECRET, _stripe(secret="whsec_other"), "no matching signature"),
    ("stripe", STRIPE_SECRET, _stripe(body=b"{}"), "no matching signature"),
    ("stripe", STRIPE_SECRET, {"Stripe-Signature": f"t={NOW}"}, "malformed signature header"),
    ("stripe", STRIPE_SECRET, {"Stripe-Signature": "v1=" + "0" * 64}, "malformed signature header"),
    ("stripe", STRIPE_SECRET, {"Stripe-Signature": f"t=+{NOW},v1=" + "0" * 64}, "malformed timestamp"),
    ("slack", SLACK_SECRET, _slack(ts=NOW + 301), "timestamp outside tolerance"),
    ("slack", SLACK_SECRET, _slack(secret="other"), "no matching signature"),
    ("slack", SLACK_SECRET, {"X-Slack-Signature": "v0=" + "0" * 64}, "missing signature"),
    ("slack", SLACK_SECRET, {**_slack(), "X-Slack-Signature": "v1=" + "0" * 64}, "malformed signature header"),
    ("shopify", "shpss", {"X-Shopify-Hmac-Sha256": sign_shopify("other", BODY)}, "no matching signature"),
    ("shopify", "shpss", {"X-Shopify-Hmac-Sha256": "not base64!"}, "malformed signature header"),
    ("shopify", "shpss", {"X-Shopify-Hmac-Sha256": base64.b64encode(b"short").decode()}, "malformed signature header"),
])
def test_sender_schemes_refuse_bad_signatures(scheme, secret, headers, reason):
    for pinned in (scheme, "auto"):
        with pytest.raises(SignatureError) as caught:
            verify_signature(secret, BODY, headers, now=NOW, scheme=pinned)
        assert caught.value.reason == reason and secret not in str(caught.value)


SECRET = "shared-secret-for-every-scheme"


@pytest.mark.parametrize("pinned", ["standard", "github", "stripe", "slack", "shopify"])
@pytest.mark.parametrize("sent, headers", [
    ("standard", {"webhook-id": "msg_1", "webhook-timestamp": str(NOW),
                  "webhook-signature": sign_standard(SECRET, "msg_1", NOW, BODY)}),
    ("github", {"X-Hub-Signature-256": sign_github(SECRET, BODY)}),
    ("stripe", _stripe(secret=SECRET)),
    ("slack", _slack(secret=SECRET)),
    ("shopify", {"X-Shopify-Hmac-Sha256": sign_shopify(SECRET, BODY)}),
])
def test_a_pinned_scheme_accepts_only_its_own_signature(pinned, sent, headers):
    assert verify_signature(SECRET, BODY, headers, now=NOW) == sent
    if pinned == sent:
        assert verify_signature(SECRET, BODY, headers, now=NOW, scheme=pinned) == sent
    else:
        with pytest.raises(SignatureError, match="missing signature"):
            verify_signature(SECRET, BODY, headers, now=NOW, scheme=pinned)


# --- through the API --------------------------------------------------------------------------------
@pytest.fixture
def app(engine_app):
    """Every test here runs executions: conftest's client and account then use the engine's app."""
    return engine_app


def create(client, account, **fields):
    body = {"name": "senders", "trigger_type": "webhook", "action_type": "http_request",
            "config": {"url": "http://127.0.0.1:9/", "timeout": 0.2}, **fields}
    return client.post("/api/workflows", json=body, headers=account.headers)


@pytest.mark.parametrize("scheme", [None, "auto", "standard", "github", "stripe", "slack", "shopify"])
def test_signature_scheme_is_stored_and_returned(client, account, scheme):
    response = create(client, account, **({} if scheme is None else {"signature_scheme": scheme}))
    assert response.status_code == 201
    shown = client.get(f"/api/workflows/{response.get_json()['id']}", headers=account.headers).get_json()
    assert shown["signature_scheme"] == response.get_json()["signature_scheme"] == (scheme or "auto")


def test_signature_scheme_follows_put_and_patch(client, account):
    wf = create(client, account, signature_scheme="slack").get_json()
    url = f"/api/workflows/{wf['id']}"
    patched = client.patch(url, json={"signature_scheme": "shopify"}, headers=account.headers).get_json()
    assert patched["signature_scheme"] == "shopify"
    assert client.patch(url, json={"name": "x"}, headers=account.headers).get_json()["signature_scheme"] == "shopify"
    put = {key: wf[key] for key in ("name", "trigger_type", "action_type", "config")}
    assert client.put(url, json=put, headers=account.headers).get_json()["signature_scheme"] == "auto"


@pytest.mark.parametrize("scheme", ["hmac", "Stripe", "", None, 1, ["github"]])
def test_unknown_signature_scheme_is_422(client, account, scheme):
    response = create(client, account, signature_scheme=scheme)
    assert response.status_code == 422 and response.get_json()["error"]["field"] == "signature_scheme"


@pytest.mark.parametrize("secret", ["s3cret\n", " s3cret", "s3cret ", "\ts3cret", "s3cret\r\n", "whsec_" + "A" * 32 + "\n"])
def test_secret_with_surrounding_whitespace_is_422_without_echoing_it(client, account, secret):
    response = create(client, account, secret=secret)
    error = response.get_json()["error"]
    assert response.status_code == 422 and error["field"] == "secret"
    assert secret.strip() not in response.get_data(as_text=True)


def _whsec(length: int) -> str:
    return "whsec_" + base64.b64encode(b"k" * length).decode()


@pytest.mark.parametrize("secret, scheme, status", [
    ("whsec_AA==", "auto", 422),
    ("whsec_AA==", "standard", 422),
    (_whsec(23), "auto", 422),
    (_whsec(65), "standard", 422),
    ("whsec_not*base64!", "auto", 422),
    (_whsec(24), "auto", 201),
    (_whsec(64), "standard", 201),
    ("whsec_AA==", "stripe", 201),  # Stripe keys with the text: nothing to decode
    ("whsec_AA==", "github", 201),
    ("plain-secret", "standard", 201),
])
def test_whsec_secret_must_decode_to_24_to_64_bytes_under_auto_and_standard(client, account, secret, scheme, status):
    response = create(client, account, secret=secret, signature_scheme=scheme)
    assert response.status_code == status
    if status == 422:
        assert response.get_json()["error"]["field"] == "secret" and secret not in response.get_data(as_text=True)


def test_changing_the_scheme_rechecks_a_stored_whsec_secret(client, account):
    wf = create(client, account, secret="whsec_AA==", signature_scheme="stripe").get_json()
    response = client.patch(f"/api/workflows/{wf['id']}", json={"signature_scheme": "auto"}, headers=account.headers)
    assert response.status_code == 422 and response.get_json()["error"]["field"] == "secret"


@pytest.mark.parametrize("scheme, sign, accepted", [
    ("stripe", lambda body: _stripe(SECRET, int(time.time()), body), True),
    ("auto", lambda body: _stripe(SECRET, int(time.time()), body), True),
    ("slack", lambda body: _slack(SECRET, int(time.time()), body), True),
    ("shopify", lambda body: {"X-Shopify-Hmac-Sha256": sign_shopify(SECRET, body)}, True),
    ("github", lambda body: _stripe(SECRET, int(time.time()), body), False),
    ("stripe", lambda body: {"X-Hub-Signature-256": sign_github(SECRET, body)}, False),
    ("shopify", lambda body: _slack(SECRET, int(time.time()), body), False),
])
def test_webhook_is_checked_with_the_workflows_scheme(client, account, scheme, sign, accepted):
    wf = create(client, account, secret=SECRET, signature_scheme=scheme).get_json()
    response = client.post(f"/api/webhooks/{wf['id']}", data=BODY, content_type="application/json",
                           headers=sign(BODY))
    assert response.status_code == (202 if accepted else 401)


def _executions(client, account):
    return client.get("/api/executions", headers=account.headers).get_json()["items"]


@pytest.mark.parametrize("headers, body", [
    ({"X-GitHub-Delivery": "72d3162e-cc78-11e3-81ab-4c9367dc0958", "X-GitHub-Event": "push"}, {"ref": "main"}),
    ({"X-Shopify-Webhook-Id": "b54557e4-bdd9-4b37-8a5f-bf7d70bcd043"}, {"id": 820982911946154508}),
    ({"Stripe-Signature": "t=1,v1=00"}, {"id": "evt_1NG8Du2eZvKYlo2CUI79vXWy", "object": "event"}),
])
def test_sender_delivery_id_makes_a_redelivery_run_nothing(client, account, headers, body):
    wf = create(client, account).get_json()
    first = client.post(f"/api/webhooks/{wf['id']}", json=body, headers=headers)
    again = client.post(f"/api/webhooks/{wf['id']}", json=body, headers=headers)
    assert first.status_code == again.status_code == 202
    assert first.get_json()["execution_id"] == again.get_json()["execution_id"]
    assert len(_executions(client, account)) == 1


@pytest.mark.parametrize("first_headers, second_headers, body", [
    ({"X-GitHub-Delivery": "d-1"}, {"X-GitHub-Delivery": "d-2"}, {}),  # another delivery
    ({}, {}, {"id": "evt_1"}),  # an `id` is a Stripe event id only beside Stripe-Signature
    ({"Idempotency-Key": "a", "X-GitHub-Delivery": "same"}, {"Idempotency-Key": "b", "X-GitHub-Delivery": "same"}, {}),
    ({"X-GitHub-Delivery": "x" * 256}, {"X-GitHub-Delivery": "x" * 256}, {}),  # out of bounds: no key
])
def test_distinct_deliveries_run_separately(client, account, first_headers, second_headers, body):
    wf = create(client, account).get_json()
    first = client.post(f"/api/webhooks/{wf['id']}", json=body, headers=first_headers)
    second = client.post(f"/api/webhooks/{wf['id']}", json=body, headers=second_headers)
    assert first.get_json()["execution_id"] != second.get_json()["execution_id"]
    assert len(_executions(client, account)) == 2


def test_slack_url_verification_body_verifies_with_slack_sdk_signature(client, account):
    """Slack's first request to an Events API URL, signed as slack_sdk signs it."""
    wf = create(client, account, secret=SLACK_SECRET, signature_scheme="slack").get_json()
    body = json.dumps({"token": "x", "challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P",
                       "type": "url_verification"}).encode()
    ts = str(int(time.time()))
    signature = SignatureVerifier(SLACK_SECRET).generate_signature(timestamp=ts, body=body)
    response = client.post(f"/api/webhooks/{wf['id']}", data=body, content_type="application/json",
                           headers={"X-Slack-Signature": signature, "X-Slack-Request-Timestamp": ts})
    assert response.status_code == 202
