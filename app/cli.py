"""Admin commands: `flask --app wsgi <command>`. Each docstring is the command's --help."""
from __future__ import annotations

import json
from datetime import timedelta

import click
import requests
from flask import Flask, current_app
from flask.cli import AppGroup, with_appcontext

from app import sender
from app.api.serialize import execution_json
from app.engine import retention
from app.models import ExecutionStatus, User, isoformat, new_id, utcnow
from app.security.apikeys import issue_key
from app.security.crypto import UndecryptableSecret
from app.services import Services
from app.store import DuplicateError
from app.worker_command import worker

users = AppGroup("users", help="Manage users.")
keys = AppGroup("keys", help="Issue and revoke API keys.")
workflows = AppGroup("workflows", help="Inspect workflows.")
executions = AppGroup("executions", help="Inspect and purge executions.")
webhooks = AppGroup("webhooks", help="Try workflows as a webhook sender would.")
secrets = AppGroup("secrets", help="Manage the encryption of stored secrets.")


def _services() -> Services:
    return current_app.extensions["ipaas"]


@click.command("init-db")
@with_appcontext
def init_db() -> None:
    """Create or migrate the database schema (safe to run twice)."""
    _services().store.init_schema()
    click.echo("database ready")


@users.command("create")
@click.argument("email")
@click.option("--tenant", required=True, help="Tenant name; created if it does not exist.")
def create_user(email: str, tenant: str) -> None:
    """Create a user in TENANT and print a new API key alone on the last line."""
    store, now = _services().store, utcnow()
    if "@" not in email or len(email) > 320:
        raise click.BadParameter(f"not an email address: {email!r}", param_hint="EMAIL")
    tenant_record = store.ensure_tenant(tenant, tenant_id=new_id("tn", now), now=now)
    try:
        user = store.create_user(User(id=new_id("usr", now), tenant_id=tenant_record.id, email=email, created_at=now))
    except DuplicateError:
        raise click.ClickException(f"a user with email {email!r} already exists") from None
    click.echo(f"created user {user.id} ({email}) in tenant {tenant_record.name} ({tenant_record.id})")
    click.echo(issue_key(store, user, now=now))


@keys.command("create")
@click.argument("email")
def create_key(email: str) -> None:
    """Issue another API key for the user EMAIL; the key is printed alone on the last line."""
    store = _services().store
    user = store.get_user_by_email(email)
    if user is None:
        raise click.ClickException(f"no user with email {email!r}")
    click.echo(issue_key(store, user, now=utcnow()))


@keys.command("revoke")
@click.argument("key_prefix")
def revoke_key(key_prefix: str) -> None:
    """Revoke the API key whose visible prefix (e.g. ipk_1a2b3c4d) is KEY_PREFIX."""
    if not _services().store.revoke_api_key(key_prefix, now=utcnow()):
        raise click.ClickException(f"no active key with prefix {key_prefix!r}")
    click.echo(f"revoked {key_prefix}")


@workflows.command("list")
@click.option("--tenant", "tenant_id", default=None,
              help="Only this tenant id (tn_..., as `users create` prints it).")
@click.option("--limit", default=200, show_default=True, type=click.IntRange(1, 200))
def list_workflows(tenant_id: str | None, limit: int) -> None:
    """List workflows, newest first, one JSON object per line."""
    for wf in _services().store.list_workflows(tenant_id, limit=limit).items:
        one_step = len(wf.steps) == 1  # as the API shows it: action_type only for a workflow of one step
        click.echo(json.dumps({"id": wf.id, "tenant_id": wf.tenant_id, "name": wf.name,
                               "trigger_type": wf.trigger_type, "action_type": wf.action_type if one_step else None,
                               "steps": [step.name for step in wf.steps],
                               "enabled": wf.enabled, "created_at": isoformat(wf.created_at)}))


@executions.command("list")
@click.option("--workflow", "workflow_id", default=None, help="Only executions of this workflow id.")
@click.option("--status", type=click.Choice([s.value for s in ExecutionStatus]), default=None)
@click.option("--limit", default=200, show_default=True, type=click.IntRange(1, 200))
def list_executions(workflow_id: str | None, status: str | None, limit: int) -> None:
    """List executions of every tenant, newest first, one JSON object per line."""
    page = _services().store.list_executions(None, workflow_id=workflow_id, limit=limit,
                                             status=ExecutionStatus(status) if status else None)
    steps = _services().steps_of(None, page.items)
    for execution in page.items:
        body = execution_json(execution, steps[execution.id])
        body.pop("payload"), body.pop("headers"), body.pop("query")
        click.echo(json.dumps(body))


@executions.command("purge")
@click.option("--older-than", "days", required=True, type=click.FloatRange(min=0), help="Age in days.")
def purge_executions(days: float) -> None:
    """Delete finished executions created more than DAYS days ago, in batches of 500 (each a short
    transaction, so a running service keeps writing meanwhile)."""
    store, before, removed = _services().store, utcnow() - timedelta(days=days), 0
    while True:
        batch = store.purge_executions(before=before, limit=retention.BATCH)
        removed += batch
        if batch < retention.BATCH:
            break
    click.echo(f"purged {removed} executions")


@secrets.command("rotate")
def rotate_secrets() -> None:
    """Re-encrypt every stored secret with the first key of IPAAS_SECRET_KEY, in one transaction.

    Put the new key first and keep the old ones after it (IPAAS_SECRET_KEY=new,old), run this, then
    the old keys may be dropped. If any stored secret decrypts under none of the keys, nothing changes."""
    services = _services()
    try:
        count = services.store.rewrite_secrets(services.box.rotate)
    except UndecryptableSecret as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"re-encrypted {count} stored secrets with the first key of IPAAS_SECRET_KEY")


@webhooks.command("send")
@click.argument("workflow_id")
@click.option("--data", default=None, help="The JSON body to send (default {}).")
@click.option("--file", "file", type=click.File("rb"), default=None, help="Send this file's bytes as the body.")
@click.option("--url", "base_url", default="http://127.0.0.1:8080", show_default=True, envvar="IPAAS_URL",
              help="The service's base URL (or IPAAS_URL).")
@click.option("--secret", default=None, envvar="IPAAS_WEBHOOK_SECRET",
              help="Sign per Standard Webhooks with this secret (or IPAAS_WEBHOOK_SECRET); whsec_ secrets are "
                   "base64-decoded.")
@click.option("--content-type", default="application/json", show_default=True)
def send_webhook(workflow_id: str, data: str | None, file, base_url: str, secret: str | None,
                 content_type: str) -> None:
    """Post a test event to WORKFLOW_ID's webhook and print the status and body; exits 1 unless 2xx."""
    if data is not None and file is not None:
        raise click.UsageError("give --data or --file, not both")
    try:
        body = sender.event_body(data, file.read() if file is not None else None)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--data") from None
    try:
        response = sender.send_event(base_url, workflow_id, body, secret=secret, content_type=content_type)
    except requests.RequestException as exc:
        raise click.ClickException(f"no answer from {base_url}: {exc}") from None
    click.echo(f"{response.status_code} {response.reason}")
    click.echo(response.text)
    if not 200 <= response.status_code < 300:
        raise SystemExit(1)


def init_app(app: Flask) -> None:
    for command in (init_db, users, keys, workflows, executions, webhooks, worker, secrets):
        app.cli.add_command(command)
