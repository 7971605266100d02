"""A real browser for the console tests: Debian's headless Chromium driven by Selenium.

The browser and its driver come from the `chromium` and `chromium-driver` packages (.ci/run
installs them when missing); when either is absent the tests fail with that message, never
skip. Selenium is given both paths, so it never looks for or downloads a browser of its own.
Screenshots go to test-artifacts/console/ in the checkout (git-ignored), or $SPIRL_TEST_ARTIFACTS.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from selenium import webdriver
from selenium.common.exceptions import NoSuchElementException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
FLAGS = [
    "--headless",
    "--no-sandbox",  # tests run as root in CI
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1400,1000",
]
REPO = Path(__file__).resolve().parents[2]


def artifacts_dir(name: str) -> Path:
    root = Path(os.environ.get("SPIRL_TEST_ARTIFACTS") or REPO / "test-artifacts")
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def start_browser(profile_dir: Path, log_path: Path) -> WebDriver:
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not path.exists():
            raise AssertionError(
                f"{path} is missing: install Debian's {package} package "
                "(apt-get install chromium chromium-driver; .ci/run does it)"
            )
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile_dir}")
    service = Service(executable_path=str(CHROMEDRIVER), log_output=str(log_path))
    driver = webdriver.Chrome(options=options, service=service)
    driver.set_page_load_timeout(30)
    return driver


class Page:
    """The console as the tests use it: open a path, find things, wait, take a screenshot."""

    def __init__(self, driver: WebDriver, base_url: str, shots: Path) -> None:
        self.driver = driver
        self.base_url = base_url
        self.shots = shots

    def open(self, path: str) -> None:
        self.driver.get(self.base_url + path)

    @property
    def path(self) -> str:
        url: str = self.driver.current_url
        return url[len(self.base_url) :] if url.startswith(self.base_url) else url

    def one(self, css: str) -> Any:
        try:
            return self.driver.find_element(By.CSS_SELECTOR, css)
        except NoSuchElementException:
            body = self.driver.find_element(By.TAG_NAME, "body").text[:800]
            raise AssertionError(f"no {css} on {self.driver.current_url}:\n{body}") from None

    def all(self, css: str) -> list[Any]:
        return list(self.driver.find_elements(By.CSS_SELECTOR, css))

    def rows(self, css: str, key: str, cells: dict[str, str]) -> dict[str, dict[str, str | None]]:
        """{row's `key` attribute: {name: text of the cell matching cells[name]}} for the rows
        matching `css`, read in one script: a live refresh cannot swap the table out half-read."""
        script = """
            const [css, key, cells] = arguments;
            const out = {};
            document.querySelectorAll(css).forEach((row) => {
              const values = {};
              for (const [name, cell] of Object.entries(cells)) {
                const el = row.querySelector(cell);
                values[name] = el ? el.textContent.trim() : null;
              }
              out[row.getAttribute(key)] = values;
            });
            return out;"""
        return dict(self.driver.execute_script(script, css, key, cells))

    def attributes(self, css: str, names: list[str]) -> list[dict[str, str | None]]:
        """The named attributes of every element matching `css`, read in one script."""
        script = """
            const [css, names] = arguments;
            return Array.from(document.querySelectorAll(css)).map(
              (el) => Object.fromEntries(names.map((n) => [n, el.getAttribute(n)])));"""
        return list(self.driver.execute_script(script, css, names))

    def text(self, css: str) -> str:
        return str(self.one(css).text)

    def wait(self, condition: Callable[[], Any], what: str, timeout: float = 20) -> Any:
        return WebDriverWait(self.driver, timeout, poll_frequency=0.1).until(
            lambda _: condition(), message=f"timed out waiting for {what}"
        )

    def sign_in(self, token: str) -> None:
        """Sign in with `token` (replacing any session this browser has)."""
        self.open("/ui/login")
        self.one("#token").send_keys(token)
        self.one("#sign-in").click()
        self.wait(lambda: not self.path.startswith("/ui/login"), "sign-in to finish")

    def sign_out(self) -> None:
        self.one("#sign-out").click()
        self.wait(lambda: self.path.startswith("/ui/login"), "the sign-in page after sign-out")

    def screenshot(self, name: str) -> Path:
        """The whole page (the window grows to its height, at most 5,000 px)."""
        height = int(self.driver.execute_script("return document.documentElement.scrollHeight"))
        self.driver.set_window_size(1400, min(max(height, 600), 5000))
        path = self.shots / f"{name}.png"
        self.driver.save_screenshot(str(path))
        self.driver.set_window_size(1400, 1000)
        return path
