"""What every browser test does the same way: sign in through the login page."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from playwright.sync_api import Page, expect

PASSWORD = "correct-horse-battery"

Screenshot = Callable[[str], Path]


def sign_in(page: Page, live_server: Any, *, email: str, screenshot: Screenshot | None = None) -> None:
    page.goto(live_server.url + "/login/")
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    page.locator("#id_username").fill(email)
    page.locator("#id_password").fill(PASSWORD)
    if screenshot:
        screenshot("01_login")
    page.locator("form button[type=submit]").click()
    expect(page.get_by_role("button", name="Sign out")).to_be_visible()
