"""Swagger UI in a real (headless) browser: authorise through the password flow, run
the v1 contract's PATCH from the page, see 200; follow its link to the documentation
site and read it, search included. Both under their Content-Security-Policy, which
must refuse nothing they do. Debian's chromium and chromium-driver,
never a downloaded browser; the screenshot is kept in artifacts/."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.conftest import TEST_SECRET
from tests.servers import create_account, keyplane_env, serving, wait_until_up

PASSWORD = "swagger-ui-password"
REPOSITORY = Path(__file__).resolve().parent.parent
ARTIFACTS = REPOSITORY / "artifacts"
CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")

if not (CHROMIUM and CHROMEDRIVER):
    if os.environ.get("CI"):
        pytest.fail("CI needs Debian's chromium and chromium-driver", pytrace=False)
    pytest.skip(
        "Swagger UI test SKIPPED: apt-get install chromium chromium-driver to run it",
        allow_module_level=True,
    )

from selenium import webdriver  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support import expected_conditions as ready  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

pytestmark = pytest.mark.slow  # a live server, a subprocess or a browser


@pytest.fixture
def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # CSP reports land here
    for flag in (
        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run",
        "--window-size=1400,2400",
    ):  # fmt: skip
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(CHROMEDRIVER))
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def test_the_seed_002_patch_runs_from_swagger_ui(browser, fresh_database_url):
    env = keyplane_env(
        fresh_database_url, KEYPLANE_SECRET_KEY=TEST_SECRET, KEYPLANE_ADMIN_PASSWORD=PASSWORD
    )
    create_account(env)
    with serving(env) as (base, _):
        wait_until_up(base)
        token = httpx.post(
            f"{base}/v1/auth/token",
            data={"grant_type": "password", "username": "alice", "password": PASSWORD},
        ).json()["access_token"]
        key = httpx.post(
            f"{base}/v1/api-keys", json={"description": "before"},
            headers={"Authorization": f"Bearer {token}"},
        ).json()  # fmt: skip

        wait = WebDriverWait(browser, 30)
        browser.get(f"{base}/ui/")
        # Every operation says in its line what it does, and the one server to try it on
        # is offered: the one the page came from.
        wait.until(ready.visibility_of_element_located((By.CSS_SELECTOR, ".opblock")))
        operations = browser.find_elements(By.CSS_SELECTOR, ".opblock")
        summaries = [
            o.find_element(By.CSS_SELECTOR, ".opblock-summary-description").text for o in operations
        ]
        assert len(operations) > 40 and all(summary.strip() for summary in summaries)
        servers = browser.find_elements(By.CSS_SELECTOR, ".servers select option")
        assert [server.get_attribute("textContent") for server in servers] == [
            " - This server, where this page came from"
        ]
        wait.until(ready.element_to_be_clickable((By.CSS_SELECTOR, "button.authorize"))).click()
        wait.until(ready.visibility_of_element_located((By.ID, "oauth_username"))).send_keys(
            "alice"
        )
        browser.find_element(By.ID, "oauth_password").send_keys(PASSWORD)
        browser.find_element(By.CSS_SELECTOR, ".auth-btn-wrapper button.authorize").click()
        # Authorised once the modal offers to log out; then close it.
        wait.until(
            ready.visibility_of_element_located((By.XPATH, "//button[normalize-space()='Logout']"))
        )
        browser.find_element(By.XPATH, "//button[normalize-space()='Close']").click()

        # Swagger UI escapes the dot of the operationId in the element's id.
        operation = browser.find_element(
            By.XPATH, r"//*[@id='operations-api-keys-api_keys\.update']"
        )
        operation.find_element(By.CSS_SELECTOR, ".opblock-summary").click()
        wait.until(lambda _: operation.find_element(By.CSS_SELECTOR, ".try-out__btn")).click()
        item_id = operation.find_element(By.CSS_SELECTOR, "input[placeholder='item_id']")
        item_id.clear()  # Swagger UI fills in the spec's example id
        item_id.send_keys(str(key["id"]))
        body = operation.find_element(By.CSS_SELECTOR, "textarea.body-param__text")
        body.clear()
        body.send_keys('{"expires_at": "2030-01-01T00:00:00Z", "description": "string"}')
        operation.find_element(By.CSS_SELECTOR, "button.execute").click()

        def answered(_: object) -> str | None:
            cells = operation.find_elements(
                By.CSS_SELECTOR, ".live-responses-table tbody .response-col_status"
            )
            return cells[0].text.strip() if cells and cells[0].text.strip() else None

        status = wait.until(answered)
        ARTIFACTS.mkdir(exist_ok=True)
        browser.save_screenshot(str(ARTIFACTS / "swagger-ui-seed-002-patch.png"))
        assert status.startswith("200")
        after = httpx.get(
            f"{base}/v1/api-keys/{key['id']}", headers={"Authorization": f"Bearer {token}"}
        ).json()
        assert (after["description"], after["expires_at"]) == ("string", "2030-01-01T00:00:00Z")
        # All of that under the page's Content-Security-Policy, which refused nothing.
        page = httpx.get(f"{base}/ui/")
        assert page.headers["X-Frame-Options"] == "DENY"
        policy = page.headers["Content-Security-Policy"]
        assert (
            "frame-ancestors 'none'" in policy
            and "'unsafe-inline'" not in policy.split("script-src")[1].split(";")[0]
        )
        assert _refused_by_the_policy(browser) == []


def _refused_by_the_policy(browser) -> list[str]:
    return [
        entry["message"]
        for entry in browser.get_log("browser")
        if "Content Security Policy" in entry["message"]
    ]


def test_swagger_ui_links_to_the_docs_which_work_under_their_policy(
    browser, fresh_database_url, tmp_path
):
    site = tmp_path / "site"
    subprocess.run(
        [str(Path(sys.executable).parent / "mkdocs"), "build", "--strict", "--quiet",
         "--site-dir", str(site)],
        cwd=REPOSITORY, env=os.environ | {"NO_MKDOCS_2_WARNING": "1"},
        capture_output=True, timeout=120, check=True,
    )  # fmt: skip
    env = keyplane_env(
        fresh_database_url,
        KEYPLANE_SECRET_KEY=TEST_SECRET,
        KEYPLANE_ADMIN_PASSWORD=PASSWORD,
        KEYPLANE_DOCS_SITE=str(site),
    )
    with serving(env) as (base, _):
        wait_until_up(base)
        wait = WebDriverWait(browser, 30)
        browser.get(f"{base}/ui/")
        link = wait.until(
            ready.element_to_be_clickable((By.XPATH, "//a[contains(., 'documentation')]"))
        )
        assert link.get_attribute("href") == f"{base}/docs/"
        link.click()
        browser.switch_to.window(browser.window_handles[-1])  # it may open a new tab
        wait.until(lambda b: "Keyplane" in b.title and b.current_url.startswith(f"{base}/docs/"))
        browser.get(f"{base}/docs/concepts/")
        wait.until(ready.visibility_of_element_located((By.ID, "accounts")))
        # Search: the site's own worker fetches its own index.
        box = wait.until(ready.element_to_be_clickable((By.CSS_SELECTOR, "input[name='query']")))
        box.click()
        box.send_keys("rotation")
        wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, ".md-search-result__item"))
        ARTIFACTS.mkdir(exist_ok=True)
        browser.save_screenshot(str(ARTIFACTS / "docs-search.png"))
        page = httpx.get(f"{base}/docs/concepts/")
        assert page.headers["X-Frame-Options"] == "DENY"
        assert "frame-ancestors 'none'" in page.headers["Content-Security-Policy"]
        assert _refused_by_the_policy(browser) == []
