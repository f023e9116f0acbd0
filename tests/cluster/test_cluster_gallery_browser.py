"""The gallery in a real browser (headless Chromium, Debian's `chromium` and `chromium-driver`, driven by
Selenium): log in to the cluster's UI, open the Gallery, see the run's thumbnail, open the image page and read
its prompt; the viewer user, who may see no tenant, sees nothing of it. The screenshots are saved as test
artifacts under test-artifacts/gallery/ (``INVOKEAI_TEST_ARTIFACTS`` moves them)."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Any, Callable
from urllib.parse import quote

import pytest
from cluster_client import ClusterClient, task_logs

from invokeai_provider.cluster.cluster import ADMIN_USER, VIEWER_USER

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(os.environ.get("INVOKEAI_TEST_ARTIFACTS") or REPO / "test-artifacts") / "gallery"
DAG = "sd15-text-to-image"
PROMPT = "a lighthouse in a storm, oil painting"


def chrome() -> Any:
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and driver):
        message = "needs Debian's chromium and chromium-driver (.ci/run installs them)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    from selenium import webdriver

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000"):
        options.add_argument(argument)
    return webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=driver))


def wait_for(check: Callable[[], Any], what: str, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            found = check()
        except Exception:  # noqa: BLE001 - not there yet (no such element, stale page)
            found = None
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.25)


def log_in(browser: Any, host: str, user: str, password: str) -> None:
    """Through the UI's login form, as a person would."""
    from selenium.webdriver.common.by import By

    browser.delete_all_cookies()
    browser.get(f"{host}/auth/login")
    name = wait_for(lambda: browser.find_element(By.CSS_SELECTOR, "input[name=username]"), "the login form")
    name.send_keys(user)
    browser.find_element(By.CSS_SELECTOR, "input[type=password]").send_keys(password)
    browser.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    wait_for(lambda: browser.get_cookie("_token"), f"{user}'s session cookie")


def test_the_gallery_in_a_browser(cluster: ClusterClient) -> None:
    from selenium.webdriver.common.by import By

    cluster.wait_for_dag(DAG)
    run_id = cluster.trigger(DAG, {"positive_prompt": PROMPT, "model": "tiny-sd15", "denoise_steps": 2,
                                   "noise_width": 64, "noise_height": 64})
    assert cluster.wait(DAG, run_id, timeout=600) == "success", task_logs(cluster.settings, DAG, run_id)
    [record] = cluster.xcom(DAG, run_id, "sd1_5_text_to_image", "image_records")
    name = record["image_name"]
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    browser = chrome()
    try:
        log_in(browser, cluster.host, ADMIN_USER, cluster.settings.admin_password)
        browser.get(f"{cluster.host}/invokeai/gallery?tenant=default&dag_id={DAG}")
        tile = wait_for(lambda: browser.find_element(By.CSS_SELECTOR, f"a.tile[data-image-name='{name}']"),
                        "the run's thumbnail")
        thumbnail = tile.find_element(By.TAG_NAME, "img")
        wait_for(lambda: browser.execute_script("return arguments[0].complete && arguments[0].naturalWidth", thumbnail),
                 "the thumbnail to load with the session")
        browser.save_screenshot(str(ARTIFACTS / "gallery.png"))
        # the same page inside Airflow's UI, under the Gallery entry of the navigation
        browser.get(f"{cluster.host}/plugin/invokeai-gallery")
        wait_for(lambda: browser.find_element(By.TAG_NAME, "iframe"), "the gallery view in Airflow's UI")
        time.sleep(2)  # let the frame paint for the screenshot
        browser.save_screenshot(str(ARTIFACTS / "airflow-ui-gallery.png"))

        browser.get(f"{cluster.host}/invokeai/gallery?tenant=default&dag_id={DAG}")
        wait_for(lambda: browser.find_element(By.CSS_SELECTOR, f"a.tile[data-image-name='{name}']"), "the tile").click()
        prompt = wait_for(lambda: browser.find_element(By.CSS_SELECTOR, "td.field-prompt"), "the image page")
        assert prompt.text == PROMPT
        browser.save_screenshot(str(ARTIFACTS / "image-page.png"))
        browser.get(f"{cluster.host}/invokeai/gallery/runs/{DAG}/{quote(run_id)}")
        wait_for(lambda: browser.find_element(By.CSS_SELECTOR, f"a.tile[data-image-name='{name}']"), "the run's tab")

        log_in(browser, cluster.host, VIEWER_USER, cluster.settings.viewer_password)
        browser.get(f"{cluster.host}/invokeai/gallery")
        assert "may not see any tenant" in wait_for(lambda: browser.find_element(By.TAG_NAME, "body").text, "page")
        assert not browser.find_elements(By.CSS_SELECTOR, "a.tile")
        browser.save_screenshot(str(ARTIFACTS / "viewer-gallery.png"))
        browser.get(f"{cluster.host}/invokeai/api/images/{name}?tenant=default")
        assert "may not see tenant 'default'" in browser.find_element(By.TAG_NAME, "body").text
    finally:
        browser.quit()
    status, _ = cluster.http("GET", f"/invokeai/api/images/{name}/thumbnail?tenant=default",
                             token=cluster.token(VIEWER_USER))
    assert status == 403
