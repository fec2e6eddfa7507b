"""The webhook receiver without Flask's request machinery: a WSGI middleware in front of the app that
answers `POST /api/webhooks/<id>` itself and hands every other request to Flask unchanged.

Flask's request context (URL routing, the session, the lookup of hooks and error handlers) costs ~0.1 ms
of CPU per webhook, a third of the HTTP side of one (measured on a repeated delivery, which stores nothing:
330 -> 215 us). This path skips it but runs what Flask runs for this route, the same functions in the
same order, in an app context (so `g`, `current_app` and `jsonify` are Flask's own): requestlog.start,
webhooks.start_clock, webhooks.accept (the view's core), webhooks.acknowledgement or errors.response_for
for whatever accept raises, webhooks.count, requestlog.finish, requestlog.unbind; the request object is
Flask's own class over the same environ. No other hook applies to this route: flask-cors is configured
off for /api/webhooks/ (api/__init__.py), the security headers are the dashboard blueprint's.
tests/test_webhooks_thin.py gives both paths the same requests and compares their answers.

Requests it leaves to Flask, besides the other routes and methods:
- `?wait=`: rare, and it watches the sender's socket while it waits; the view handles it whole;
- all of them when tracing is on: create_app does not install this path then, since the OpenTelemetry
  Flask instrumentation makes each request's span (app/tracing.py)."""
from __future__ import annotations

import re
from typing import TYPE_CHECKING, Iterable

from flask import Flask

from app.api import errors, requestlog, webhooks

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment


class ThinWebhooks:
    """Wrap `app.wsgi_app`: `app.wsgi_app = ThinWebhooks(app, app.wsgi_app)`."""

    def __init__(self, app: Flask, flask_wsgi: WSGIApplication) -> None:
        self.app = app
        self.flask_wsgi = flask_wsgi
        self._prefix = f"{webhooks.bp.url_prefix}/"
        # The view's rule, /api/webhooks/<workflow_id>: one non-empty segment, no trailing slash.
        self._route = re.compile(rf"{re.escape(self._prefix)}([^/]+)")

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("REQUEST_METHOD") != "POST" or self._prefix not in environ.get("PATH_INFO", ""):
            return self.flask_wsgi(environ, start_response)
        req = self.app.request_class(environ)
        route = self._route.fullmatch(req.path)  # the path as Flask routes it (decoded, leading slashes merged)
        if route is None or "wait" in req.args:
            return self.flask_wsgi(environ, start_response)
        with self.app.app_context():
            requestlog.start(req)
            try:
                webhooks.start_clock()
                try:
                    execution, _ = webhooks.accept(req, route.group(1))
                    response = webhooks.acknowledgement(execution)
                except Exception as error:  # as Flask's full_dispatch_request: every error gets its JSON answer
                    response = errors.response_for(error)
                response = requestlog.finish(req, webhooks.count(response))
                return response(environ, start_response)
            finally:
                requestlog.unbind()
