"""Tests for inbound webhook signature verification (Standard Webhooks and GitHub)."""
from __future__ import annotations

import base64
import hashlib
import hmac

import pytest

from app.errors import Unauthorized
from app.security.signatures import SignatureError, sign_github, sign_standard, verify_signature

SECRET = "s3cr3t-workflow-key"
WHSEC = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
BODY = b'{"event": "order.created", "id": 42}'
MSG_ID = "msg_2Kq7"
NOW = 1_700_000_000.0
TS = int(NOW)


def std_headers(secret: str = SECRET, *, body: bytes = BODY, ts: int = TS, sig: str | None = None) -> dict[str, str]:
    """Build Standard Webhooks headers signed over body at ts unless sig overrides the signature."""
    return {
        "webhook-id": MSG_ID,
        "webhook-timestamp": str(ts),
        "webhook-signature": sig if sig is not None else sign_standard(secret, MSG_ID, ts, body),
    }


def gh_headers(secret: str = SECRET, body: bytes = BODY) -> dict[str, str]:
    """Build GitHub headers signed over body."""
    return {"X-Hub-Signature-256": sign_github(secret, body), "X-GitHub-Delivery": "d-1"}


def refused(headers: dict[str, str], *, secret: str = SECRET, body: bytes = BODY, now: float = NOW) -> str:
    """Return the reason verify_signature gives for refusing the request."""
    with pytest.raises(SignatureError) as exc:
        verify_signature(secret, body, headers, now=now)
    return exc.value.reason


# --- known vectors, computed independently of the module under test ---


def test_sign_standard_matches_svix_reference_vector():
    # Example from the svix docs: whsec_ secrets are keyed with their base64-decoded bytes.
    sig = sign_standard(WHSEC, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, b'{"test": 2432232314}')
    assert sig == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_verify_signature_accepts_svix_reference_vector():
    headers = {
        "webhook-id": "msg_p5jXN8AQM9LWM0D4loKWxJek",
        "webhook-timestamp": "1614265330",
        "webhook-signature": "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
    }
    assert verify_signature(WHSEC, b'{"test": 2432232314}', headers, now=1614265330 + 10) == "standard"


def test_sign_standard_plain_secret_uses_utf8_bytes():
    expected = hmac.new(SECRET.encode(), f"{MSG_ID}.{TS}.".encode() + BODY, hashlib.sha256).digest()
    assert sign_standard(SECRET, MSG_ID, TS, BODY) == "v1," + base64.b64encode(expected).decode()


def test_sign_standard_whsec_with_invalid_base64_falls_back_to_utf8():
    secret = "whsec_not*base64!"
    expected = hmac.new(secret.encode(), f"{MSG_ID}.{TS}.".encode() + BODY, hashlib.sha256).digest()
    assert sign_standard(secret, MSG_ID, TS, BODY) == "v1," + base64.b64encode(expected).decode()


def test_sign_github_matches_github_docs_vector():
    # Example from GitHub's "Validating webhook deliveries" docs.
    sig = sign_github("It's a Secret to Everybody", b"Hello, World!")
    assert sig == "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"


# --- Standard Webhooks ---


@pytest.mark.parametrize("secret", [SECRET, WHSEC])
@pytest.mark.parametrize("skew", [0, -300, 300, -299.5])
def test_verify_signature_standard_accepts_valid(secret, skew):
    assert verify_signature(secret, BODY, std_headers(secret), now=NOW + skew) == "standard"


def test_signature_error_is_unauthorized_401():
    err = SignatureError("missing signature")
    assert isinstance(err, Unauthorized) and err.status == 401 and err.message == "missing signature"


@pytest.mark.parametrize(
    "headers, reason",
    [
        ({}, "missing signature"),
        ({"webhook-id": MSG_ID, "webhook-timestamp": str(TS)}, "missing signature"),
        ({k: v for k, v in std_headers().items() if k != "webhook-id"}, "missing signature"),
        ({k: v for k, v in std_headers().items() if k != "webhook-timestamp"}, "missing signature"),
        (std_headers(sig=""), "missing signature"),
        (std_headers("wrong-secret"), "no matching signature"),
        (std_headers(body=b'{"event": "order.created", "id": 43}'), "no matching signature"),
        (std_headers(ts=TS - 301), "timestamp outside tolerance"),
        (std_headers(ts=TS + 301), "timestamp outside tolerance"),
        (std_headers(ts=0), "timestamp outside tolerance"),
        ({**std_headers(), "webhook-timestamp": "soon"}, "malformed timestamp"),
        ({**std_headers(), "webhook-timestamp": "1700000000.5"}, "malformed timestamp"),
        ({**std_headers(), "webhook-timestamp": "-1700000000"}, "malformed timestamp"),
        ({**std_headers(), "webhook-timestamp": "+1700000000"}, "malformed timestamp"),
        ({**std_headers(), "webhook-timestamp": "1_700_000_000"}, "malformed timestamp"),
        ({**std_headers(), "webhook-timestamp": "\u0661\u0667"}, "malformed timestamp"),
        ({**std_headers(), "webhook-timestamp": "9" * 5000}, "malformed timestamp"),
        (std_headers(sig="garbage"), "malformed signature header"),
        (std_headers(sig=",abc"), "malformed signature header"),
        (std_headers(sig="v1,not-base64!!"), "no matching signature"),
        (std_headers(sig="v1,\u00e9t\u00e9"), "no matching signature"),
    ],
    ids=[
        "no-headers", "no-signature", "no-id", "no-timestamp", "empty-signature", "wrong-secret",
        "altered-body", "stale", "future", "epoch", "word-ts", "fractional-ts", "negative-ts", "plus-ts",
        "underscore-ts", "arabic-digits-ts", "huge-ts", "no-comma", "no-version", "bad-base64", "non-ascii",
    ],
)
def test_verify_signature_standard_refuses(headers, reason):
    assert refused(headers) == reason


def test_verify_signature_refuses_replay_with_altered_body():
    headers = std_headers()
    assert verify_signature(SECRET, BODY, headers, now=NOW) == "standard"
    assert refused(headers, body=BODY + b" ") == "no matching signature"


def test_verify_signature_tolerance_is_configurable():
    headers = std_headers(ts=TS - 60)
    with pytest.raises(SignatureError, match="timestamp outside tolerance"):
        verify_signature(SECRET, BODY, headers, now=NOW, tolerance=30)
    assert verify_signature(SECRET, BODY, headers, now=NOW, tolerance=60) == "standard"


@pytest.mark.parametrize(
    "entries",
    [
        ["v1,{bad}", "v1,{good}"],
        ["v1,{bad}", "v1,{bad}", "v1,{good}"],
        ["v1a,{good}", "v1,{good}"],
        ["junk", "v2,{bad}", "v1,{good}"],
    ],
    ids=["second-matches", "third-matches", "after-v1a", "after-junk"],
)
def test_verify_signature_standard_accepts_any_matching_entry(entries):
    good = sign_standard(SECRET, MSG_ID, TS, BODY).removeprefix("v1,")
    bad = sign_standard("rotated-old-secret", MSG_ID, TS, BODY).removeprefix("v1,")
    sig = " ".join(e.format(good=good, bad=bad) for e in entries)
    assert verify_signature(SECRET, BODY, std_headers(sig=sig), now=NOW) == "standard"


def test_verify_signature_standard_ignores_v1a_entries():
    # A v1a entry carrying the correct HMAC must not be accepted: v1a is asymmetric (ed25519), not ours.
    good = sign_standard(SECRET, MSG_ID, TS, BODY).removeprefix("v1,")
    assert refused(std_headers(sig=f"v1a,{good}")) == "no matching signature"


def test_verify_signature_whsec_secret_is_not_keyed_with_its_text():
    text_keyed = hmac.new(WHSEC.encode(), f"{MSG_ID}.{TS}.".encode() + BODY, hashlib.sha256).digest()
    sig = "v1," + base64.b64encode(text_keyed).decode()
    assert refused(std_headers(sig=sig), secret=WHSEC) == "no matching signature"


# --- GitHub ---


def test_verify_signature_github_accepts_valid():
    assert verify_signature(SECRET, BODY, gh_headers(), now=NOW) == "github"


def test_verify_signature_github_has_no_timestamp_so_old_requests_verify():
    # Documented limitation: the scheme has no timestamp, so replay cannot be detected here.
    assert verify_signature(SECRET, BODY, gh_headers(), now=NOW + 10 * 365 * 86400) == "github"


def test_verify_signature_github_keys_whsec_secret_with_its_text():
    assert verify_signature(WHSEC, BODY, gh_headers(WHSEC), now=NOW) == "github"


HEX = sign_github(SECRET, BODY).removeprefix("sha256=")


@pytest.mark.parametrize(
    "value, reason",
    [
        (sign_github("wrong-secret", BODY), "no matching signature"),
        (sign_github(SECRET, BODY + b"!"), "no matching signature"),
        ("sha256=" + HEX.upper(), None),
        (HEX, "malformed signature header"),
        ("sha1=" + HEX, "malformed signature header"),
        ("SHA256=" + HEX, "malformed signature header"),
        ("sha256=" + HEX[:-1] + "g", "malformed signature header"),
        ("sha256=" + HEX[:-2], "malformed signature header"),
        ("sha256=" + HEX + "00", "malformed signature header"),
        ("sha256=", "malformed signature header"),
        ("sha256=" + HEX[:32] + " " + HEX[32:], "malformed signature header"),
        ("", "missing signature"),
    ],
    ids=[
        "wrong-secret", "altered-body", "uppercase-hex-ok", "no-prefix", "sha1-prefix", "upper-prefix",
        "non-hex", "short", "long", "empty-hex", "inner-space", "empty",
    ],
)
def test_verify_signature_github_refuses(value, reason):
    headers = {"X-Hub-Signature-256": value}
    if reason is None:
        assert verify_signature(SECRET, BODY, headers, now=NOW) == "github"
    else:
        assert refused(headers) == reason


# --- scheme selection, header names, secrecy ---


def test_verify_signature_prefers_standard_when_both_present():
    assert verify_signature(SECRET, BODY, {**gh_headers(), **std_headers()}, now=NOW) == "standard"


def test_verify_signature_standard_wins_even_when_only_github_would_verify():
    # A stale Standard Webhooks signature must not be rescued by a (replayable) GitHub one.
    headers = {**gh_headers(), **std_headers(ts=TS - 3600)}
    assert refused(headers) == "timestamp outside tolerance"


@pytest.mark.parametrize("transform", [str.upper, str.title, str.lower, lambda k: k.swapcase()])
def test_verify_signature_header_names_are_case_insensitive(transform):
    std = {transform(k): v for k, v in std_headers().items()}
    gh = {transform(k): v for k, v in gh_headers().items()}
    assert verify_signature(SECRET, BODY, std, now=NOW) == "standard"
    assert verify_signature(SECRET, BODY, gh, now=NOW) == "github"


def test_verify_signature_accepts_header_values_with_surrounding_whitespace():
    headers = {k: f"  {v} " for k, v in std_headers().items()}
    assert verify_signature(SECRET, BODY, headers, now=NOW) == "standard"


def test_verify_signature_rejects_empty_secret():
    with pytest.raises(ValueError):
        verify_signature("", BODY, std_headers(""), now=NOW)


@pytest.mark.parametrize(
    "secret, headers",
    [
        (SECRET, std_headers("other")),
        (SECRET, std_headers(ts=TS - 999)),
        (SECRET, {**std_headers(), "webhook-timestamp": "x"}),
        (SECRET, std_headers(sig="garbage")),
        (SECRET, {"X-Hub-Signature-256": sign_github("other", BODY)}),
        (SECRET, {"X-Hub-Signature-256": "nope"}),
        (SECRET, {}),
        (WHSEC, std_headers("other")),
    ],
)
def test_signature_error_never_reveals_secret_or_expected_signature(secret, headers):
    expected = {
        sign_standard(secret, MSG_ID, TS, BODY).removeprefix("v1,"),
        sign_github(secret, BODY).removeprefix("sha256="),
    }
    with pytest.raises(SignatureError) as exc:
        verify_signature(secret, BODY, headers, now=NOW)
    text = " ".join([str(exc.value), repr(exc.value), exc.value.message, exc.value.reason])
    assert secret not in text and secret.removeprefix("whsec_") not in text
    assert not any(e in text for e in expected)
    assert exc.value.reason in {
        "missing signature", "timestamp outside tolerance", "malformed timestamp",
        "no matching signature", "malformed signature header",
    }
