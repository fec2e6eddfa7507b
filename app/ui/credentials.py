"""Credential pages: list (names and types, never data), create with one input per data key, delete with a
confirmation that names the workflows still using it."""
from __future__ import annotations

from flask import flash, redirect, render_template, request, url_for
from werkzeug.wrappers import Response

from app import credentials
from app.errors import Conflict, ValidationFailed
from app.models import Credential
from app.ui import bp
from app.ui.credential_form import TYPE_HELP, CredentialForm
from app.ui.pages import principal, services

PAGE_SIZE = 50


@bp.get("/ui/credentials")
def credentials_list() -> str:
    cursor = request.args.get("cursor") or None
    page = services().list_credentials(principal(), limit=PAGE_SIZE, cursor=cursor)
    return render_template("credentials.html", page=page, cursor=cursor)


@bp.route("/ui/credentials/new", methods=["GET", "POST"])
def new_credential() -> Response | str | tuple[str, int]:
    if request.method == "GET":
        kind = request.args.get("type", "")
        return _form_page(CredentialForm.blank(kind if kind in credentials.TYPES else next(iter(credentials.TYPES))))
    form = CredentialForm.posted(request.form)
    try:
        credential = services().create_credential(principal(), form.body())
    except ValidationFailed as error:
        form.refuse(error)
        return _form_page(form), 422
    flash(f"Credential “{credential.name}” created. Steps use it by its id, {credential.id}, "
          f"as their credential_id.", "info")
    return redirect(url_for("ui.credentials_list"), 303)


def _form_page(form: CredentialForm) -> str:
    return render_template("credential_form.html", form=form, types=TYPE_HELP)


@bp.route("/ui/credentials/<credential_id>/delete", methods=["GET", "POST"])
def delete_credential(credential_id: str) -> Response | str | tuple[str, int]:
    credential = services().get_credential(principal(), credential_id)
    if request.method == "GET":
        return _delete_page(credential)
    try:
        services().delete_credential(principal(), credential_id)
    except Conflict:
        return _delete_page(credential, refused=True), 409
    flash(f"Credential “{credential.name}” deleted.", "info")
    return redirect(url_for("ui.credentials_list"), 303)


def _delete_page(credential: Credential, *, refused: bool = False) -> str:
    users = services().workflows_using_credential(principal(), credential.id)
    return render_template("credential_delete.html", credential=credential, users=users, refused=refused)
