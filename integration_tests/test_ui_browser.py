"""The web UIs the README points to, opened in a real browser (headless Chromium).

Contract: against a compose project of its own (``zmqflow-it-ui``: PostgreSQL,
forwarder, prefect-server, airflow-init, airflow-apiserver and
airflow-dag-processor on free host ports), or, with ZMQFLOW_IT_UI_RUNNING=1,
against the running `make up` stack on the ports in .env:

- the Prefect UI at / renders the application (its navigation),
  not an error page: the server run as uid 10001 once answered every page
  with {"detail":"Not Found"} because it could not write its UI directory;
- the Airflow UI's login form takes the README's login (admin/admin) and the
  DAG list shows the example DAGs.

The browser is Debian's chromium driven by Debian's chromedriver
(/usr/bin/chromedriver: Selenium Manager downloads nothing);
scripts/system-deps.sh installs both with NEED_BROWSER=1. Without them the
tests are skipped, saying what to install. Waiting is on page content with a
deadline; an error page fails at once with what the page said.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from integration_tests.harness import ComposeProject, setting

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.common.exceptions import TimeoutException  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

CHROMEDRIVER = Path("/usr/bin/chromedriver")
CHROMIUM = shutil.which("chromium")
PROJECT = os.environ.get("ZMQFLOW_IT_UI_PROJECT", "zmqflow-it-ui")
SERVICES = (
    "postgres", "forwarder", "prefect-server",
    "airflow-init", "airflow-apiserver", "airflow-dag-processor",
)  # fmt: skip
EXAMPLE_DAGS = ("zmqflow_fanout", "zmqflow_on_event")
LOGIN = ("admin", "admin")  # README: the stack's default Airflow login
# What an error page says: FastAPI's JSON errors, the usual HTTP error titles.
ERROR_MARKS = ('{"detail":', "Not Found", "Internal Server Error", "Bad Gateway", "refused")
pytestmark = [
    pytest.mark.timeout(900),
    pytest.mark.skipif(
        not (CHROMIUM and CHROMEDRIVER.exists()),
        reason="needs Debian's chromium and chromium-driver: NEED_BROWSER=1 scripts/system-deps.sh",
    ),
]


@pytest.fixture(scope="module")
def urls() -> Iterator[dict[str, str]]:
    """Base URLs of the Prefect and Airflow UIs."""
    if os.environ.get("ZMQFLOW_IT_UI_RUNNING") == "1":
        host = setting("ZMQFLOW_PUBLISH_HOST", "127.0.0.1")
        yield {
            "prefect": f"http://{host}:{setting('PREFECT_PUBLISH_PORT', '4200')}",
            "airflow": f"http://{host}:{setting('AIRFLOW_PUBLISH_PORT', '8080')}",
        }
        return
    env = {"AIRFLOW_ADMIN_USER": LOGIN[0], "AIRFLOW_ADMIN_PASSWORD": LOGIN[1]}
    with ComposeProject(
        PROJECT,
        SERVICES,
        ports=("PREFECT_PUBLISH_PORT", "AIRFLOW_PUBLISH_PORT"),
        env=env,
        wait_timeout=300,
    ) as stack:
        yield {
            "prefect": f"http://127.0.0.1:{stack.ports['PREFECT_PUBLISH_PORT']}",
            "airflow": f"http://127.0.0.1:{stack.ports['AIRFLOW_PUBLISH_PORT']}",
        }


@pytest.fixture(scope="module")
def browser() -> Iterator[webdriver.Chrome]:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM or ""
    for arg in (
        "--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
        "--window-size=1400,1000",
    ):  # fmt: skip
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def page_text(driver: webdriver.Chrome) -> str:
    try:
        return driver.find_element(By.TAG_NAME, "body").text
    except Exception:  # the page is being replaced: nothing to read yet
        return ""


def wait_for_text(driver: webdriver.Chrome, wanted: tuple[str, ...], timeout: float = 60) -> str:
    """Until the page shows every string of ``wanted``; fails at once on an error page."""

    def shown(d: webdriver.Chrome) -> str | None:
        text = page_text(d)
        errors = [mark for mark in ERROR_MARKS if mark in text]
        assert not errors, f"{d.current_url} is an error page ({errors}):\n{text[:500]}"
        return text if all(w in text for w in wanted) else None

    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.5).until(shown)
    except TimeoutException:
        raise AssertionError(
            f"{driver.current_url} did not show {wanted} within {timeout:g}s; it shows:\n"
            f"{page_text(driver)[:800]}"
        ) from None


def test_the_prefect_ui_renders_its_pages(urls: dict[str, str], browser: webdriver.Chrome) -> None:
    browser.get(urls["prefect"] + "/")

    text = wait_for_text(browser, ("Runs", "Flows", "Deployments", "Work Pools"))

    assert "Prefect" in browser.title or "Dashboard" in text or "Runs" in text


def test_the_airflow_ui_logs_in_and_lists_the_example_dags(
    urls: dict[str, str], browser: webdriver.Chrome
) -> None:
    browser.get(urls["airflow"] + "/")
    WebDriverWait(browser, 90, poll_frequency=0.5).until(
        lambda d: len(d.find_elements(By.CSS_SELECTOR, "input")) >= 2
    )
    username, password = browser.find_elements(By.CSS_SELECTOR, "input")[:2]
    username.send_keys(LOGIN[0])
    password.send_keys(LOGIN[1])
    browser.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    WebDriverWait(browser, 60, poll_frequency=0.5).until(
        lambda d: "login" not in d.current_url.lower()
    )

    browser.get(urls["airflow"] + "/dags")
    # the DAG processor parses the folder once the stack is up: allow it a while
    wait_for_text(browser, EXAMPLE_DAGS, timeout=240)
