"""The report in a real browser: headless Debian Chromium driven by Playwright (never a downloaded browser).
With every network request intercepted, the page must make none, log no console error, and its module
tree must expand, filter and sort. Screenshots land in reports/ (git-ignored)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ..conftest import require_tool
from .conftest import BLAMED, ROOT

pytestmark = [pytest.mark.browser, pytest.mark.official, pytest.mark.slow]

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--no-first-run"]  # fmt: skip


def _playwright():  # type: ignore[no-untyped-def]
    if os.environ.get("CI"):
        from playwright.sync_api import sync_playwright  # in CI a missing Playwright is a failure, not a skip
    else:
        sync_playwright = pytest.importorskip("playwright.sync_api").sync_playwright
    return sync_playwright


class Visit:
    """One page load with every request recorded; anything but the report file itself is aborted."""

    def __init__(self, browser, html: Path) -> None:  # type: ignore[no-untyped-def]
        self.url = html.resolve().as_uri()
        self.requests: list[str] = []
        self.blocked: list[str] = []
        self.errors: list[str] = []
        self.context = browser.new_context(viewport={"width": 1400, "height": 1000}, offline=True)
        self.context.route("**/*", self._route)
        self.page = self.context.new_page()
        self.page.on("request", lambda request: self.requests.append(request.url))
        self.page.on("console", lambda message: self.errors.append(message.text) if message.type == "error" else None)
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))
        self.page.goto(self.url, wait_until="load")

    def _route(self, route) -> None:  # type: ignore[no-untyped-def]
        if route.request.url == self.url:
            route.continue_()
        else:
            self.blocked.append(route.request.url)
            route.abort()

    def external(self) -> list[str]:
        return [u for u in self.requests if u != self.url and not u.startswith("data:")] + self.blocked

    def rows(self) -> int:
        return self.page.locator("#tree-root .tree-row").count()


@pytest.fixture(scope="module")
def browser():  # type: ignore[no-untyped-def]
    chromium = require_tool("chromium")
    sync_playwright = _playwright()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=FLAGS)
        yield browser
        browser.close()


def test_the_planted_report_works_offline_and_its_module_tree_expands(browser, planted_reports: Path) -> None:  # type: ignore[no-untyped-def]
    visit = Visit(browser, planted_reports / "index.html")
    page = visit.page
    assert page.locator("#verdict").get_attribute("data-verdict") == "fail"
    assert visit.rows() > 0
    # the path to the failing module is opened on load; a passing subtree is closed until clicked
    assert (
        page.locator('#tree-root .tree-row[data-path="speech_tokenizer.decoder.decoder.2.block.3.conv1"]').count() == 1
    )
    closed = page.locator('#tree-root .tree-row:has(button.toggle[aria-expanded="false"])').first
    path = closed.get_attribute("data-path")
    before = visit.rows()
    closed.locator("button.toggle").click()
    assert visit.rows() > before
    assert (
        page.locator(f'#tree-root .tree-row[data-path="{path}"] button.toggle').get_attribute("aria-expanded") == "true"
    )
    assert (
        page.locator(f'#tree-root .tree-row[data-path^="{path}."], #tree-root .tree-row[data-path^="{path}:"]').count()
        > 0
    )
    # filter: only the matching modules and their ancestors remain
    page.fill("#tree-filter", "block.3.conv1")
    page.locator("#tree-root .tree-row.hit").first.wait_for()  # (the page's CSP forbids eval: no wait_for_function)
    hits = page.locator("#tree-root .tree-row.hit")
    assert all("block.3.conv1" in hits.nth(i).get_attribute("data-path") for i in range(hits.count()))
    assert page.locator(f'#tree-root .tree-row.hit[data-path="{BLAMED}"]').count() == 1
    # sort by worst margin: the failing top-level module comes first
    page.fill("#tree-filter", "")
    page.select_option("#tree-sort", "margin")
    page.wait_for_timeout(300)
    assert page.locator("#tree-root .tree-row").first.get_attribute("data-status") == "fail"
    # the overview's blamed module links into the tree, filtered to that module in that case
    page.locator('#overview tr[data-case="end_to_end"] td.blame[data-mode="chained"] a').click()
    assert page.input_value("#tree-filter") == BLAMED
    assert page.locator("#tree-case option:checked").inner_text() == "end_to_end"
    page.locator(f'#tree-root .tree-row.hit[data-path="{BLAMED}"]').wait_for()
    page.locator("#case-codec_decode_long > summary").scroll_into_view_if_needed()
    (ROOT / "reports").mkdir(exist_ok=True)
    page.screenshot(path=str(ROOT / "reports" / "report-planted.png"), full_page=False)
    assert visit.external() == []
    assert visit.errors == []
    visit.context.close()


def test_the_full_report_loads_offline_without_console_errors(browser, full_reports: Path) -> None:  # type: ignore[no-untyped-def]
    visit = Visit(browser, full_reports / "index.html")
    page = visit.page
    assert page.locator("#verdict").get_attribute("data-verdict") == "pass"
    top = visit.rows()
    page.click("#tree-expand")
    assert visit.rows() > top * 10  # every module of every case, expanded
    page.select_option("#tree-case", label="end_to_end")
    page.select_option("#tree-mode", label="chained")
    assert "in end_to_end" in page.locator("#tree-info").inner_text()
    page.click("#open-all")
    page.screenshot(path=str(ROOT / "reports" / "report-full.png"), full_page=False)
    # every panel open, the tree expanded: nothing is wider than an 1100 px window (long tensor paths wrap)
    page.set_viewport_size({"width": 1100, "height": 1000})
    page.wait_for_timeout(200)
    assert page.evaluate("document.documentElement.scrollWidth") <= 1100
    assert visit.external() == []
    assert visit.errors == []
    visit.context.close()
