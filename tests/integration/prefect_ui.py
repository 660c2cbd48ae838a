"""Drive the real Prefect UI (3.9.1) with Playwright: start a deployment run through its
"Custom run" parameter form and watch the run's state on its page.

Sync Playwright API: call these from plain (non-async) test functions; the sync API refuses
to run inside a running asyncio loop.

Prefect 3.9.1 ships two UIs on the same server: V1 (Vue, at ``/``) and V2 (React, at
``/v2``). A browser without a UI cookie that opens ``/`` is redirected to ``/v2``; deep links
such as ``/deployments/deployment/<id>`` (what ``serve()`` prints) stay on V1. Both show the
same form; ``ui="v1"`` or ``ui="v2"`` picks one, and the selectors below work on both.

Pitfalls the helpers deal with:

* the server must be started with ``PREFECT_UI_API_URL=http://<host>:<port>/api`` matching
  its ``--host/--port``: the CLI flags do not reach
  ``/ui-settings``, whose ``api_url`` otherwise stays ``http://127.0.0.1:4200/api`` and
  the UI shows only "Can't connect to Server API";
* an optional field (``str | None``, ``Literal[...] | None``, ``list[str] | None``) is shown as
  a "str | None" (or "list | None") segmented switch preset to "None", with no input at all;
  the "str" segment must be clicked before a text area / select appears;
* labels are ``"<schema title> (Optional)"`` (no suffix for required ones), with the schema
  description under them. Prefect 3.9.1 builds the schema with ``Field(title=<param name>,
  description=<docstring Args: entry>)`` on top of the annotation, which overrides an
  ``Annotated[..., Field(title=..., description=...)]``: such a flow's form reads
  ``ref (Optional)`` with no description. Titles/descriptions given through
  ``Field(json_schema_extra={"title": ..., "description": ...})`` (in ``Annotated`` or as the
  default) survive. ``params`` are keyed by parameter *name*; the helper looks the label up
  in the deployment's schema.
"""

from __future__ import annotations

import contextlib
import json
import re
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from playwright.sync_api import Locator, Page, Response, sync_playwright
from playwright.sync_api import TimeoutError as PlaywrightTimeout

CHROMIUM = "/usr/bin/chromium"
VIEWPORT = {"width": 1400, "height": 1000}
# State names the run page's state badge can show (prefect.client.schemas.objects.StateType,
# plus the common named states).
STATE_NAMES = ("Scheduled", "Late", "AwaitingRetry", "AwaitingConcurrencySlot", "Pending",
               "Submitting", "Running", "Retrying", "Paused",
               "Suspended", "Cancelling", "Cancelled", "Completed", "Cached", "RolledBack",
               "Failed", "Crashed", "TimedOut")


@contextlib.contextmanager
def open_browser(*, executable_path: str = CHROMIUM, headless: bool = True) -> Iterator[Page]:
    """A fresh headless Chromium page (1400x1000). ``--no-sandbox`` because tests run as root;
    Debian's chromium is used because ``playwright install`` cannot download here."""
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=executable_path, headless=headless,
                                     args=["--no-sandbox", "--disable-dev-shm-usage"])
        try:
            context = browser.new_context(viewport=VIEWPORT)
            page = context.new_page()
            page.set_default_timeout(30_000)  # the first load of the UI bundle takes a few s
            yield page
        finally:
            browser.close()


def _base(ui_url: str, ui: str) -> str:
    root = ui_url.rstrip("/")
    return f"{root}/v2" if ui == "v2" else root


def _api_get(ui_url: str, path: str) -> dict:
    with urllib.request.urlopen(f"{ui_url.rstrip('/')}/api{path}", timeout=10) as resp:
        return json.load(resp)


def deployment(ui_url: str, flow_name: str, deployment_name: str) -> dict:
    """The deployment as the REST API returns it (used only to find its page and field titles)."""
    return _api_get(ui_url, f"/deployments/name/{flow_name}/{deployment_name}")


def _field_block(page: Page | Locator, label: str) -> Locator:
    """The form block of one parameter: the nearest element around its ``<label>`` that also
    holds the input's ``<fieldset>``. Both UIs render ``<label>ref (Optional)</label>``
    (V1 nests a ``<span>`` and an icon button in it, hence normalize-space). ``page`` may be
    a locator (a dialog) to look only inside it."""
    quoted = json.dumps(label)  # XPath 1.0 string literal; titles have no double quotes
    return page.locator(
        f"xpath=//label[normalize-space()={quoted} or normalize-space()={json.dumps(label + ' (Optional)')}]"
        "/ancestor::div[.//fieldset][1]")


def _segment(block: Locator, name: str) -> Locator:
    # The "str | None" switch: V2 role=tab buttons, V1 plain buttons with aria-selected.
    return (block.get_by_role("tab", name=name, exact=True)
            .or_(block.get_by_role("button", name=name, exact=True)))


def _fill_field(page: Page, block: Locator, value: str) -> None:
    block.wait_for()
    # Optional fields start on the "None" segment, which has no input; pick the value type.
    for kind in ("str", "string"):
        seg = _segment(block, kind)
        if seg.count():
            seg.first.click()
            break
    box = block.get_by_role("textbox")  # str fields are a <textarea rows=1> in both UIs
    switch = block.get_by_role("switch")  # bool fields
    if box.count():
        box.first.fill(value)
        return
    if switch.count():
        want = value.strip().lower() in ("1", "true", "yes", "on")
        if (switch.first.get_attribute("aria-checked") == "true") != want:
            switch.first.click()
        return
    # Enum (Literal) fields: a select. V2: a "Select" popover button (aria-haspopup=listbox);
    # V1: an unlabelled p-select button that a mouse click does not open in headless Chromium
    # (a focused Space does). Both list the choices as role=option.
    trigger = block.locator("fieldset").get_by_role("button").filter(
        has_not_text=re.compile(r"^\s*(str|None)\s*$")).last
    option = page.get_by_role("option", name=value, exact=True)
    trigger.click()
    try:
        option.wait_for(state="visible", timeout=1500)
    except PlaywrightTimeout:
        trigger.focus()
        page.keyboard.press(" ")
    option.click()


def start_run_from_form(page: Page, ui_url: str, flow_name: str, deployment_name: str,
                        params: dict[str, str], *, ui: str = "v1") -> str:
    """Open the deployment's page, click Run -> Custom run, fill ``params`` (parameter name ->
    value typed into the form), Submit; return the id of the flow run the UI created.

    The id comes from the UI's own ``POST /api/deployments/<id>/create_flow_run`` response,
    so it is exactly the run that this click started."""
    dep = deployment(ui_url, flow_name, deployment_name)
    props = (dep.get("parameter_openapi_schema") or {}).get("properties", {})
    page.goto(f"{_base(ui_url, ui)}/deployments/deployment/{dep['id']}")
    # Deployment page header: a "Run" button; it opens a menu of "Quick run" / "Custom run"
    # (V1: buttons; V2: role=menuitem holding a link to .../run?parameters=...).
    page.get_by_role("button", name="Run", exact=True).click()
    page.get_by_role("menuitem", name="Custom run").or_(
        page.get_by_role("button", name="Custom run", exact=True)).first.click()
    page.wait_for_url(re.compile(r"/deployments/deployment/[^/]+/run"))
    # The form: "Run Name", "Parameters", one block per parameter, "Start: Now | Later",
    # "Additional Options", then "Cancel" / "Submit".
    page.get_by_role("button", name="Submit", exact=True).wait_for()
    for name, value in params.items():
        title = (props.get(name) or {}).get("title") or name
        _fill_field(page, _field_block(page, title), value)
    resp = _submit(page, page.get_by_role("button", name="Submit", exact=True), "/create_flow_run")
    return resp.json()["id"]


def _submit(page: Page, button: Locator, endpoint: str) -> Response:
    """Click ``button`` and return the UI's POST to ``endpoint``. Prefect on SQLite answers 503
    when its database is busy (SQLITE_BUSY_SNAPSHOT does not wait for busy_timeout); nothing
    happened, the UI shows a toast and stays on the form, and a person clicks again. So does
    this, twice at most."""
    for _attempt in range(3):
        with page.expect_response(lambda r: r.request.method == "POST" and endpoint in r.url) as sent:
            button.click()
        resp = sent.value
        if resp.status != 503:
            break
        time.sleep(1)
    if not resp.ok:
        raise AssertionError(f"the UI's POST {endpoint} failed: {resp.status} {resp.text()}")
    return resp


_STATE_TEXT = re.compile("^(" + "|".join(STATE_NAMES) + ")$")


def _shown_state(page: Page) -> str | None:
    """The flow run's state as its page shows it: the header's state badge (V1: a green
    "Completed" pill next to the run name; V2: a "✓ Completed" badge), i.e. the first element
    on the page whose whole text is a state name. Logs say "Completed()", so they never match."""
    badge = page.get_by_text(_STATE_TEXT).first
    try:
        badge.wait_for(state="visible", timeout=1000)
        return badge.inner_text().strip()
    except PlaywrightTimeout:
        return None


def wait_for_state(page: Page, ui_url: str, flow_run_id: str, state: str = "Completed",
                   timeout_s: float = 120, *, ui: str = "v1", reload_every_s: float = 10) -> None:
    """Open the flow run's page and wait until its state badge shows ``state``; the page polls
    the API by itself, and is reloaded every ``reload_every_s`` in case it stalls."""
    # V1 redirects /flow-runs/flow-run/<id> to /runs/flow-run/<id>; V2 is /v2/runs/flow-run/<id>.
    url = f"{_base(ui_url, ui)}/runs/flow-run/{flow_run_id}"
    page.goto(url)
    deadline = time.monotonic() + timeout_s
    last_reload = time.monotonic()
    seen = None
    while True:
        seen = _shown_state(page) or seen
        if seen == state:
            return
        now = time.monotonic()
        if now > deadline:
            raise AssertionError(f"flow run {flow_run_id} did not show {state!r} in the UI within "
                                 f"{timeout_s:.0f}s; last seen state: {seen!r} ({url})")
        if now - last_reload > reload_every_s:
            page.reload()
            last_reload = now
        else:
            page.wait_for_timeout(500)


def approve_in_ui(ui_url: str, flow_run_id: str, *, approve: bool, approver: str, reason: str,
                  timeout_s: float = 60, ui: str = "v1", page: Page | None = None) -> str:
    """Answer a run paused by ``flows.approval.ask_approval`` as a person does in the UI: open
    the run's page, click Resume, set the "Approve" switch, type ``approver`` into "Your name"
    and ``reason`` into "Reason", submit; return once the server no longer has the run Paused.

    Returns the modal's visible text (``inner_text``: the pause description rendered from
    markdown, then the form's labels), so a caller can assert the plan was shown.

    Where things are (3.9.1):

    * V1 (``/runs/flow-run/<id>``): a "Resume" button in the run header (only while the run is
      paused) opens a ``role=dialog`` "Resume Flow Run" modal whose footer has "Submit" / "Close";
    * V2 (``/v2/runs/flow-run/<id>``): no header button; the header's unnamed ⋮ menu button
      (``aria-haspopup=menu``, the only one on the page) holds a "Resume" menuitem, and the
      dialog's buttons are "Cancel" / "Resume";
    * both render the description (markdown: heading, table) above the form, and the form's
      labels are ``"<title> (Optional)"`` with a ``role=switch`` for bools and a textarea for
      strs, so ``_field_block``/``_fill_field`` work inside the dialog.

    The UI posts ``/api/flow_runs/<id>/resume`` with the form as ``run_input``; a validation
    failure comes back 200 with ``status != "ACCEPT"`` (raised here), a busy SQLite as 503
    (submitted again, like ``start_run_from_form``). Without ``page``, a fresh browser
    (``open_browser``) is used and closed."""
    if page is None:
        with open_browser() as fresh:
            return approve_in_ui(ui_url, flow_run_id, approve=approve, approver=approver, reason=reason,
                                 timeout_s=timeout_s, ui=ui, page=fresh)
    deadline = time.monotonic() + timeout_s
    page.goto(f"{_base(ui_url, ui)}/runs/flow-run/{flow_run_id}")
    if ui == "v2":
        page.locator("button[aria-haspopup=menu]").first.click()
        page.get_by_role("menuitem", name="Resume", exact=True).click()
    else:
        page.get_by_role("button", name="Resume", exact=True).click()
    dialog = page.get_by_role("dialog").filter(has_text="Resume Flow Run")
    submit = dialog.get_by_role("button", name=re.compile(r"^\s*(Submit|Resume)\s*$"))
    submit.wait_for()
    _field_block(dialog, "Approve").get_by_role("switch").wait_for()
    shown = dialog.inner_text()
    _fill_field(page, _field_block(dialog, "Approve"), "true" if approve else "false")
    _fill_field(page, _field_block(dialog, "Your name"), approver)
    _fill_field(page, _field_block(dialog, "Reason"), reason)
    result = _submit(page, submit, f"/flow_runs/{flow_run_id}/resume").json()
    if result.get("status") != "ACCEPT":
        raise AssertionError(f"the server did not accept the UI's answer: {result}")
    while True:
        state = (_api_get(ui_url, f"/flow_runs/{flow_run_id}").get("state") or {}).get("type")
        if state != "PAUSED":
            return shown
        if time.monotonic() > deadline:
            raise AssertionError(f"flow run {flow_run_id} still Paused {timeout_s:.0f}s after the UI's answer")
        time.sleep(0.3)


def screenshot(page: Page, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(path), full_page=True)
    return path
