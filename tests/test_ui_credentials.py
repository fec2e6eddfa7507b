"""Dashboard credential pages through the Flask test client: list without data, the per-type form with the
API's errors beside the input, delete refused while a workflow uses it, CSRF, tenancy and escaping."""
from __future__ import annotations

import pytest

from tests.dashboard import HOSTILE, field_errors, make_credential, make_workflow, post, principal_of
from tests.dashboard import services, signed_in  # noqa: F401 (fixtures)

SMTP_FORM = {"type": "smtp", "name": "mail relay", "data.host": "smtp.example.com", "data.port": "587",
             "data.security": "starttls", "data.from": "bot@example.com", "data.username": "bot",
             "data.password": "pw-SECRET-smtp"}


def listed(services, account) -> list:
    return services.list_credentials(principal_of(account), limit=10, cursor=None).items


def test_ui_credentials_empty_list_says_what_to_do(signed_in):
    page = signed_in.get("/ui/credentials").text
    assert "No credentials yet." in page and "credential_id" in page and 'href="/ui/credentials/new"' in page
    assert 'href="/ui/credentials" aria-current="page">Credentials</a>' in page  # in the nav


def test_ui_credential_created_through_the_form_is_stored_encrypted(signed_in, services, account):
    response = post(signed_in, "/ui/credentials/new", SMTP_FORM)
    assert response.status_code == 303 and response.location == "/ui/credentials"
    [credential] = listed(services, account)
    assert (credential.name, credential.type) == ("mail relay", "smtp")
    assert services.box.decrypt_json(credential.encrypted_data) == {
        "host": "smtp.example.com", "port": 587, "security": "starttls", "from": "bot@example.com",
        "username": "bot", "password": "pw-SECRET-smtp"}
    page = signed_in.get("/ui/credentials").text
    assert credential.id in page and "mail relay" in page and ">smtp<" in page
    assert "SECRET" not in page and "smtp.example.com" not in page  # names and types only, never data


@pytest.mark.parametrize("kind, secrets, others", [
    ("smtp", ["data-password"], ["data-host", "data-port", "data-security", "data-from", "data-username"]),
    ("http_header", ["data-value"], ["data-name"]),
    ("http_basic", ["data-password"], ["data-username"]),
])
def test_ui_credential_form_has_the_types_fields_with_secrets_as_passwords(signed_in, kind, secrets, others):
    page = signed_in.get(f"/ui/credentials/new?type={kind}").text
    assert f'<input type="hidden" name="type" value="{kind}">' in page
    assert f'href="/ui/credentials/new?type={kind}" aria-current="page"' in page
    for input_id in secrets:
        assert f'id="{input_id}" name="{input_id.replace("-", ".", 1)}" type="password"' in page
    for input_id in others:
        assert f'id="{input_id}" name="{input_id.replace("-", ".", 1)}"' in page
        assert f'id="{input_id}" name="{input_id.replace("-", ".", 1)}" type="password"' not in page


@pytest.mark.parametrize("change, field, message", [
    ({"name": ""}, "name", "name must be a string of 1 to 200"),
    ({"data.host": ""}, "data-host", "data.host is required for a smtp credential"),
    ({"data.port": "seventy"}, "data-port", "data.port must be an integer from 1 to 65535"),
    ({"data.port": "70000"}, "data-port", "data.port must be an integer from 1 to 65535"),
    ({"data.security": "ssl3"}, "data-security", "data.security must be one of"),
    ({"data.from": "nobody"}, "data-from", "data.from must be an email address"),
    ({"data.username": ""}, "data-username", "data.username is required with data.username and data.password"),
    ({"type": "carrier-pigeon"}, "type", "type must be one of"),
])
def test_ui_credential_form_shows_the_api_error_beside_its_field(signed_in, services, account, change, field,
                                                                 message):
    response = post(signed_in, "/ui/credentials/new", {**SMTP_FORM, **change})
    assert response.status_code == 422
    errors = field_errors(response.text)
    assert list(errors) == [field] and message in errors[field], errors
    if field != "type":
        assert f'aria-describedby="{field}-error"' in response.text
    assert "pw-SECRET-smtp" not in response.text  # a secret is never put back into the page
    assert listed(services, account) == []


def test_ui_credential_form_keeps_what_is_not_secret_after_an_error(signed_in):
    page = post(signed_in, "/ui/credentials/new", {**SMTP_FORM, "data.from": "nobody"}).text
    assert 'value="smtp.example.com"' in page and 'value="mail relay"' in page
    assert '<option value="starttls" selected>' in page


def test_ui_credential_delete_asks_first(signed_in, services, account):
    credential = make_credential(services, account)
    page = signed_in.get(f"/ui/credentials/{credential.id}/delete").text
    assert "This cannot be undone." in page and 'name="csrf_token"' in page
    response = post(signed_in, f"/ui/credentials/{credential.id}/delete")
    assert response.status_code == 303 and response.location == "/ui/credentials"
    assert listed(services, account) == []
    assert "deleted." in signed_in.get("/ui/credentials").text


def test_ui_credential_in_use_is_not_deleted_and_the_workflow_is_named(signed_in, services, account):
    credential = make_credential(services, account)
    workflow = make_workflow(services, account, name=f"crm {HOSTILE}", steps=[
        {"name": "call", "action_type": "http_request", "config": {"url": "http://127.0.0.1:9/x"},
         "credential_id": credential.id}])
    warning = signed_in.get(f"/ui/credentials/{credential.id}/delete").text
    assert "is used by" in warning and ">Delete credential</button>" not in warning
    response = post(signed_in, f"/ui/credentials/{credential.id}/delete")  # a page opened before it was used
    assert response.status_code == 409
    assert "It was not deleted: it is used by" in response.text
    assert f'<a href="/ui/workflows/{workflow.id}">crm &lt;script&gt;' in response.text
    assert listed(services, account) == [credential]


def test_ui_hostile_credential_name_is_shown_as_text(signed_in, services, account):
    credential = make_credential(services, account, name=HOSTILE)
    for path in ("/ui/credentials", f"/ui/credentials/{credential.id}/delete"):
        page = signed_in.get(path).text
        assert HOSTILE not in page and "&lt;script&gt;alert(" in page, path
    flashed = post(signed_in, "/ui/credentials/new", {**SMTP_FORM, "name": HOSTILE}, follow_redirects=True).text
    assert HOSTILE not in flashed and "&lt;script&gt;alert(" in flashed


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_ui_other_tenants_credentials_are_not_found(signed_in, services, other_account, method):
    credential = make_credential(services, other_account)
    url = f"/ui/credentials/{credential.id}/delete"
    response = post(signed_in, url) if method == "POST" else signed_in.get(url)
    assert response.status_code == 404 and "Not found" in response.text
    assert listed(services, other_account) == [credential]
    assert credential.id not in signed_in.get("/ui/credentials").text


@pytest.mark.parametrize("path", ["/ui/credentials/new", "/ui/credentials/{id}/delete"])
@pytest.mark.parametrize("token", [None, "", "forged"])
def test_ui_credential_forms_refuse_a_missing_or_wrong_csrf_token(signed_in, services, account, path, token):
    credential = make_credential(services, account)
    data = {**SMTP_FORM, **({} if token is None else {"csrf_token": token})}
    response = signed_in.post(path.format(id=credential.id), data=data)
    assert response.status_code == 403 and "did not come from this dashboard" in response.text
    assert listed(services, account) == [credential]
