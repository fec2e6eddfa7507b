"""Dashboard sign-in, sign-out, sessions and CSRF, through the Flask test client."""
from __future__ import annotations

import re

import pytest

from app.models import utcnow
from tests.dashboard import csrf, post, sign_in

PAGES = ["/ui/workflows", "/ui/workflows/new", "/ui/workflows/wf_x", "/ui/workflows/wf_x/edit",
         "/ui/workflows/wf_x/delete", "/ui/executions", "/ui/executions?status=failed", "/ui/executions/ex_x",
         "/ui/queue", "/ui/logout", "/ui/credentials", "/ui/credentials/new", "/ui/credentials/cr_x/delete"]
ACTIONS = ["/ui/workflows/new", "/ui/workflows/wf_x/edit", "/ui/workflows/wf_x/enabled",
           "/ui/workflows/wf_x/delete", "/ui/workflows/wf_x/run", "/ui/executions/ex_x/cancel",
           "/ui/credentials/new", "/ui/credentials/cr_x/delete",
           "/ui/executions/ex_x/replay", "/ui/logout"]


def test_ui_root_redirects_to_the_dashboard(client):
    response = client.get("/")
    assert response.status_code == 302 and response.location == "/ui/"
    assert client.get("/ui/").location == "/ui/workflows"


@pytest.mark.parametrize("path", PAGES)
def test_ui_pages_redirect_to_sign_in_without_a_session(client, path):
    response = client.get(path)
    assert response.status_code == 303
    assert response.location.startswith("/ui/login?next=/ui/")


@pytest.mark.parametrize("path", ACTIONS)
def test_ui_actions_redirect_to_sign_in_without_a_session(client, path):
    response = client.post(path, data={"name": "x"})
    assert response.status_code == 303 and response.location == "/ui/login"


def test_ui_sign_in_sets_an_httponly_samesite_cookie_holding_no_key(client, account):
    client.get("/ui/login")
    response = client.post("/ui/login", data={"api_key": account.key, "csrf_token": csrf(client)})
    assert response.status_code == 303 and response.location == "/ui/workflows"
    cookie = response.headers["Set-Cookie"]
    assert cookie.startswith("ipaas_session=") and "HttpOnly" in cookie and "SameSite=Lax" in cookie
    assert account.key[13:] not in cookie
    assert client.get("/ui/workflows").status_code == 200


@pytest.mark.parametrize("key", ["", "nonsense", "ipk_00000000_" + "a" * 43, "{real}x", "{real_prefix}_" + "b" * 43])
def test_ui_sign_in_refuses_a_bad_key_beside_the_field(client, account, key):
    key = key.format(real=account.key, real_prefix=account.key[:12])
    client.get("/ui/login")
    response = client.post("/ui/login", data={"api_key": key, "csrf_token": csrf(client)})
    assert response.status_code == 401
    assert 'id="api_key-error"' in response.text and "not valid or was revoked" in response.text
    assert client.get("/ui/workflows").status_code == 303


def test_ui_sign_in_without_csrf_token_is_refused(client, account):
    client.get("/ui/login")
    response = client.post("/ui/login", data={"api_key": account.key})
    assert response.status_code == 403 and "did not come from this dashboard" in response.text
    assert client.get("/ui/workflows").status_code == 303


def test_ui_sign_in_goes_back_to_the_page_asked_for_but_never_off_site(client, account):
    client.get("/ui/login")
    answer = client.post("/ui/login", data={"api_key": account.key, "csrf_token": csrf(client), "next": "/ui/queue"})
    assert answer.location == "/ui/queue"
    for target in ("https://evil.example/", "//evil.example/ui/", "/ui\\@evil.example"):
        client.get("/ui/login")
        answer = client.post("/ui/login", data={"api_key": account.key, "csrf_token": csrf(client), "next": target})
        assert answer.location == "/ui/workflows", target


def test_ui_revoked_key_ends_its_session_at_the_next_request(app, client, account):
    sign_in(client, account.key)
    assert client.get("/ui/workflows").status_code == 200
    app.extensions["ipaas"].store.revoke_api_key(account.key[:12], now=utcnow())
    response = client.get("/ui/workflows")
    assert response.status_code == 303 and response.location.startswith("/ui/login")
    assert "was revoked" in client.get(response.location).text


def test_ui_sign_out_ends_the_session_and_needs_a_csrf_token(client, account):
    sign_in(client, account.key)
    assert client.post("/ui/logout").status_code == 403
    assert client.get("/ui/workflows").status_code == 200
    response = post(client, "/ui/logout")
    assert response.status_code == 303 and response.location == "/ui/login"
    assert "Signed out." in client.get("/ui/login").text
    assert client.get("/ui/workflows").status_code == 303


def test_ui_cookie_signed_with_another_key_is_not_a_session(app, client, account):
    sign_in(client, account.key)
    value = client.get_cookie("ipaas_session").value
    client.set_cookie("ipaas_session", value[:-3] + ("AAA" if not value.endswith("AAA") else "BBB"))
    assert client.get("/ui/workflows").status_code == 303


def test_ui_token_from_another_session_is_refused(app, client, account):
    sign_in(client, account.key)
    other = app.test_client()
    other.get("/ui/login")
    response = client.post("/ui/workflows/new", data={"csrf_token": csrf(other), "name": "x"})
    assert response.status_code == 403


def test_ui_poll_after_session_end_asks_htmx_to_load_the_sign_in_page(client):
    response = client.get("/ui/executions", headers={"HX-Request": "true"})
    assert response.status_code == 401 and response.headers["HX-Redirect"].startswith("/ui/login")


def test_ui_pages_forbid_inline_scripts_and_caching(client, account):
    sign_in(client, account.key)
    response = client.get("/ui/workflows")
    assert "script-src 'self'" in response.headers["Content-Security-Policy"]
    assert response.headers["Cache-Control"] == "no-store"
    assert not re.search(r"<script(?![^>]*\bsrc=)", response.text), "inline script in the page"


def test_ui_static_files_are_served_without_a_session(client):
    for name in ("htmx.min.js", "ipaas.css", "ipaas.js"):
        with client.get(f"/ui/static/{name}") as response:
            assert response.status_code == 200 and response.data
