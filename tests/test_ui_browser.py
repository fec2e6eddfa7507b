"""The dashboard as a person uses it: headless Chromium against the real service under gunicorn.

Sign in with a key the CLI made, create a workflow through the form, send it a webhook, watch the
execution appear and succeed without a reload, open it, replay it, cancel a blocked one, add a credential,
watch the two steps of a workflow that uses it succeed, sign out; and the same execution page without
JavaScript. Screenshots of each main page land in tmp_path/screens."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.browser import chromium, start_chromium  # noqa: F401 (fixture)
from tests.receiver import Receiver, Reply
from tests.serverproc import ServerStack, create_user, wait_until

pytestmark = pytest.mark.slow
WAIT = 15.0  # seconds for anything the page shows by itself (polls are 1-2 s apart)
HEADER_SECRET = "k-SECRET-42"


def by_css(driver, selector: str):
    from selenium.webdriver.common.by import By

    return driver.find_element(By.CSS_SELECTOR, selector)


def all_css(driver, selector: str):
    from selenium.webdriver.common.by import By

    return driver.find_elements(By.CSS_SELECTOR, selector)


def button(driver, label: str):
    from selenium.webdriver.common.by import By

    return driver.find_element(By.XPATH, f"//button[normalize-space()='{label}']")


def shoot(driver, tmp_path: Path, name: str) -> None:
    folder = tmp_path / "screens"
    folder.mkdir(exist_ok=True)
    driver.save_screenshot(str(folder / f"{name}.png"))


def text(driver, selector: str) -> str:
    """The element's text, or "" while a navigation or an htmx swap replaces it."""
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException, WebDriverException

    try:
        return by_css(driver, selector).text
    except (NoSuchElementException, StaleElementReferenceException):
        return ""
    except WebDriverException as error:
        # A page that reloads itself (meta refresh) can drop the node between finding and reading it;
        # chromedriver then reports "Node with given id does not belong to the document".
        if "does not belong to the document" in error.msg:
            return ""
        raise


def shows(driver, selector: str, wanted: str) -> None:
    wait_until(lambda: wanted in text(driver, selector), WAIT, f"{selector} never showed {wanted!r}")


def status_text(driver) -> str:
    return text(driver, "#execution-status .status")


def mark_page(driver) -> None:
    """Tag the loaded document: the tag survives htmx swaps and disappears on any reload."""
    driver.execute_script("window.ipaasNoReload = true")


def still_same_page(driver) -> bool:
    return driver.execute_script("return window.ipaasNoReload === true")


@pytest.fixture
def service(tmp_path):
    with Receiver() as receiver, ServerStack(tmp_path, {"IPAAS_ALLOW_PRIVATE_NETWORKS": "true"}) as stack:
        receiver.respond("/hook", Reply(200, body='{"ok": true}', headers={"Content-Type": "application/json"}))
        receiver.respond("/slow", Reply(hang=True))
        receiver.respond("/gate", Reply(hang=True))  # a step that holds until the test releases it
        user = create_user(tmp_path, "ada@example.com", "acme")
        yield stack.start(), receiver, user


def test_ui_browser_sign_in_create_watch_replay_cancel_sign_out(chromium, service, tmp_path):
    server, receiver, user = service
    driver = chromium
    driver.get(server.url("/"))
    assert driver.current_url.startswith(server.url("/ui/login"))
    shoot(driver, tmp_path, "01-login")
    by_css(driver, "input[name=api_key]").send_keys(user.key)
    button(driver, "Sign in").click()
    shows(driver, "main", "No workflows yet.")
    shoot(driver, tmp_path, "02-workflows-empty")

    # Create a workflow through the form; a bad config first, to see the error beside the field.
    driver.find_element("link text", "Create your first workflow").click()
    by_css(driver, "#name").send_keys('Orders <b>to</b> "CRM"')
    config = by_css(driver, "#config")
    config.clear()
    config.send_keys(json.dumps({"url": "ftp://nowhere"}))
    button(driver, "Create workflow").click()
    shows(driver, "#config-error", "config.url must be an http")
    shoot(driver, tmp_path, "03-workflow-form-error")
    config = by_css(driver, "#config")
    config.clear()
    config.send_keys(json.dumps({"url": receiver.url("/hook"), "body": {"order": "{{ payload.id }}"}}))
    button(driver, "Create workflow").click()
    shows(driver, "h1", 'Orders <b>to</b> "CRM"')
    webhook_url = by_css(driver, "#webhook-url").get_attribute("value")
    assert webhook_url.startswith(server.url("/api/webhooks/wf_"))
    assert button(driver, "Copy").is_displayed()
    shoot(driver, tmp_path, "04-workflow")

    # Watch the executions list while a sender posts: the row appears and succeeds with no reload.
    driver.find_element("link text", "all executions").click()
    shows(driver, "main", "No execution matches these filters yet.")
    mark_page(driver)
    path = webhook_url[len(server.url("")):]
    answer = server.request("POST", path, body={"id": "ord_1"})
    assert answer.status == 202
    execution_id = answer.json()["execution_id"]
    row = f"#row-{execution_id}"
    shows(driver, row, "succeeded")
    assert still_same_page(driver), "the list was reloaded instead of refreshed"
    assert receiver.requests("/hook")[0].json() == {"order": "ord_1"}
    shoot(driver, tmp_path, "05-executions")

    # Open it, then replay it: the new execution's page refreshes itself until it succeeds.
    by_css(driver, f"{row} a[href$='{execution_id}']").click()
    shows(driver, "#execution-id", execution_id)
    assert status_text(driver) == "succeeded"
    assert '"id": "ord_1"' in by_css(driver, "#payload").text
    assert not [b for b in all_css(driver, "button") if b.text == "Cancel"]
    shoot(driver, tmp_path, "06-execution")
    button(driver, "Replay").click()
    wait_until(lambda: text(driver, "#execution-id") not in ("", execution_id), WAIT, "replay did not open its page")
    wait_until(lambda: status_text(driver) == "succeeded", WAIT, "the replay never showed as succeeded")
    assert f"replay of {execution_id}" in by_css(driver, "dl.facts").text
    receiver.wait_for(2, path="/hook")

    # A workflow whose destination never answers: run it now, watch it run, cancel it.
    server.request("POST", "/api/workflows", headers=user.auth, body={
        "name": "slow partner", "trigger_type": "manual", "action_type": "http_request",
        "config": {"url": receiver.url("/slow")}})
    driver.get(server.url("/ui/workflows"))
    driver.find_element("link text", "slow partner").click()
    shows(driver, "h1", "slow partner")
    button(driver, "Run now").click()
    receiver.wait_for(1, path="/slow")
    wait_until(lambda: status_text(driver) == "running", WAIT, "the blocked execution never showed as running")
    shoot(driver, tmp_path, "07-execution-running")
    button(driver, "Cancel").click()
    wait_until(lambda: status_text(driver) == "cancelled", WAIT, "the blocked execution was not cancelled")
    assert not [b for b in all_css(driver, "button") if b.text == "Cancel"]

    credential_id = create_credential_through_the_form(driver, tmp_path)
    watch_two_steps_succeed(driver, tmp_path, receiver, credential_id)

    driver.get(server.url("/ui/queue"))
    shows(driver, "#workers-busy", "0")
    shows(driver, "main", "Recent failures")
    shoot(driver, tmp_path, "14-queue")
    nightly = server.request("POST", "/api/workflows", headers=user.auth, body={
        "name": "nightly report", "trigger_type": "schedule", "schedule": {"cron": "30 2 * * *", "timezone":
                                                                           "Europe/Berlin"},
        "action_type": "http_request", "config": {"url": receiver.url("/hook")}}).json()
    driver.get(server.url(f"/ui/workflows/{nightly['id']}/edit"))
    assert by_css(driver, "#schedule-cron").is_displayed() and by_css(driver, "#config").is_displayed()
    assert not by_css(driver, "#steps").is_displayed()
    shoot(driver, tmp_path, "15-workflow-form-schedule")
    driver.get(server.url("/ui/workflows"))
    shows(driver, "main", "next run")
    shoot(driver, tmp_path, "16-workflows")
    driver.set_window_size(390, 844)  # a phone
    driver.get(server.url("/ui/executions"))
    shoot(driver, tmp_path, "17-executions-phone")
    driver.set_window_size(1280, 900)

    button(driver, "Sign out").click()
    shows(driver, "main", "Signed out.")
    driver.get(server.url("/ui/workflows"))
    assert driver.current_url.startswith(server.url("/ui/login"))


def create_credential_through_the_form(driver, tmp_path: Path) -> str:
    """Add an http_header credential on the Credentials page, a bad header name first; return its id."""
    driver.find_element("link text", "Credentials").click()
    shows(driver, "main", "No credentials yet.")
    driver.find_element("link text", "Add your first credential").click()
    driver.find_element("link text", "http_header").click()
    by_css(driver, "#name").send_keys("partner key")
    by_css(driver, "#data-name").send_keys("X Api Key")
    by_css(driver, "#data-value").send_keys(HEADER_SECRET)
    button(driver, "Create credential").click()
    shows(driver, "#data-name-error", "data.name must be an HTTP header name")
    assert by_css(driver, "#data-value").get_attribute("value") == ""  # a secret is never sent back
    shoot(driver, tmp_path, "08-credential-form-error")
    by_css(driver, "#data-name").clear()
    by_css(driver, "#data-name").send_keys("X-Api-Key")
    by_css(driver, "#data-value").send_keys(HEADER_SECRET)
    button(driver, "Create credential").click()
    shows(driver, "main", "Credential “partner key” created.")
    assert HEADER_SECRET not in driver.page_source
    shoot(driver, tmp_path, "09-credentials")
    return by_css(driver, "tbody tr td code").text


def watch_two_steps_succeed(driver, tmp_path: Path, receiver: Receiver, credential_id: str) -> None:
    """Create a two-step workflow through the form (its second step holds at the receiver until released,
    with the credential's header), run it, and watch both steps turn succeeded without a reload."""
    from selenium.webdriver.support.select import Select

    steps = [{"name": "lookup", "action_type": "http_request", "config": {"url": receiver.url("/hook")}},
             {"name": "notify", "action_type": "http_request", "condition": "steps.lookup.status_code == 200",
              "credential_id": credential_id, "config": {"url": receiver.url("/gate")}}]
    driver.find_element("link text", "Workflows").click()
    driver.find_element("link text", "New workflow").click()
    by_css(driver, "#name").send_keys("lookup then notify")
    Select(by_css(driver, "#trigger_type")).select_by_value("manual")
    by_css(driver, "#mode-steps").click()
    assert not by_css(driver, "#config").is_displayed() and by_css(driver, "#steps").is_displayed()
    by_css(driver, "#steps").clear()
    by_css(driver, "#steps").send_keys(json.dumps(steps, indent=1))
    shoot(driver, tmp_path, "10-workflow-form-steps")
    button(driver, "Create workflow").click()
    shows(driver, "h1", "lookup then notify")
    shoot(driver, tmp_path, "11-workflow-steps")
    button(driver, "Run now").click()
    shows(driver, "#execution-id", "ex_")
    mark_page(driver)
    receiver.wait_for(1, path="/gate")
    shows(driver, "#step-notify .status", "running")
    assert text(driver, "#step-lookup .status") == "succeeded"
    shoot(driver, tmp_path, "12-execution-steps-running")
    receiver.release()
    shows(driver, "#step-notify .status", "succeeded")
    wait_until(lambda: status_text(driver) == "succeeded", WAIT, "the two-step execution never showed as succeeded")
    assert text(driver, "#step-lookup .status") == "succeeded"
    assert still_same_page(driver), "the execution page was reloaded instead of refreshed"
    assert receiver.requests("/gate")[0].headers["x-api-key"] == HEADER_SECRET
    shoot(driver, tmp_path, "13-execution-steps")


def test_ui_browser_without_javascript_reads_and_refreshes(service, tmp_path):
    server, receiver, user = service
    created = server.request("POST", "/api/workflows", headers=user.auth, body={
        "name": "slow partner", "trigger_type": "webhook", "action_type": "http_request",
        "config": {"url": receiver.url("/slow")}})
    workflow_id = created.json()["id"]
    driver = start_chromium(tmp_path / "nojs-profile", javascript=False)
    try:
        driver.get(server.url("/ui/login"))
        by_css(driver, "input[name=api_key]").send_keys(user.key)
        button(driver, "Sign in").click()
        shows(driver, "h1", "Workflows")
        execution_id = server.request("POST", f"/api/webhooks/{workflow_id}", body={"n": 1}).json()["execution_id"]
        receiver.wait_for(1, path="/slow")
        # Its action started without a claim: it is recorded running within a supervisor tick (README).
        wait_until(lambda: server.request("GET", f"/api/executions/{execution_id}", headers=user.auth).json()[
            "status"] == "running", 5, "the blocked action was never recorded running")
        driver.get(server.url(f"/ui/executions/{execution_id}"))
        assert status_text(driver) == "running"
        assert button(driver, "Cancel").is_displayed()
        receiver.release()  # the destination answers: the page reloads itself (meta refresh) until it ends
        wait_until(lambda: status_text(driver) == "succeeded", WAIT, "the page without JS never showed the end")
        button(driver, "Replay").click()  # a plain form post
        wait_until(lambda: text(driver, "#execution-id") not in ("", execution_id), WAIT, "replay without JS failed")
    finally:
        driver.quit()
