"""Redaction of secrets in text and headers: every pattern, and texts that hold none left as they are."""
from __future__ import annotations

import pytest

from app.security.redact import REDACTED, redact_headers, redact_text


@pytest.mark.parametrize(("text", "expected"), [
    ("posting to https://hooks.slack.com/services/T000/B000/abcDEF123 failed",
     f"posting to https://hooks.slack.com/services/T000/B000/{REDACTED} failed"),
    ("https://hooks.slack.com/triggers/T1/123/abc", f"https://hooks.slack.com/triggers/{REDACTED}"),
    ("connect to https://ada:hunter2@example.com/x", f"connect to https://{REDACTED}@example.com/x"),
    ("GET https://api.example.com/v1?user=ada&api_key=s3cret&x=1",
     f"GET https://api.example.com/v1?user=ada&api_key={REDACTED}&x=1"),
    ("/callback?TOKEN=abc", f"/callback?TOKEN={REDACTED}"),
    ("Authorization: Bearer eyJhbGciOi.x-y_z", f"Authorization: Bearer {REDACTED}"),
    ("basic dXNlcjpwYXNz", f"basic {REDACTED}"),
])
def test_each_kind_of_secret_is_redacted(text, expected):
    assert redact_text(text) == expected


@pytest.mark.parametrize("text", ["application/json", "127.0.0.1:8080", "wrk", "HTTP 500 from example.com",
                                  "a basic-ish note", "key=value without a query mark", ""])
def test_text_without_secrets_is_unchanged(text):
    assert redact_text(text) == text


def test_headers_lose_secret_values_and_keep_the_others():
    headers = {"Authorization": "Bearer abc", "X-Api-Key": "k", "Content-Type": "application/json",
               "Referer": "https://u:p@example.com/"}
    assert redact_headers(headers) == {"Authorization": REDACTED, "X-Api-Key": REDACTED,
                                       "Content-Type": "application/json",
                                       "Referer": f"https://{REDACTED}@example.com/"}
