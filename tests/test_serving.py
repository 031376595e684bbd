"""Real gunicorn on loopback with the project's configuration, and a headless-Chromium user."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bench.loopback import gunicorn_server, post_image
from model import config

pytestmark = pytest.mark.slow
ARTIFACTS = config.PROJECT_ROOT / "artifacts"


def test_gunicorn_serves_the_api_over_http(tiny_model_dir, sample_jpeg):
    with gunicorn_server(tiny_model_dir, workers=2) as (base, _):
        status, body = post_image(base, sample_jpeg.read_bytes())
        assert status == 200
        assert set(body["probabilities"]) == set(config.CLASS_NAMES)
        status, body = post_image(base, b"not an image", "x.txt")
        assert status == 415 and "not an image" in body["error"]["message"]


def test_gunicorn_refuses_to_start_without_a_model(tmp_path):
    env = {**os.environ, "PORT": "0", "MODEL_DIR": str(tmp_path / "missing"), "WEB_CONCURRENCY": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "--bind", "127.0.0.1:0"],
        cwd=config.PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "No model metadata" in result.stdout + result.stderr


# --- A person with a browser ---------------------------------------------------------------------
def _chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        if os.environ.get("REQUIRE_BROWSER"):
            pytest.fail("chromium is required (REQUIRE_BROWSER is set) but not installed")
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    return path


@pytest.fixture(scope="module")
def browser():
    playwright_api = pytest.importorskip("playwright.sync_api")
    executable = _chromium()
    with playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=executable,
            args=[
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
            ],
        )
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def live_site(committed_model_dir):
    with gunicorn_server(committed_model_dir, workers=1) as (base, _):
        yield base


@pytest.fixture(scope="module")
def real_lesion() -> Path:
    from tests.conftest import real_data_dir

    return sorted((real_data_dir() / "Test" / "melanoma").glob("*.jpg"))[0]


@pytest.mark.integration
@pytest.mark.parametrize(
    "viewport", [{"width": 1280, "height": 900}, {"width": 390, "height": 844}], ids=["desktop", "phone"]
)
def test_browser_upload_shows_diagnosis_and_heat_map(browser, live_site, real_lesion, viewport):
    context = browser.new_context(viewport=viewport, device_scale_factor=1)
    page = context.new_page()
    console_errors = []
    page.on("console", lambda message: message.type == "error" and console_errors.append(message.text))
    page.goto(live_site + "/")
    page.set_input_files("#image", str(real_lesion))
    page.wait_for_selector("#preview", state="visible", timeout=5000)  # the change handler ran
    page.click("#submit")
    page.wait_for_selector("#result #top-class", timeout=15000)
    diagnosis = page.inner_text("#top-class")
    assert diagnosis in config.CLASS_NAMES
    heatmap = page.locator("#heatmap")
    assert heatmap.get_attribute("src").startswith("data:image/png;base64,")
    assert page.evaluate("document.getElementById('heatmap').naturalWidth") == 320
    assert page.locator("#class-probabilities .class-row").count() == config.NUM_CLASSES
    assert "not a diagnosis" in page.inner_text("#disclaimer")
    # Nothing overflows sideways on a phone.
    assert page.evaluate("document.documentElement.scrollWidth") <= viewport["width"]
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"result_{viewport['width']}.png"), full_page=True)
    assert console_errors == []  # no CSP violation, no script error
    context.close()


@pytest.mark.integration
def test_browser_without_javascript_gets_the_server_rendered_result(browser, live_site, real_lesion):
    context = browser.new_context(java_script_enabled=False)
    page = context.new_page()
    page.goto(live_site + "/")
    page.set_input_files("#image", str(real_lesion))
    page.click("#submit")
    page.wait_for_selector("#top-class", timeout=15000)
    assert page.inner_text("#top-class") in config.CLASS_NAMES
    assert page.locator("#heatmap").get_attribute("src").startswith("data:image/png;base64,")
    context.close()


@pytest.mark.integration
def test_browser_shows_a_clear_error_for_a_non_image(browser, live_site, tmp_path):
    bogus = tmp_path / "notes.jpg"
    bogus.write_text("definitely not a photo")
    page = browser.new_page()
    page.goto(live_site + "/")
    page.set_input_files("#image", str(bogus))
    page.click("#submit")
    page.wait_for_selector("#js-error:not(.d-none)", timeout=10000)
    assert "not an image" in page.inner_text("#js-error")
    page.close()


@pytest.mark.integration
def test_about_page_renders_metrics_and_plots(browser, live_site):
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(live_site + "/about")
    assert "official Test" in page.inner_text("#metrics")
    loaded = page.evaluate("Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)")
    assert loaded
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "about.png"), full_page=True)
    page.close()
