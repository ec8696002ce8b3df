"""Fixtures for the browser tests: Debian's Chromium driven by Playwright's sync API.

The tests are skipped when /usr/bin/chromium is missing (install it with `make browser`), except
under CI=true where a missing browser is a failure: CI must not pass by silently skipping them.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

# Playwright's sync API runs an asyncio event loop in this thread; without this, ORM calls made in
# fixtures and assertions raise SynchronousOnlyOperation.
os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
HERE = Path(__file__).resolve().parent
SCREENSHOTS = HERE / "screenshots"
IN_CI = os.environ.get("CI", "").strip().lower() == "true"


def browser_unavailable_reason() -> str | None:
    if not (CHROMIUM.is_file() and os.access(CHROMIUM, os.X_OK)):
        return f"{CHROMIUM} is missing: install Debian's chromium (`make browser`) to run the browser tests"
    return None


BROWSER_UNAVAILABLE = browser_unavailable_reason()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip every test of this folder, with the reason, when Chromium is missing (unless CI=true).

    A hook rather than a module-level pytest.skip() in this conftest: that one crashes the run when the
    folder is named on the command line (`pytest tests/browser`), because the conftest is then loaded
    before collection starts.
    """
    if BROWSER_UNAVAILABLE is None or IN_CI:
        return
    skip = pytest.mark.skip(reason=BROWSER_UNAVAILABLE)
    for item in items:
        if HERE in Path(item.path).parents:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    if BROWSER_UNAVAILABLE:  # only reached under CI=true: there a missing browser is a failure
        pytest.fail(f"CI=true but the browser tests cannot run: {BROWSER_UNAVAILABLE}")

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser: Browser, live_server: Any) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1366, "height": 900}, base_url=live_server.url)
    context.set_default_timeout(10_000)
    page = context.new_page()
    try:
        yield page
    finally:
        context.close()


@pytest.fixture
def screenshot(page: Page) -> Callable[[str], Path]:
    """`screenshot("name")` saves a full-page PNG to tests/browser/screenshots/name.png."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)

    def take(name: str) -> Path:
        path = SCREENSHOTS / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        return path

    return take
