"""The email connector against a real SMTP server (aiosmtpd) on 127.0.0.1: plain, STARTTLS and implicit TLS
with a self-signed certificate, logins, retryable and permanent failures, the SSRF guard and cancellation."""
from __future__ import annotations

import socket
import threading
import time

import pytest

from app.connectors import ActionError, Credential
from app.connectors import validate as connectors_validate
from app.connectors.email import Email
from app.engine.cancel import Cancelled, CancelToken
from app.security.ssrf import AddressPolicy
from tests.receiver import make_client  # noqa: F401 (a fixture)
from tests.smtpserver import SmtpServer, tls_cert, trusting  # noqa: F401 (fixtures)

CONFIG = {"to": ["ann@example.com", "bob@example.com"], "cc": "carol@example.com", "subject": "Daily report",
          "text": "All good.", "html": "<p>All <b>good</b>.</p>", "reply_to": "ops@example.com"}


def smtp(port: int, security: str = "none", host: str = "127.0.0.1", **login: str) -> Credential:
    return Credential("smtp", {"host": host, "port": port, "security": security, "from": "bot@example.com",
                               **login})


@pytest.mark.parametrize("security", ["none", "starttls", "tls"])
def test_email_is_delivered_with_login_over_each_security(make_client, trusting, security):
    with SmtpServer(security=security, cert=trusting, users={"bot": "pw-1"}) as server:
        result = Email().execute(CONFIG, make_client(), CancelToken(),
                                 smtp(server.port, security, host="localhost", username="bot", password="pw-1"))
        received = server.wait_for(1)[0]
    assert result.status_code == 250
    assert received.login == "bot" and received.mail_from == "bot@example.com"
    assert received.rcpt_tos == ["ann@example.com", "bob@example.com", "carol@example.com"]
    message = received.message
    assert message["Subject"] == "Daily report" and message["Reply-To"] == "ops@example.com"
    assert message["To"] == "ann@example.com, bob@example.com" and message["Message-ID"]
    assert message.get_body(("plain",)).get_content().strip() == "All good."
    assert message.get_body(("html",)).get_content().strip() == "<p>All <b>good</b>.</p>"


def test_an_untrusted_certificate_fails_permanently(make_client, tls_cert):
    with SmtpServer(security="starttls", cert=tls_cert) as server:
        with pytest.raises(ActionError) as caught:
            Email().execute(CONFIG, make_client(), CancelToken(), smtp(server.port, "starttls", host="localhost"))
    assert "TLS" in caught.value.message and not caught.value.retryable


@pytest.mark.parametrize("reply, retryable", [("451 4.3.0 try again later", True), ("550 5.1.1 no such user", False)])
def test_smtp_replies_4xx_retry_and_5xx_do_not(make_client, reply, retryable):
    with SmtpServer() as server:
        server.rcpt_reply = reply
        with pytest.raises(ActionError) as caught:
            Email().execute(CONFIG, make_client(), CancelToken(), smtp(server.port))
    assert caught.value.retryable is retryable and caught.value.status_code == int(reply[:3])


def test_a_wrong_password_fails_permanently(make_client):
    with SmtpServer(users={"bot": "right"}) as server:
        with pytest.raises(ActionError) as caught:
            Email().execute(CONFIG, make_client(), CancelToken(), smtp(server.port, username="bot", password="wrong"))
    assert caught.value.status_code == 535 and not caught.value.retryable
    assert "wrong" not in caught.value.message


def test_a_refused_connection_is_retryable(make_client):
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]  # bound, never listening: connections are refused
        with pytest.raises(ActionError) as caught:
            Email().execute(CONFIG, make_client(), CancelToken(), smtp(port))
    assert caught.value.retryable


def test_the_ssrf_guard_refuses_a_private_smtp_host(make_client):
    with SmtpServer() as server:
        with pytest.raises(ActionError) as caught:
            Email().execute(CONFIG, make_client(policy=AddressPolicy()), CancelToken(), smtp(server.port))
        assert server.received() == []
    assert "loopback" in caught.value.message and not caught.value.retryable


def test_a_silent_server_is_cancelled_within_two_seconds(make_client):
    with socket.socket() as silent:  # accepts the connection, never greets
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        token = CancelToken()
        threading.Timer(0.3, token.cancel, args=("api:user",)).start()
        started = time.monotonic()
        with pytest.raises(Cancelled):
            Email().execute(CONFIG, make_client(), token, smtp(silent.getsockname()[1]))
    assert time.monotonic() - started < 2.0


def test_a_header_broken_by_a_template_is_refused(make_client):
    with SmtpServer() as server:
        with pytest.raises(ActionError):
            Email().execute({**CONFIG, "subject": "hi\r\nBcc: eve@example.com"}, make_client(), CancelToken(),
                            smtp(server.port))
        assert server.received() == []


@pytest.mark.parametrize("config, field", [
    ({"subject": "s", "text": "t"}, "config.to"),
    ({**CONFIG, "to": []}, "config.to"),
    ({**CONFIG, "to": ["a@b.c", 5]}, "config.to"),
    ({**CONFIG, "cc": {"a": 1}}, "config.cc"),
    ({**CONFIG, "subject": 5}, "config.subject"),
    ({**CONFIG, "html": ["x"]}, "config.html"),
    ({**CONFIG, "bcc": "x@y.z"}, "config.bcc"),
    ({**CONFIG, "text": "{{ payload.x "}, "config.text"),
])
def test_bad_email_configs_are_refused_naming_the_field(config, field):
    with pytest.raises(Exception) as caught:
        connectors_validate("email", config)
    assert caught.value.field == field
