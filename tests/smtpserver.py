"""A real SMTP server on 127.0.0.1 for email tests (aiosmtpd), recording what it receives, and a
self-signed certificate made with `cryptography` for its STARTTLS and implicit TLS.

    with SmtpServer(security="starttls", cert=cert) as smtp:   # cert from the `tls_cert` fixture
        ... smtp.port ... smtp.wait_for(1)[0].message["Subject"] ...
"""
from __future__ import annotations

import datetime
import ipaddress
import ssl
import threading
import time
from dataclasses import dataclass
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any, Iterator

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.serverproc import free_port


@dataclass(frozen=True)
class TlsCert:
    cert: Path
    key: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert, self.key)
        return context


def make_cert(directory: Path) -> TlsCert:
    """A self-signed certificate for localhost and 127.0.0.1, valid for a day."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    paths = TlsCert(directory / "smtp-cert.pem", directory / "smtp-key.pem")
    paths.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths.key.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                            serialization.NoEncryption()))
    return paths


@dataclass(frozen=True)
class Received:
    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage
    login: str | None


class _Handler:
    def __init__(self, server: SmtpServer):
        self._server = server

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: list) -> str:
        reply = self._server.rcpt_reply
        if reply is not None:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        login = session.auth_data.login.decode() if session.auth_data else None
        message = message_from_bytes(envelope.content, policy=policy.default)
        self._server._record(Received(envelope.mail_from, list(envelope.rcpt_tos), message, login))
        return "250 Message accepted"


class SmtpServer:
    """aiosmtpd on 127.0.0.1: `security` none | starttls (required) | tls; logins checked against `users`."""

    def __init__(self, *, security: str = "none", cert: TlsCert | None = None,
                 users: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.users = users or {}
        self.rcpt_reply: str | None = None  # e.g. "550 no such user": every RCPT gets it
        self._received: list[Received] = []
        self._lock = threading.Condition()
        options: dict[str, Any] = {"authenticator": self._authenticate, "auth_require_tls": False}
        if security == "starttls":
            options.update(tls_context=cert.server_context(), require_starttls=True)
        elif security == "tls":
            options.update(ssl_context=cert.server_context())
        self._controller = Controller(_Handler(self), hostname="127.0.0.1", port=self.port, **options)

    def _authenticate(self, server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
        login, password = data.login.decode(), data.password.decode()
        return AuthResult(success=self.users.get(login) == password, handled=False, auth_data=data)

    def _record(self, received: Received) -> None:
        with self._lock:
            self._received.append(received)
            self._lock.notify_all()

    def __enter__(self) -> SmtpServer:
        self._controller.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._controller.stop()

    def received(self) -> list[Received]:
        with self._lock:
            return list(self._received)

    def wait_for(self, count: int, timeout: float = 5.0) -> list[Received]:
        deadline = time.monotonic() + timeout
        with self._lock:
            while len(self._received) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"timed out after {timeout} s waiting for {count} messages")
                self._lock.wait(left)
            return list(self._received)


@pytest.fixture(scope="session")
def tls_cert(tmp_path_factory) -> TlsCert:
    return make_cert(tmp_path_factory.mktemp("smtp-tls"))


@pytest.fixture
def trusting(tls_cert, monkeypatch) -> Iterator[TlsCert]:
    """Actions trust the test certificate (as an operator would with REQUESTS_CA_BUNDLE)."""
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(tls_cert.cert))
    yield tls_cert
