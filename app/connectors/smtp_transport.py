"""Sending one message over SMTP with the stdlib's smtplib, guarded and cancellable like HTTP actions.

- SSRF guard: the credential's host is resolved once and every address checked (security/ssrf.py);
  smtplib then connects to a checked address while TLS (implicit or STARTTLS) verifies the certificate
  against the host NAME, with SNI: `_get_socket` is smtplib's documented-by-source hook for the socket,
  and `self._host` (set by connect) is what its TLS wrapping uses as server_hostname.
- Cancellation: every socket is registered with the token (engine/cancel.py SocketWatch), so a cancel
  or the job deadline shuts it down and a blocked read returns at once; each read and write also has a
  socket timeout (at most SMTP_TIMEOUT seconds, never past the job's deadline).
- Errors: a 4xx reply (RFC 5321 "transient negative completion"), a dropped connection, a refused or
  timed-out connect may succeed later: retryable. A 5xx reply, a failed login, a TLS error: permanent.
- Trust: the CA bundle of HTTP actions (REQUESTS_CA_BUNDLE or CURL_CA_BUNDLE, else certifi)."""
from __future__ import annotations

import os
import smtplib
import socket
import ssl
from email.message import EmailMessage
from typing import Any, Mapping

from app.connectors.base import ActionError, ActionResult
from app.engine.cancel import CancelToken, SocketWatch
from app.engine.guarded import ca_bundle
from app.security.ssrf import AddressPolicy, BlockedDestination, resolve_and_check

SMTP_TIMEOUT = 30.0  # seconds any one read or write may block
LOCAL_HOSTNAME = "localhost"  # what EHLO says: socket.getfqdn() can block on a slow resolver


def tls_context() -> ssl.SSLContext:
    bundle = ca_bundle()
    return ssl.create_default_context(**({"capath": bundle} if os.path.isdir(bundle) else {"cafile": bundle}))


class _GuardedSMTP(smtplib.SMTP):
    """smtplib.SMTP connecting only to addresses the policy allows, its sockets watched by a token.
    Made without a host (so nothing connects), given `_policy` and `_watch`, then `connect`ed."""

    _policy: AddressPolicy
    _watch: SocketWatch

    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        error: OSError | None = None
        for family, kind, proto, sockaddr in resolve_and_check(host, port, self._policy):
            self._watch.token.check()
            sock = socket.socket(family, kind, proto)
            try:
                sock.settimeout(timeout)
                self._watch.watch(sock)
                sock.connect(sockaddr)
                return sock
            except OSError as exc:
                sock.close()
                error = exc
        raise error or OSError(f"no address for {host}")


class _GuardedSMTPSSL(smtplib.SMTP_SSL, _GuardedSMTP):
    """Implicit TLS: SMTP_SSL wraps the socket that _GuardedSMTP._get_socket connected (MRO)."""


def send(message: EmailMessage, server: Mapping[str, Any], *, policy: AddressPolicy,
         token: CancelToken) -> ActionResult:
    """Send `message` through the smtp credential's `server`; ActionError or Cancelled if it fails."""
    host, port, security = server["host"], int(server["port"]), server["security"]
    remaining = token.remaining()
    timeout = max(0.001, min(SMTP_TIMEOUT, remaining)) if remaining is not None else SMTP_TIMEOUT
    watch = SocketWatch(token)
    try:
        token.check()
        cls = _GuardedSMTPSSL if security == "tls" else _GuardedSMTP
        extra = {"context": tls_context()} if security == "tls" else {}
        smtp = cls(timeout=timeout, local_hostname=LOCAL_HOSTNAME, **extra)
        # smtplib sets _host (TLS's server_hostname) only when the constructor connects.
        smtp._policy, smtp._watch, smtp._host = policy, watch, host
        with smtp:
            smtp.connect(host, port)
            if security == "starttls":
                smtp.starttls(context=tls_context())
            if server.get("username"):
                smtp.login(server["username"], server["password"])
            refused = smtp.send_message(message)
    except BlockedDestination as exc:
        raise ActionError(exc.message) from exc
    except (smtplib.SMTPException, OSError) as exc:
        token.check()  # a cancel shut the socket: the cancel is the outcome, not the error
        raise _failure(exc, host) from exc
    finally:
        watch.close()
    # send_message raises unless some recipient was accepted; it returns the ones refused.
    return ActionResult(250, f"accepted by {host}" + (f"; refused: {_replies(refused)}" if refused else ""))


def _failure(exc: Exception, host: str) -> ActionError:
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        codes = [code for code, _ in exc.recipients.values()]
        transient = all(400 <= code < 500 for code in codes)
        return ActionError(f"{host} refused every recipient: {_replies(exc.recipients)}", retryable=transient,
                           status_code=max(codes) if codes else None)
    if isinstance(exc, smtplib.SMTPResponseException):
        reply = exc.smtp_error.decode("utf-8", "replace") if isinstance(exc.smtp_error, bytes) else str(exc.smtp_error)
        return ActionError(f"{host} answered {exc.smtp_code} {' '.join(reply.split())}",
                           retryable=400 <= exc.smtp_code < 500, status_code=exc.smtp_code)
    if isinstance(exc, ssl.SSLError):
        return ActionError(f"TLS error with {host}: {exc.reason or exc}")
    if isinstance(exc, smtplib.SMTPNotSupportedError):
        return ActionError(f"{host} does not support it: {exc}")
    if isinstance(exc, socket.gaierror):
        return ActionError(f"cannot resolve {host}: {exc.strerror}", retryable=True)
    if isinstance(exc, TimeoutError):
        return ActionError(f"no answer from {host} within the timeout", retryable=True)
    return ActionError(f"connection to {host} failed: {exc}", retryable=True)


def _replies(recipients: dict[str, tuple[int, bytes]]) -> str:
    return "; ".join(f"{address}: {code} {message.decode('utf-8', 'replace')}"
                     for address, (code, message) in sorted(recipients.items()))
