"""A person with a browser: every page and state, phone and desktop, light and dark, with and without
JavaScript, checked by axe-core (WCAG 2.2 AA) and saved as screenshots under artifacts/browser/.

Runs real gunicorn with the committed model and Debian's Chromium; axe-core comes from `npm ci`.
"""

from __future__ import annotations

import io
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bench.loopback import gunicorn_server
from model import config

pytestmark = [pytest.mark.slow, pytest.mark.integration]
ARTIFACTS = config.PROJECT_ROOT / "artifacts" / "browser"
AXE = config.PROJECT_ROOT / "node_modules" / "axe-core" / "axe.min.js"
VIEWPORTS = {"desktop": {"width": 1280, "height": 900}, "phone": {"width": 390, "height": 844}}
# WCAG 2.0, 2.1 and 2.2, levels A and AA.
AXE_TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22aa"]
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def _require(what: str) -> None:
    if os.environ.get("REQUIRE_BROWSER"):
        pytest.fail(f"{what} is required (REQUIRE_BROWSER is set)")
    pytest.skip(f"{what} is not installed")


@pytest.fixture(scope="module")
def browser():
    playwright_api = pytest.importorskip("playwright.sync_api")
    executable = shutil.which("chromium") or shutil.which("chromium-browser")
    if executable is None:
        _require("Debian's chromium (apt-get install chromium)")
    if not AXE.is_file():
        _require("axe-core (npm ci)")
    with playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
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


@pytest.fixture(scope="module")
def refusal_pages(committed_model_dir) -> dict:
    """What the server renders for a gate refusal (422 not_dermoscopic), as page and as fragment.

    The gate itself is another module's; here its UploadError is raised in its place, in-process, and
    the browser is handed the server's real rendering of it.
    """
    from webapp import create_app, views
    from webapp.prediction import UploadError

    def refuse(upload, with_heatmap=True):
        raise UploadError(
            "This looks like an ordinary photo, not a dermatoscope image.", 422, "not_dermoscopic"
        )

    client = create_app({"TESTING": True, "MODEL_DIR": str(committed_model_dir)}).test_client()
    original, views.predict_upload = views.predict_upload, refuse
    try:
        data = lambda: {"image": (io.BytesIO(b"x"), "a.jpg")}  # noqa: E731
        page = client.post("/", data=data()).get_data(as_text=True)
        fragment = client.post("/result", data=data()).get_data(as_text=True)
    finally:
        views.predict_upload = original
    return {"page": page, "fragment": fragment}


@pytest.fixture(scope="module")
def level_fragments(committed_model_dir, real_lesion) -> dict:
    """The server's result fragment for the real lesion, once for each level of the answer.

    Each level's advice is what model.advice.advise gives for grouped probabilities chosen to land on it;
    everything else on the card is the real prediction.
    """
    import dataclasses

    from model.advice import advise
    from webapp import create_app, views

    app = create_app({"TESTING": True, "MODEL_DIR": str(committed_model_dir)})
    metadata = app.extensions["classifier"].metadata
    threshold = metadata["metrics"]["operating_point"]["malignant_threshold"]
    groups = {
        "see_doctor_soon": (threshold, 0.0),
        "have_it_checked": (threshold / 2, threshold),
        "keep_watching": (threshold / 4, threshold / 4),
    }
    original, fragments = views.predict_upload, {}
    for level, (malignant, pre_malignant) in groups.items():
        risk = {
            "malignant": malignant,
            "pre-malignant": pre_malignant,
            "benign": 1 - malignant - pre_malignant,
        }

        def predict(upload, with_heatmap=True, risk=risk):
            result = original(upload, with_heatmap)
            result.prediction = dataclasses.replace(result.prediction, advice=advise(risk, metadata))
            return result

        views.predict_upload = predict
        try:
            data = {"image": (io.BytesIO(real_lesion.read_bytes()), "a.jpg")}
            fragments[level] = app.test_client().post("/result", data=data).get_data(as_text=True)
        finally:
            views.predict_upload = original
        assert f'data-level="{level}"' in fragments[level]
    return fragments


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_every_level_of_the_answer_is_accessible(browser, live_site, real_lesion, level_fragments, scheme):
    context = _context(browser, "phone", scheme, True)
    page = context.new_page()
    problems = []
    for level, fragment in level_fragments.items():
        page.goto(live_site + "/")
        page.route("**/result", _fulfil_with(fragment))
        page.set_input_files("#image", str(real_lesion))
        page.click("#submit")
        page.wait_for_selector(f"#result[data-level={level}]", timeout=10000)
        problems += _check(page, f"level_{level}_phone_{scheme}")
        page.unroute("**/result")
    assert problems == []
    context.close()


def _fulfil_with(body: str):
    """A route handler that answers with this HTML (Playwright passes the request too, if asked)."""
    return lambda route: route.fulfill(body=body, content_type="text/html; charset=utf-8")


def _context(browser, viewport: str, scheme: str, javascript: bool):
    """A browser context; without JavaScript, the site's only script is blocked.

    axe-core must run in the page, so "without JavaScript" here means without app.js, which gives the
    page exactly its no-script behaviour (test_no_javascript_at_all covers scripts switched off).
    bypass_csp lets the test inject axe-core; the pages themselves never need inline script.
    """
    context = browser.new_context(
        viewport=VIEWPORTS[viewport], color_scheme=scheme, bypass_csp=True, device_scale_factor=1
    )
    if not javascript:
        context.route("**/static/app.js*", lambda route: route.abort())
    return context


def _check(page, name: str) -> list[str]:
    """Run axe-core on the page as it is now, save a screenshot; return serious or critical problems."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
    page.add_script_tag(path=str(AXE))
    result = page.evaluate("tags => axe.run(document, {runOnly: {type: 'tag', values: tags}})", AXE_TAGS)
    assert len(result["passes"]) > 10  # axe really looked at the page
    return [
        f"{name}: {v['id']} ({v['impact']}) {v['help']} at {[n['target'] for n in v['nodes']][:3]}"
        for v in result["violations"]
        if v["impact"] in ("serious", "critical")
    ]


def _background_is_dark(page) -> bool:
    colour = page.evaluate("getComputedStyle(document.body).backgroundColor")
    red, green, blue = (
        int(part) for part in colour[colour.index("(") + 1 : colour.index(")")].split(",")[:3]
    )
    return red + green + blue < 3 * 80


@pytest.mark.parametrize("scheme", ["light", "dark"])
@pytest.mark.parametrize("viewport", ["desktop", "phone"])
@pytest.mark.parametrize("javascript", [True, False], ids=["js", "nojs"])
def test_every_state_is_accessible(
    browser, live_site, real_lesion, refusal_pages, viewport, scheme, javascript
):
    context = _context(browser, viewport, scheme, javascript)
    page = context.new_page()
    console_errors = []
    # Error answers (404, 415, 422, offline) log "Failed to load resource"; anything else is a fault.
    page.on(
        "console",
        lambda message: message.type == "error"
        and not message.text.startswith("Failed to load resource")
        and console_errors.append(message.text),
    )
    tag = f"{viewport}_{scheme}_{'js' if javascript else 'nojs'}"
    problems = []

    for path, name in (("/", "index"), ("/about", "about"), ("/no-such-page", "not_found")):
        page.goto(live_site + path)
        assert page.locator("h1").count() == 1, path
        assert _background_is_dark(page) is (scheme == "dark"), path
        problems += _check(page, f"{name}_{tag}")

    # A result: the answer first, in view, with its heat map and every class.
    page.goto(live_site + "/")
    page.set_input_files("#image", str(real_lesion))
    page.click("#submit")
    page.wait_for_selector("#result #advice", timeout=15000)
    assert page.inner_text("#top-class") in config.CLASS_NAMES
    assert page.locator("#class-probabilities .class-row").count() == config.NUM_CLASSES
    assert page.evaluate("document.getElementById('heatmap').naturalWidth") == 320
    assert page.evaluate("document.documentElement.scrollWidth") <= VIEWPORTS[viewport]["width"]
    if javascript:
        assert page.evaluate("document.activeElement.id") == "result-title"  # focus moved to the answer
        assert "Result ready" in page.inner_text("#status")
        # Scrolled to (smoothly, as Bootstrap asks), not left below the fold.
        page.wait_for_function(
            "h => { const top = document.getElementById('advice').getBoundingClientRect().top;"
            " return top >= 0 && top < h / 2; }",
            arg=VIEWPORTS[viewport]["height"],
            timeout=3000,
        )
    problems += _check(page, f"result_{tag}")

    # A file that is not an image: a clear error state, from the server.
    page.goto(live_site + "/")
    page.set_input_files("#image", files=[{"name": "notes.jpg", "mimeType": "image/jpeg", "buffer": b"nope"}])
    page.click("#submit")
    page.wait_for_selector("#problem", timeout=10000)
    assert "not an image" in page.inner_text("#error")
    problems += _check(page, f"error_{tag}")

    # A refusal of the image gate (simulated: the server's own rendering of a 422 not_dermoscopic).
    page.goto(live_site + "/")
    body, url = (
        (refusal_pages["fragment"], "**/result") if javascript else (refusal_pages["page"], live_site + "/")
    )
    page.route(
        url, lambda route: route.fulfill(status=422, body=body, content_type="text/html; charset=utf-8")
    )
    page.set_input_files("#image", str(real_lesion))
    page.click("#submit")
    page.wait_for_selector("#problem[data-code=not_dermoscopic]", timeout=10000)
    assert "not a dermatoscope photo" in page.inner_text("#problem")
    problems += _check(page, f"refusal_{tag}")
    page.unroute(url)

    if javascript:
        problems += _script_only_states(page, live_site, real_lesion, tag)
    assert problems == []
    assert console_errors == []  # no CSP violation, no script error
    context.close()


def _script_only_states(page, live_site, real_lesion, tag) -> list[str]:
    """Sending (with its progress bar) and offline exist only where the script runs."""
    problems = []
    page.goto(live_site + "/")
    page.route("**/result", lambda route: None)  # never answered: the page stays in its sending state
    page.set_input_files("#image", str(real_lesion))
    page.click("#submit")
    page.wait_for_selector("#progress-box:not(.d-none)", timeout=5000)
    assert page.get_attribute("#upload-form", "data-state") in ("sending", "analysing")
    assert page.is_disabled("#submit")
    problems += _check(page, f"sending_{tag}")
    page.unroute("**/result")

    page.goto(live_site + "/")
    page.set_input_files("#image", str(real_lesion))
    page.context.set_offline(True)
    page.click("#submit")
    page.wait_for_selector("#problem[data-code=offline]", timeout=10000)
    assert "offline" in page.inner_text("#problem").lower() or "connection" in page.inner_text("#problem")
    assert page.get_attribute("#upload-form", "data-state") == "offline"
    page.context.set_offline(False)
    problems += _check(page, f"offline_{tag}")
    return problems


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_no_javascript_at_all(browser, live_site, real_lesion, scheme):
    context = browser.new_context(java_script_enabled=False, color_scheme=scheme, viewport=VIEWPORTS["phone"])
    page = context.new_page()
    page.goto(live_site + "/")
    assert _background_is_dark(page) is (scheme == "dark")  # dark mode is CSS only
    page.set_input_files("#image", str(real_lesion))
    page.click("#submit")
    page.wait_for_selector("#result #advice", timeout=15000)
    assert page.inner_text("h1") == "Your result" and page.inner_text("#top-class") in config.CLASS_NAMES
    assert page.locator("#heatmap").get_attribute("src").startswith("data:image/jpeg;base64,")
    page.screenshot(path=str(ARTIFACTS / f"result_phone_{scheme}_scripts_off.png"), full_page=True)
    context.close()


def test_new_photo_clears_the_old_result(browser, live_site, real_lesion):
    context = _context(browser, "phone", "light", True)
    page = context.new_page()
    page.goto(live_site + "/")
    page.set_input_files("#image", str(real_lesion))
    page.click("#submit")
    page.wait_for_selector("#result")
    page.set_input_files("#image", str(sorted(real_lesion.parent.glob("*.jpg"))[1]))
    assert page.locator("#result").count() == 0
    context.close()


def test_big_photo_is_shrunk_upright_before_upload(browser, live_site, tmp_path):
    # Stored as a 4000x3000 landscape with EXIF orientation 6: upright it is a 3000x4000 portrait.
    stored = Image.new("RGB", (4000, 3000), (190, 140, 120))
    exif = Image.Exif()
    exif[0x0112] = 6
    photo = tmp_path / "phone.jpg"
    stored.save(photo, quality=95, exif=exif)
    context = _context(browser, "phone", "light", True)
    sent = _sent_upload(context, live_site, photo)
    image = Image.open(io.BytesIO(sent))  # the stored pixels, before any EXIF rotation
    assert image.size == (round(3000 * config.UPLOAD_MAX_SIDE / 4000), config.UPLOAD_MAX_SIDE)
    assert image.getexif().get(0x0112, 1) == 1 and len(sent) < photo.stat().st_size
    context.close()


def test_a_shrunk_transparent_photo_is_put_over_white_as_the_server_does(browser, live_site, tmp_path):
    """The page and the API must judge the same picture: the server puts transparency over white."""
    from model.preprocessing import decode_image

    # Transparent margins around a lesion; noise keeps the PNG larger than the page's JPEG would be.
    pixels = np.random.default_rng(0).integers(0, 256, (2000, 2000, 4), dtype=np.uint8)
    pixels[..., 3] = 0
    pixels[600:1400, 600:1400] = (150, 90, 70, 255)
    picture = Image.fromarray(pixels, "RGBA")
    photo = tmp_path / "cut-out.png"
    picture.save(photo)
    context = _context(browser, "desktop", "light", True)
    sent = np.asarray(Image.open(io.BytesIO(_sent_upload(context, live_site, photo))).convert("RGB"))
    served = np.asarray(decode_image(photo.read_bytes()).resize(sent.shape[1::-1]))
    assert sent[:50, :50].min() >= 245 and served[:50, :50].min() >= 245  # white margins, both
    assert np.abs(sent[640, 640].astype(int) - served[640, 640]).max() <= 8
    context.close()


def _sent_upload(context, live_site: str, photo) -> bytes:
    """Submit the photo on the page; the bytes the page hands to XMLHttpRequest.send as `image`."""
    context.add_init_script(
        "const send = XMLHttpRequest.prototype.send;"
        "XMLHttpRequest.prototype.send = function (body) {"
        " window.sentImage = body instanceof FormData ? body.get('image') : null;"
        " return send.call(this, body); };"
    )
    page = context.new_page()
    page.goto(live_site + "/")
    page.set_input_files("#image", str(photo))
    page.click("#submit")
    page.wait_for_selector("#result, #problem", timeout=15000)
    return bytes(
        page.evaluate("async () => Array.from(new Uint8Array(await window.sentImage.arrayBuffer()))")
    )


def test_keyboard_alone_reaches_a_result(browser, live_site, real_lesion):
    context = _context(browser, "desktop", "light", True)
    page = context.new_page()
    page.goto(live_site + "/")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Skip to the content"
    page.keyboard.press("Enter")
    assert page.evaluate("document.activeElement.id") == "main"
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "image"
    page.set_input_files("#image", str(real_lesion))  # the file dialog itself is the browser's
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "submit"
    # The focus ring is visible: a 3px outline, not the browser's default nothing.
    assert page.evaluate("getComputedStyle(document.activeElement).outlineWidth") == "3px"
    page.keyboard.press("Enter")
    page.wait_for_selector("#result")
    assert page.evaluate("document.activeElement.id") == "result-title"
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.tagName") == "A"  # on into the result's links
    context.close()
