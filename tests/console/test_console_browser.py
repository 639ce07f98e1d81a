"""The web console in a real headless Chromium (Debian's, driven through its chromedriver):
an admin signs in, creates a key and reads its secret off the page, a program uses that key
with the real SDK, the admin sees the requests in the usage charts, opens the conversation
the program started and reads its entries as a thread, checks the live health, revokes the
key, and the program's next call is refused with 401. A screenshot of every page lands in
the test's temporary directory (``screenshots/``)."""

from __future__ import annotations

import base64
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.common.exceptions import NoSuchElementException, WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.wait import WebDriverWait

from tests.conftest import MockProcess, SidecarProcess
from tests.console.console_support import FULL_CHAIN, MODEL, cli_key, console_env

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
QUESTION = "What is the weather in Paris?"
ARGUMENTS = '{"city": "Paris", "unit": "celsius"}'
RESULT = "22 degrees and sunny"


@pytest.fixture
def browser() -> Iterator[WebDriver]:
    """Headless Chromium; the test fails (never skips) when it is not installed."""
    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if shutil.which(path) is None]
    if missing:
        pytest.fail(f"{', '.join(missing)} not found: the console's browser tests need "
                    "Debian's chromium and chromium-driver (apt-get install chromium "
                    "chromium-driver; bash .ci/test installs them)", pytrace=False)
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                     "--disable-gpu", "--window-size=1280,900", "--no-first-run",
                     "--disable-background-networking", "--disable-component-update",
                     "--disable-sync", "--disable-default-apps"):
        options.add_argument(argument)
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    driver.implicitly_wait(5)
    try:
        yield driver
    finally:
        driver.quit()


class Pages:
    """The browser on the console, saving a full-page screenshot of each page it shows."""

    def __init__(self, driver: WebDriver, base_url: str, shots: Path) -> None:
        self.driver = driver
        self.base_url = base_url
        self.shots = shots
        shots.mkdir(parents=True, exist_ok=True)
        self.count = 0

    def open(self, path: str) -> None:
        """Go to a console path."""
        self.driver.get(self.base_url + path)

    def click(self, element: WebElement) -> None:
        """Click something that loads another page, and wait until it has."""
        old = self.driver.find_element(By.TAG_NAME, "html")
        element.click()
        # A command sent while Chrome swaps documents may fail; the wait asks again.
        wait = WebDriverWait(self.driver, 10, ignored_exceptions=(WebDriverException,))

        def gone(_driver: WebDriver) -> bool:
            try:
                old.is_enabled()
            except WebDriverException:
                # Stale, or, while Chrome swaps documents, "does not belong to the document".
                return True
            return False

        wait.until(gone)
        # The old page is gone; the new one may still be parsing, and an element found now
        # could belong to a document about to be replaced.
        wait.until(lambda driver: driver.execute_script("return document.readyState")
                   == "complete")

    def text(self, selector: str = "main") -> str:
        """The visible text of an element."""
        return self.driver.find_element(By.CSS_SELECTOR, selector).text

    def shot(self, name: str) -> Path:
        """Screenshot of the whole page (beyond the window) as ``NN-name.png``."""
        self.count += 1
        metrics = self.driver.execute_cdp_cmd("Page.getLayoutMetrics", {})
        size = metrics["cssContentSize"]
        shot = self.driver.execute_cdp_cmd("Page.captureScreenshot", {
            "format": "png", "captureBeyondViewport": True,
            "clip": {"x": 0, "y": 0, "width": size["width"],
                     "height": min(size["height"], 8000), "scale": 1}})
        path = self.shots / f"{self.count:02d}-{name}.png"
        path.write_bytes(base64.b64decode(shot["data"]))
        return path

    def until(self, check: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
        """Reload the page until ``check()`` holds (records are written in the background)."""
        deadline = time.monotonic() + timeout
        while not self._holds(check):
            assert time.monotonic() < deadline, f"{what} did not show up: {self.text()}"
            time.sleep(0.3)
            self.driver.refresh()

    def _holds(self, check: Callable[[], bool]) -> bool:
        self.driver.implicitly_wait(0)
        try:
            return check()
        except NoSuchElementException:
            return False
        finally:
            self.driver.implicitly_wait(5)


def test_admin_runs_a_key_through_its_life_in_the_browser(
    browser: WebDriver, spawn_mock: Callable[..., MockProcess],
    spawn_sidecar: Callable[..., SidecarProcess], tmp_path: Path,
) -> None:
    from mistralai.client import Mistral
    from mistralai.client.errors import SDKError
    from mistralai.client.models import (
        FunctionCallEntry,
        FunctionResultEntry,
        InputEntries,
        MessageInputEntry,
        UserMessage,
    )

    mock = spawn_mock()
    env = console_env(FULL_CHAIN, MISTRAL_BASE_URL=mock.url,
                      SIDECAR_SERVER_DATA_DIR=str(tmp_path / "data"))
    sidecar = spawn_sidecar(**env)
    admin_key = cli_key(env, "root", "admin", "acme")
    pages = Pages(browser, sidecar.url, tmp_path / "screenshots")

    # Sign in: the console sends a visitor without a session to the sign-in page.
    pages.open("/admin/keys")
    assert browser.current_url.endswith("/admin/login")
    pages.shot("sign-in")
    browser.find_element(By.NAME, "key").send_keys(admin_key)
    pages.click(browser.find_element(By.CSS_SELECTOR, "form button[type=submit]"))
    assert "Signed in as root of organisation acme" in pages.text()
    pages.shot("overview")

    # Create a key for a program; its secret is on the answer page, once.
    pages.click(browser.find_element(By.LINK_TEXT, "Keys"))
    browser.find_element(By.NAME, "owner").send_keys("weather-bot")
    browser.find_element(By.NAME, "name").send_keys("browser test")
    pages.click(browser.find_element(By.CSS_SELECTOR, "form.card button"))
    secret = browser.find_element(By.ID, "new-secret").text.strip()
    assert secret.startswith("sk-sidecar-")
    key_id = secret.split("-")[2]
    assert "Copy the new secret now" in pages.text()
    pages.shot("key-created")
    pages.open("/admin/keys")
    assert secret not in browser.page_source
    assert key_id in pages.text("table")

    # The program uses the key with the real SDK: a chat completion and a conversation in
    # which the model called a tool and the program answered with its result.
    client = Mistral(api_key=secret, server_url=sidecar.url)
    chat = client.chat.complete(model=MODEL, messages=[UserMessage(content="hello")])
    assert chat.choices[0].message is not None and chat.choices[0].message.content
    inputs: list[InputEntries] = [
        MessageInputEntry(role="user", content=QUESTION),
        FunctionCallEntry(tool_call_id="call_weather_1", name="get_weather",
                          arguments=ARGUMENTS),
        FunctionResultEntry(tool_call_id="call_weather_1", result=RESULT),
    ]
    started = client.beta.conversations.start(model=MODEL, inputs=inputs)
    conversation_id = started.conversation_id

    # Usage: the program's requests, per day and model, in the charts and the tables.
    pages.click(browser.find_element(By.LINK_TEXT, "Usage"))
    pages.until(lambda: "Requests\n2\n" in pages.text(), "the program's two requests")
    assert "weather-bot" in pages.text("#by-owner + div")
    assert MODEL in pages.text("table.grid")
    assert len(browser.find_elements(By.CSS_SELECTOR, "figure.chart svg rect")) >= 2
    pages.shot("usage")

    # The conversation browser finds the program's conversation; its page shows the thread.
    pages.click(browser.find_element(By.LINK_TEXT, "Conversations"))
    browser.find_element(By.NAME, "owner").send_keys("weather-bot")
    pages.click(browser.find_element(By.CSS_SELECTOR, "form.filters button"))
    pages.until(lambda: conversation_id in pages.text(), "the program's conversation")
    pages.shot("conversations")
    pages.click(browser.find_element(By.LINK_TEXT, conversation_id))
    pages.until(lambda: "Assistant" in pages.text("ol.thread"), "the model's answer")
    entries = [e.text for e in browser.find_elements(By.CSS_SELECTOR, "ol.thread article")]
    assert len(entries) == 4, entries
    assert entries[0].startswith("User") and QUESTION in entries[0]
    assert entries[1].startswith("Tool call") and "get_weather" in entries[1]
    assert '"city": "Paris"' in entries[1] and "call_weather_1" in entries[1]
    assert entries[2].startswith("Tool result") and RESULT in entries[2]
    assert entries[3].startswith("Assistant") and "Echo:" in entries[3]
    pages.shot("conversation")

    # Live health of the process.
    pages.click(browser.find_element(By.LINK_TEXT, "Health"))
    assert pages.text("#health-status") == "Ready"
    assert pages.text("#summary-breaker") == "Circuit breaker\nclosed"
    assert pages.text("#summary-limiter") == "Rate limiter\nmemory"
    assert "bytes spooled" in pages.text("#summary-spool")
    assert "available" in pages.text("#summary-keypool")
    pages.shot("health")

    # Revoke the program's key: its next call is refused.
    pages.click(browser.find_element(By.LINK_TEXT, "Keys"))
    row = browser.find_element(By.XPATH, f"//tr[td/code[text()='{key_id}']]")
    row.find_element(By.XPATH, ".//summary[text()='Revoke…']").click()
    pages.click(row.find_element(By.XPATH, f".//button[text()='Revoke key {key_id}']"))
    assert f"Key {key_id} of weather-bot is revoked" in pages.text(".notice")
    row = browser.find_element(By.XPATH, f"//tr[td/code[text()='{key_id}']]")
    assert "revoked" in row.text
    pages.shot("key-revoked")
    with pytest.raises(SDKError) as refused:
        client.chat.complete(model=MODEL, messages=[UserMessage(content="again")])
    assert refused.value.status_code == 401

    # Sign out: the session is gone, the console asks to sign in again.
    pages.click(browser.find_element(By.CSS_SELECTOR, "form.who button"))
    assert "You have signed out." in pages.text()
    pages.open("/admin/keys")
    assert browser.current_url.endswith("/admin/login")
    pages.shot("signed-out")
    assert admin_key not in sidecar.output()
    assert len(list((tmp_path / "screenshots").glob("*.png"))) == pages.count == 9
