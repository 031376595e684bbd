"""The web app with Flask's test client: every route, every bad input, headers, OpenAPI."""

from __future__ import annotations

import io
import logging
import struct
import subprocess
import sys
import zlib

import jsonschema
import numpy as np
import pytest
from PIL import Image

from model import config


# --- Helpers building uploads ---------------------------------------------------------------------
def _encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def _lesion(size=(180, 180), seed=0) -> Image.Image:
    rng = np.random.default_rng(seed)
    pixels = rng.uniform(0, 255, (size[1], size[0], 3)).astype(np.uint8)
    pixels[size[1] // 4 : size[1] // 2, size[0] // 4 : size[0] // 2] = (60, 30, 20)
    return Image.fromarray(pixels)


def _png_bomb(width: int = 30000, height: int = 30000) -> bytes:
    """A valid PNG header announcing width*height pixels, with a tiny compressed body."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0" * 1000))
        + chunk(b"IEND", b"")
    )


def _post(client, content: bytes, name: str = "photo.jpg", api: bool = True, compressed: bool = False):
    url = "/api/v1/predict" if api else "/"
    headers = {"Accept-Encoding": "gzip, br"} if compressed else {}
    return client.post(
        url, data={"image": (io.BytesIO(content), name)}, content_type="multipart/form-data", headers=headers
    )


VALID_UPLOADS = {
    "jpeg": lambda: _encode(_lesion(), "JPEG"),
    "png": lambda: _encode(_lesion(), "PNG"),
    "grayscale": lambda: _encode(_lesion().convert("L"), "PNG"),
    "rgba": lambda: _encode(_lesion().convert("RGBA"), "PNG"),
    "cmyk_jpeg": lambda: _encode(_lesion().convert("CMYK"), "JPEG"),
    "16bit_png": lambda: _encode(
        Image.fromarray((np.arange(180 * 180).reshape(180, 180) % 65535).astype(np.uint16)), "PNG"
    ),
    "animated_gif": lambda: _encode(_lesion(), "GIF", save_all=True, append_images=[_lesion(seed=1)], loop=0),
    "palette_png": lambda: _encode(_lesion().convert("P"), "PNG"),
    "webp": lambda: _encode(_lesion(), "WEBP"),
    "phone_photo_12mp": lambda: _encode(_lesion((3000, 4000)), "JPEG", quality=80),
}

BAD_UPLOADS = {
    "text": (b"this is not an image at all", "notes.txt", 415, "not an image"),
    "empty": (b"", "empty.jpg", 400, "empty"),
    "truncated_jpeg": (None, "cut.jpg", 400, "truncated or corrupt"),
    "corrupt_png": (None, "broken.png", 400, "truncated or corrupt"),
    "pdf": (b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF", "scan.pdf", 415, "not an image"),
    "ico": (None, "icon.ico", 415, "Unsupported image format"),
    # An iPhone's HEIC (the ISO media header is enough: it is refused before decoding).
    "heic": (b"\x00\x00\x00\x18ftypheic" + bytes(72), "IMG.HEIC", 415, "Most Compatible"),
    "bomb": (None, "bomb.png", 413, "too large"),
}


def _bad_content(key: str) -> bytes:
    content = BAD_UPLOADS[key][0]
    if content is not None:
        return content
    if key == "truncated_jpeg":
        return _encode(_lesion(), "JPEG")[:600]
    if key == "corrupt_png":
        data = bytearray(_encode(_lesion(), "PNG"))
        data[100:400] = b"\x00" * 300
        return bytes(data)
    if key == "ico":
        return _encode(_lesion((64, 64)), "ICO")
    return _png_bomb()


# --- Routes ---------------------------------------------------------------------------------------
def test_index_page_has_upload_form(client):
    page = client.get("/")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    # No `capture`: on a phone that would open the camera and hide the saved (dermatoscope) photos.
    assert 'enctype="multipart/form-data"' in html and "capture=" not in html
    assert "not a diagnosis" in html
    assert "cdn." not in html and "https://" not in html  # every asset served locally


def test_pages_load_no_bootstrap_javascript_and_only_fingerprinted_assets(client):
    import re

    for path in ("/", "/about"):
        html = client.get(path).get_data(as_text=True)
        assert "bootstrap.min.js" not in html and "popper" not in html  # no component uses them
        urls = re.findall(r'(?:href|src)="(/static/[^"]+)"', html)
        assert urls and all(re.search(r"\?v=[0-9a-f]{12}$", url) for url in urls), urls
        for url in urls:
            response = client.get(url)
            assert response.status_code == 200
            assert response.headers["Cache-Control"] == "public, max-age=31536000, immutable"


def test_static_without_the_current_fingerprint_is_not_cached_for_long(client):
    for url in ("/static/app.js", "/static/app.js?v=000000000000"):
        response = client.get(url)
        assert response.status_code == 200 and "immutable" not in response.headers.get("Cache-Control", "")


@pytest.mark.parametrize("encoding", ["br", "gzip"])
def test_text_answers_are_compressed(client, encoding):
    import re

    html = client.get("/").get_data(as_text=True)
    css = re.search(r'href="(/static/vendor/bootstrap.css[^"]*)"', html).group(1)
    for url in ("/", "/about", css, "/api/v1/openapi.json"):
        response = client.get(url, headers={"Accept-Encoding": encoding})
        assert response.headers.get("Content-Encoding") == encoding, url
        assert "Accept-Encoding" in response.headers.get("Vary", "")


def test_page_weight_is_less_than_half_of_before(client):
    """Bytes sent for / and a result page (HTML, inline pictures, CSS, JS, icon) with compression on.

    Before this work: 327 KB and 376 KB in a browser (314 KB and 434 KB by this count, with Bootstrap's
    full CSS and JS, no compression and a PNG heat map).
    """
    index = _page_weight(client, client.get("/", headers={"Accept-Encoding": "gzip, br"}))
    result = _page_weight(client, _post(client, _encode(_lesion(), "JPEG"), api=False, compressed=True))
    print(f"page weight: / {index / 1024:.1f} KB, result {result / 1024:.1f} KB")
    assert index < 327 * 1024 / 2
    assert result < 376 * 1024 / 2


def _page_weight(client, response) -> int:
    import gzip
    import re

    import brotli

    assert response.status_code == 200
    decode = {"br": brotli.decompress, "gzip": gzip.decompress}[response.headers["Content-Encoding"]]
    total = len(response.data)
    for url in re.findall(r'(?:href|src)="(/static/[^"]+)"', decode(response.data).decode()):
        total += len(client.get(url, headers={"Accept-Encoding": "gzip, br"}).data)
    return total


def test_cut_down_bootstrap_css_is_current(tmp_path):
    """webapp/static/vendor/bootstrap.css is what scripts/build_css.mjs makes from the templates today."""
    import shutil

    root = config.PROJECT_ROOT
    if shutil.which("node") is None or not (root / "node_modules" / "purgecss").is_dir():
        pytest.skip("node and `npm ci` are needed to rebuild the CSS")
    fresh = tmp_path / "bootstrap.css"
    subprocess.run(["node", "scripts/build_css.mjs", str(fresh)], cwd=root, check=True)
    committed = root / "webapp" / "static" / "vendor" / "bootstrap.css"
    assert fresh.read_text() == committed.read_text(), "run `npm run build:css` and commit the result"
    css = committed.read_text()
    assert ".card{" in css and ".carousel" not in css and ".modal{" not in css  # only what the pages use
    assert "@media (prefers-color-scheme:dark){:root{" in css  # dark mode without a script


def test_about_page_is_built_from_metadata(client):
    html = client.get("/about").get_data(as_text=True)
    for name in config.CLASS_NAMES:
        assert name in html
    assert "not a diagnosis" in html and "What it cannot do" in html
    # For people first: what it is, how good, what it cannot do, then the technical detail.
    order = [html.index(f'id="{anchor}"') for anchor in ("what", "how-good", "limitations", "technical")]
    assert order == sorted(order)
    assert "30%" in html  # the tiny model's threshold, read from its metadata
    assert "not been evaluated" in html
    assert 'alt="confusion_test.png"' not in html


def test_upload_budget_admits_a_lone_upload_and_refuses_past_its_limit():
    from webapp.budget import UploadBudget

    budget = UploadBudget(limit=10)
    assert budget.reserve(25)  # alone, an upload under the size limit always fits
    assert not budget.reserve(1)
    budget.release(25)
    assert budget.reserve(6) and budget.reserve(4) and not budget.reserve(1)
    budget.release(6)
    budget.release(4)
    assert budget.held == 0


def test_a_spent_upload_budget_answers_503_busy_and_is_given_back(app):
    spec = app.test_client().get("/api/v1/openapi.json").json
    budget = app.extensions["upload_budget"]
    budget.held = budget.limit  # other uploads are being received
    client = app.test_client()
    response = _post(client, VALID_UPLOADS["jpeg"]())
    assert response.status_code == 503 and response.headers["Retry-After"] == "2"
    assert response.json["error"]["code"] == "busy"
    _validate(response.json, "Error", spec)
    assert "503" in spec["paths"]["/api/v1/predict"]["post"]["responses"]
    page = _post(client, VALID_UPLOADS["jpeg"](), api=False)
    assert page.status_code == 503 and "too many photos at once" in page.get_data(as_text=True)
    # Routes that take no photo, and a body over the size limit, keep their own answers.
    assert client.post("/nowhere", data=b"x").status_code == 404
    assert client.post("/about", data=b"x").status_code == 405
    oversize = b"x" * (app.config["MAX_CONTENT_LENGTH"] + 1)
    multipart = "multipart/form-data; boundary=x"
    assert client.post("/api/v1/predict", data=oversize, content_type=multipart).status_code == 413
    budget.held = 0
    for content in (VALID_UPLOADS["jpeg"](), b"not an image"):  # answered, or refused: either way
        assert _post(client, content).status_code in (200, 415)
        assert budget.held == 0  # its bytes were given back


def test_health_and_readiness(client):
    assert client.get("/healthz").json == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json["status"] == "ready"


def test_an_unready_model_answers_503_in_the_documented_error_shape(app, monkeypatch):
    model = app.extensions["classifier"]
    monkeypatch.setattr(model, "predict_array", lambda pixels: (np.full(9, np.nan), None))
    response = app.test_client().get("/readyz", headers={"Accept": "text/html"})
    assert response.status_code == 503
    _validate(response.json, "Error", app.test_client().get("/api/v1/openapi.json").json)
    assert response.json["error"]["code"] == "not_ready"


def test_model_endpoint_returns_metadata(client):
    body = client.get("/api/v1/model").json
    assert body["class_names"] == list(config.CLASS_NAMES)
    assert body["risk_groups"]["malignant"] == list(config.RISK_GROUPS["malignant"])


def test_unknown_route_gives_clean_404(client):
    page = client.get("/no-such-page")
    assert page.status_code == 404 and b"Traceback" not in page.data
    assert client.get("/api/v1/nothing").json["error"]["status"] == 404


def test_wrong_method_gives_405_json(client):
    response = client.get("/api/v1/predict")
    assert response.status_code == 405 and response.json["error"]["status"] == 405


def test_plot_route_only_serves_known_files(client):
    assert client.get("/model/plots/metadata.json").status_code == 404
    assert client.get("/model/plots/..%2Fmodel.h5").status_code == 404


# --- Predictions ----------------------------------------------------------------------------------
def test_api_prediction_matches_openapi_schema(client):
    response = client.post(
        "/api/v1/predict?heatmap=true", data={"image": (io.BytesIO(VALID_UPLOADS["jpeg"]()), "a.jpg")}
    )
    assert response.status_code == 200
    body = response.json
    spec = client.get("/api/v1/openapi.json").json
    _validate(body, "Prediction", spec)
    assert sum(body["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)
    assert body["top_class"] == max(body["probabilities"], key=body["probabilities"].get)
    assert body["risk_group"] == config.RISK_OF_CLASS[body["top_class"]]
    assert body["melanoma_probability"] == body["probabilities"]["melanoma"]
    heat = Image.open(io.BytesIO(__import__("base64").b64decode(body["heatmap_png_base64"])))
    assert heat.format == "PNG" and max(heat.size) == 320


def test_openapi_describes_every_api_route_and_errors_match(client):
    spec = client.get("/api/v1/openapi.json").json
    assert set(spec["paths"]) == {
        "/api/v1/predict",
        "/api/v1/model",
        "/api/v1/openapi.json",
        "/healthz",
        "/readyz",
    }
    _validate(client.get("/api/v1/model").json, "ModelMetadata", spec)
    _validate(client.get("/readyz").json, "Status", spec)
    error = _post(client, b"nope", "x.txt")
    assert str(error.status_code) in spec["paths"]["/api/v1/predict"]["post"]["responses"]
    _validate(error.json, "Error", spec)


def test_heatmap_is_optional(client):
    body = _post(client, VALID_UPLOADS["jpeg"]()).json
    assert "heatmap_png_base64" not in body


@pytest.mark.parametrize("kind", sorted(VALID_UPLOADS))
def test_valid_images_of_every_kind_are_classified(client, kind):
    for api in (True, False):
        response = _post(client, VALID_UPLOADS[kind](), f"upload.{kind}", api=api)
        assert response.status_code == 200, response.get_data(as_text=True)[:300]
    assert "top-class" in response.get_data(as_text=True)  # the page shows the result


def test_exif_rotated_photo_is_read_upright(client):
    import base64

    upright = _lesion((120, 180), seed=3)  # portrait
    # Stored rotated (landscape); EXIF orientation 6 says "rotate 90 degrees clockwise to view".
    stored = upright.transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6

    def predict(content: bytes) -> tuple[dict, tuple[int, int]]:
        body = client.post(
            "/api/v1/predict?heatmap=true",
            data={"image": (io.BytesIO(content), "photo.jpg")},
            content_type="multipart/form-data",
        ).json
        return body, Image.open(io.BytesIO(base64.b64decode(body["heatmap_png_base64"]))).size

    rotated, rotated_size = predict(_encode(stored, "JPEG", quality=100, exif=exif))
    plain, plain_size = predict(_encode(upright, "JPEG", quality=100))
    _, ignored_size = predict(_encode(stored, "JPEG", quality=100))
    # The heat map is drawn on the photo as it is meant to be seen: upright, like the plain upload.
    assert rotated_size == plain_size and rotated_size[0] < rotated_size[1]
    assert ignored_size[0] > ignored_size[1]  # without the EXIF tag the photo stays landscape
    # The served prediction averages the 8 flips/rotations, so it is the same either way.
    for name in config.CLASS_NAMES:
        assert abs(rotated["probabilities"][name] - plain["probabilities"][name]) < 1e-4


def test_16bit_png_is_scaled_not_clipped():
    from model.preprocessing import decode_image

    ramp = (np.linspace(0, 65535, 64 * 64).reshape(64, 64)).astype(np.uint16)
    image = decode_image(_encode(Image.fromarray(ramp), "PNG"))
    pixels = np.asarray(image)
    assert pixels.min() == 0 and pixels.max() == 255 and 100 < pixels.mean() < 155


# --- Bad input ------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", sorted(BAD_UPLOADS))
def test_bad_uploads_get_clear_4xx(client, kind):
    _, name, status, message = BAD_UPLOADS[kind]
    content = _bad_content(kind)
    api = _post(client, content, name)
    assert api.status_code == status
    assert message.lower() in api.json["error"]["message"].lower()
    page = _post(client, content, name, api=False)
    assert page.status_code == status
    html = page.get_data(as_text=True)
    assert message.lower() in html.lower() and "Traceback" not in html
    assert 'id="upload-form"' in html  # the person can try again on the same page


def test_missing_file_field(client):
    response = client.post("/api/v1/predict", data={}, content_type="multipart/form-data")
    assert response.status_code == 400 and "No file" in response.json["error"]["message"]
    page = client.post("/", data={"image": (io.BytesIO(b""), "")}, content_type="multipart/form-data")
    assert page.status_code == 400 and b"No file" in page.data


def test_upload_over_size_limit_gets_413(tiny_model_dir):
    from webapp import create_app

    small = create_app({"TESTING": True, "MODEL_DIR": str(tiny_model_dir), "MAX_CONTENT_LENGTH": 100_000})
    client = small.test_client()
    big = _encode(_lesion((1500, 1500)), "PNG")
    api = _post(client, big, "big.png")
    assert api.status_code == 413 and "too large" in api.json["error"]["message"]
    assert "under 97 KB" in api.json["error"]["message"]  # 100,000 bytes, rounded down
    page = client.post("/", data={"image": (io.BytesIO(big), "big.png")}, headers={"Accept": "text/html"})
    assert page.status_code == 413 and b"too large" in page.data and b"under 97 KB" in page.data


def test_unexpected_error_is_a_clean_500(app, monkeypatch):
    classifier = app.extensions["classifier"]
    monkeypatch.setattr(classifier, "predict", lambda image: 1 / 0)
    response = _post(app.test_client(), VALID_UPLOADS["jpeg"]())
    assert response.status_code == 500
    assert "ZeroDivision" not in response.get_data(as_text=True)
    assert response.json["error"]["message"].startswith("Something went wrong")


# --- Privacy and headers --------------------------------------------------------------------------
def test_uploads_never_touch_disk_and_are_not_logged(client, monkeypatch, caplog):
    import tempfile

    def no_disk(*args, **kwargs):
        raise AssertionError("an upload was about to be written to a temporary file")

    monkeypatch.setattr(tempfile, "TemporaryFile", no_disk)
    monkeypatch.setattr(tempfile, "NamedTemporaryFile", no_disk)
    monkeypatch.setattr(tempfile, "SpooledTemporaryFile", no_disk)
    caplog.set_level(logging.DEBUG)
    photo = VALID_UPLOADS["phone_photo_12mp"]()
    assert len(photo) > 1024 * 500  # bigger than Werkzeug's in-memory threshold
    assert _post(client, photo, "my-private-mole.jpg").status_code == 200
    assert _post(client, b"garbage", "my-private-mole.txt").status_code == 415
    assert "my-private-mole" not in caplog.text


def test_security_headers_on_every_response(client):
    for response in (
        client.get("/"),
        client.get("/healthz"),
        client.get("/nope"),
        _post(client, b"x", "x.txt"),
    ):
        csp = response.headers["Content-Security-Policy"]
        assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp and "unsafe-inline" not in csp
        assert response.headers["X-Content-Type-Options"] == "nosniff"


def test_pages_have_no_inline_script(client):
    import re

    html = client.get("/").get_data(as_text=True) + client.get("/about").get_data(as_text=True)
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html)
    assert " style=" not in html and "onclick" not in html


def test_debug_is_off_by_default(app):
    assert not app.debug


def test_webapp_imports_nothing_the_serving_image_lacks(tiny_model_dir):
    """The Docker image installs requirements-serve.txt only: no training stack may be imported."""
    training_only = ["tensorflow", "keras", "pandas", "sklearn", "scipy", "matplotlib", "h5py", "Augmentor"]
    code = (
        "import sys; from webapp import create_app; "
        f"app = create_app({{'MODEL_DIR': {str(tiny_model_dir)!r}}}); "
        "app.test_client().get('/about'); "
        f"print(sorted(m for m in {training_only!r} if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


# --- Start-up with a bad model --------------------------------------------------------------------
@pytest.mark.parametrize("damage", ["missing_dir", "missing_tflite", "truncated_tflite", "bad_metadata"])
def test_bad_model_fails_at_startup_with_a_clear_error(tiny_model_dir, tmp_path, damage):
    import shutil

    from webapp import create_app
    from webapp.classifier import ModelLoadError

    model_dir = tmp_path / "model"
    if damage != "missing_dir":
        shutil.copytree(tiny_model_dir, model_dir)
    if damage == "missing_tflite":
        (model_dir / config.MODEL_TFLITE_FILE).unlink()
    if damage == "truncated_tflite":
        path = model_dir / config.MODEL_TFLITE_FILE
        path.write_bytes(path.read_bytes()[:2000])
    if damage == "bad_metadata":
        (model_dir / config.METADATA_FILE).write_text("{not json")
    with pytest.raises(ModelLoadError):
        create_app({"MODEL_DIR": str(model_dir)})


def _validate(instance: dict, schema_name: str, spec: dict) -> None:
    # The components travel with the schema so that its "#/components/..." references resolve.
    schema = {**spec["components"]["schemas"][schema_name], "components": spec["components"]}
    jsonschema.validate(instance, schema)


def test_about_page_says_whose_validation_figures_a_refit_shows(tiny_model_dir, tmp_path):
    import json
    import shutil

    from webapp import create_app

    model_dir = tmp_path / "refit"
    shutil.copytree(tiny_model_dir, model_dir)
    metadata = json.loads((model_dir / config.METADATA_FILE).read_text())
    figures = {"accuracy": 0.6, "balanced_accuracy": 0.5, "melanoma_vs_rest_auc": 0.8}
    figures |= {"malignant_sensitivity": 0.8, "malignant_specificity": 0.7, "expected_calibration_error": 0.1}
    metadata["training"]["selection_run"] = {"run": "U2"}
    metadata["metrics"] |= {"val": figures, "test": {**figures, "images": 118, "intervals_95": {}}}
    (model_dir / config.METADATA_FILE).write_text(json.dumps(metadata))
    client = create_app({"TESTING": True, "MODEL_DIR": str(model_dir)}).test_client()
    html = client.get("/about").get_data(as_text=True)
    assert '<th scope="col">validation (run U2)</th>' in html and "final fit of run U2" in html
    plain = create_app({"TESTING": True, "MODEL_DIR": str(tiny_model_dir)}).test_client()
    assert "final fit" not in plain.get("/about").get_data(as_text=True)


def test_about_page_renders_the_metrics_of_both_test_sets(tiny_model_dir, tmp_path):
    import json
    import shutil

    from markupsafe import escape

    from model.model_card import limitation_lines
    from tests.metrics_examples import two_test_sets_metrics
    from webapp import create_app

    model_dir = tmp_path / "two_tests"
    shutil.copytree(tiny_model_dir, model_dir)
    metadata = json.loads((model_dir / config.METADATA_FILE).read_text())
    metadata["metrics"] = two_test_sets_metrics()  # the schema model.evaluate writes
    (model_dir / config.METADATA_FILE).write_text(json.dumps(metadata))
    response = create_app({"TESTING": True, "MODEL_DIR": str(model_dir)}).test_client().get("/about")
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    assert "official Test" in html and "0.600" in html  # isic9 Test accuracy
    assert "HAM10000 held-out" in html and "0.700" in html and "0.900" in html  # its accuracy, mel-vs-nevus
    assert 'id="ham-test"' in html and "1,414 more HAM10000 images" in html  # plain words, with separators
    lines = limitation_lines(metadata["metrics"])
    assert any("at half saturation" in line for line in lines)  # measured by the colour probe
    assert all(str(escape(line)) in html for line in lines)


# --- The one answer -------------------------------------------------------------------------------
def _risk(malignant: float, pre_malignant: float) -> dict[str, float]:
    return {"malignant": malignant, "pre-malignant": pre_malignant, "benign": 1 - malignant - pre_malignant}


@pytest.mark.parametrize(
    ("malignant", "pre_malignant", "level"),
    [
        (0.40, 0.00, "see_doctor_soon"),
        (0.30, 0.00, "see_doctor_soon"),  # at the threshold counts
        (0.29, 0.05, "have_it_checked"),  # malignant + pre-malignant reaches it
        (0.05, 0.60, "have_it_checked"),  # a likely actinic keratosis
        (0.10, 0.10, "keep_watching"),
    ],
)
def test_advice_rule_uses_the_threshold_from_metadata(malignant, pre_malignant, level):
    from model.advice import advise

    metadata = {"metrics": {"operating_point": {"malignant_threshold": 0.3}}}
    answer = advise(_risk(malignant, pre_malignant), metadata)
    assert answer.level == level and answer.threshold == 0.3
    assert "30%" in answer.reason
    # Another model's threshold moves the answer: nothing is hard-coded.
    stricter = advise(
        _risk(malignant, pre_malignant), {"metrics": {"operating_point": {"malignant_threshold": 0.9}}}
    )
    assert stricter.level == "keep_watching"


def test_unvalidated_model_never_says_low_concern():
    from model.advice import advise

    answer = advise(_risk(0.0, 0.0), {"metrics": {}})
    assert answer.level == "have_it_checked" and answer.threshold is None


@pytest.mark.parametrize(
    "operating_point, flag, level",
    [
        ({"malignant_threshold": 0.0}, True, "see_doctor_soon"),
        ({"malignant_threshold": 1.01}, False, "keep_watching"),
        ({}, False, "have_it_checked"),  # unvalidated: no guessed threshold flags anything
    ],
)
def test_malignant_flag_is_the_advice_verdict(tiny_model_dir, sample_jpeg, operating_point, flag, level):
    import json

    from webapp.classifier import Classifier

    metadata = json.loads((tiny_model_dir / config.METADATA_FILE).read_text())
    metadata["metrics"] = {"operating_point": operating_point}
    classifier = Classifier(tiny_model_dir / config.MODEL_TFLITE_FILE, metadata)
    prediction = classifier.predict(Image.open(sample_jpeg).convert("RGB"))
    assert (prediction.malignant_flag, prediction.advice.level) == (flag, level)


def test_advice_quotes_sensitivity_with_its_interval_from_metadata():
    from model.advice import advise

    test = {
        "images": 118,
        "malignant_sensitivity": 0.8125,
        "intervals_95": {"malignant_sensitivity": [0.69, 0.92]},
        "per_class": {"melanoma": {"support": 16.0}, "nevus": {"support": 16.0}},
    }
    metadata = {"metrics": {"operating_point": {"malignant_threshold": 0.3}, "test": test}}
    sentence = advise(_risk(0.5, 0), metadata).sensitivity
    assert "sent 13 of the 16 malignant lesions" in sentence  # of the malignant ones, not of 118
    assert "(81%, 95% interval 69% to 92%)" in sentence


def test_percentages_read_as_people_read_them():
    from model.advice import advise, percent

    near = advise(_risk(0.3154, 0.0), {"metrics": {"operating_point": {"malignant_threshold": 0.3159}}})
    assert "31.5%, below the 31.6%" in near.reason  # never "32%, below the 32%"
    closer = advise(_risk(0.16505, 0.0), {"metrics": {"operating_point": {"malignant_threshold": 0.16514}}})
    assert "16.50%, below the 16.51%" in closer.reason  # never "16.5%, below the 16.5%"

    assert percent(1.58e-7) == "<1%" and percent(0.0) == "0%" and percent(0.9999) == ">99%"
    assert percent(0.316) == "32%"


@pytest.mark.parametrize(
    ("malignant", "top_class", "note"),
    [
        (0.35, ("nevus", 0.62), "The single most likely class, nevus (62%), is benign, but the advice"),
        (0.29, ("melanoma", 0.29), "The single most likely class is melanoma (29%, malignant), but"),
        (0.62, ("melanoma", 0.62), None),  # the class and the advice agree: nothing to explain
        (0.05, ("nevus", 0.90), None),
    ],
)
def test_advice_explains_a_most_likely_class_that_seems_to_disagree(malignant, top_class, note):
    from model.advice import advise

    metadata = {"metrics": {"operating_point": {"malignant_threshold": 0.3}}}
    reason = advise(_risk(malignant, 0.0), metadata, top_class=top_class).reason
    assert (note in reason) if note else ("most likely" not in reason)


@pytest.mark.parametrize(
    ("threshold", "probabilities", "level", "explained"),
    [
        (0.3, {"nevus": 0.6, "melanoma": 0.3, "basal cell carcinoma": 0.1}, "see_doctor_soon", "melanoma"),
        (
            0.3,
            {"nevus": 0.7, "actinic keratosis": 0.2, "melanoma": 0.1},
            "have_it_checked",
            "actinic keratosis",
        ),
        (0.3, {"nevus": 0.9, "melanoma": 0.1}, "keep_watching", "nevus"),
        (None, {"nevus": 0.9, "melanoma": 0.01}, "have_it_checked", "nevus"),  # unvalidated: no group decided
    ],
)
def test_heat_map_explains_the_class_the_advice_is_about(threshold, probabilities, level, explained):
    from model.advice import advise, explained_class

    probabilities = dict.fromkeys(config.CLASS_NAMES, 0.0) | probabilities
    risk = {group: sum(probabilities[c] for c in names) for group, names in config.RISK_GROUPS.items()}
    operating_point = {} if threshold is None else {"malignant_threshold": threshold}
    answer = advise(risk, {"metrics": {"operating_point": operating_point}})
    assert answer.level == level and explained_class(answer, probabilities) == explained


def test_a_flagged_benign_top_class_maps_the_malignant_class_on_page_and_api(app, monkeypatch):
    """Nevus on top, but the malignant group over the threshold: the map, page and API say melanoma."""
    model = app.extensions["classifier"]
    probabilities = np.array(
        [0.6 if c == "nevus" else 0.4 if c == "melanoma" else 0.0 for c in model.class_names]
    )
    class_maps = np.random.default_rng(0).random((8, 8, len(model.class_names)), dtype=np.float32)
    monkeypatch.setattr(model, "predict_array", lambda pixels: (probabilities, class_maps))
    prediction = model.predict(Image.new("RGB", (64, 64), (150, 100, 80)))
    assert (prediction.top_class, prediction.heatmap_class, prediction.advice.level) == (
        "nevus",
        "melanoma",
        "see_doctor_soon",
    )
    assert np.array_equal(prediction.class_map, class_maps[:, :, model.class_names.index("melanoma")])
    client = app.test_client()
    assert _post(client, VALID_UPLOADS["jpeg"]()).json["heatmap_class"] == "melanoma"
    page = " ".join(_post(client, VALID_UPLOADS["jpeg"](), api=False).get_data(as_text=True).split())
    assert "heat map for melanoma laid over it" in page
    assert "It shows melanoma, the most likely class of the risk group the advice is about, not nevus" in page


def test_page_and_api_give_the_same_answer_first(client):
    import re

    photo = VALID_UPLOADS["jpeg"]()
    body = _post(client, photo).json
    assert body["advice"]["level"] in ("see_doctor_soon", "have_it_checked", "keep_watching")
    assert body["advice"]["threshold"] == 0.3  # the fixture model's operating point
    page = _post(client, photo, api=False).get_data(as_text=True)
    fragment = client.post("/result", data={"image": (io.BytesIO(photo), "a.jpg")}).get_data(as_text=True)
    for html in (page, fragment):
        assert f'data-level="{body["advice"]["level"]}"' in html
        assert body["advice"]["title"] in html
        # The answer comes before the class detail and the heat map.
        assert html.index('id="advice"') < html.index('id="top-class"') < html.index('id="heatmap"')
    # The script's fragment is the form post's card, byte for byte (bar the measured inference time).
    card = page[
        page.index('<section class="card shadow-sm mb-3" id="result"') : page.index("</section>") + 10
    ]
    timing = re.compile(r"inference [\d.]+ ms")
    assert timing.sub("", card) == timing.sub("", fragment.strip()[fragment.strip().index("<section") :])
    assert "<h1" in page and "<h1" not in fragment


def test_result_page_has_side_by_side_heat_map_with_legend(client):
    html = _post(client, VALID_UPLOADS["jpeg"](), api=False).get_data(as_text=True)
    assert 'id="photo" ' in html and 'id="heatmap" ' in html and 'id="heatmap-legend"' in html
    assert 'src="data:image/jpeg;base64,' in html  # JPEG on the page, a fifth of the PNG's bytes
    assert "e-0" not in html  # no "1.58e-07" anywhere


def test_heat_map_ramp_brightens_steadily():
    """More is brighter all along the ramp, so it reads without telling red from green (or in grey)."""
    from webapp import heatmap

    rgb = np.asarray(heatmap.legend(width=256, height=1), dtype=np.float64)[0] / 255
    linear = np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
    luminance = linear @ [0.2126, 0.7152, 0.0722]
    lightness = 116 * np.cbrt(luminance) - 16  # CIE L*, exact above the darkest 1%
    assert np.all(np.diff(lightness) > -0.5)  # never darker (up to uint8 rounding)
    assert lightness[-1] - lightness[0] > 60


def test_heat_map_on_the_frame_is_called_out(client, app, monkeypatch):
    from webapp import heatmap

    photo = Image.new("RGB", (160, 160), (180, 120, 100))
    edge = np.zeros((10, 10), dtype=np.float32)
    edge[0, :] = 1.0  # hottest along the top edge
    centre = np.zeros((10, 10), dtype=np.float32)
    centre[4:6, 4:6] = 1.0
    assert heatmap.hot_area_on_frame(photo, heatmap.map_at(photo.size, edge))
    assert not heatmap.hot_area_on_frame(photo, heatmap.map_at(photo.size, centre))
    assert not heatmap.hot_area_on_frame(photo, heatmap.map_at(photo.size, np.ones((10, 10))))  # flat
    vignette = np.array(photo)
    vignette[:, :40] = 0  # a black ring on the left, hot there
    left = np.zeros((10, 10), dtype=np.float32)
    left[3:7, 1:2] = 1.0
    assert heatmap.hot_area_on_frame(Image.fromarray(vignette), heatmap.map_at(photo.size, left))
    # The page and the API carry the same caveat, from the same check.
    monkeypatch.setattr(heatmap, "hot_area_on_frame", lambda image, weights: True)
    page = _post(client, VALID_UPLOADS["jpeg"](), api=False).get_data(as_text=True)
    assert 'id="caveat-heat_on_frame"' in page
    assert _post(client, VALID_UPLOADS["jpeg"]()).json["caveats"] == [heatmap.FRAME_CAVEAT]
    monkeypatch.setattr(heatmap, "hot_area_on_frame", lambda image, weights: False)
    page = _post(client, VALID_UPLOADS["jpeg"](), api=False).get_data(as_text=True)
    assert "caveat-" not in page and _post(client, VALID_UPLOADS["jpeg"]()).json["caveats"] == []


# --- Refusals and errors --------------------------------------------------------------------------
@pytest.mark.parametrize("code", ["not_a_lesion", "not_dermoscopic", "poor_quality"])
def test_gate_refusals_render_as_their_own_states(client, monkeypatch, code):
    from markupsafe import escape

    from webapp import api, errors, views
    from webapp.gate import refusal
    from webapp.prediction import UploadError

    message = refusal(code).message

    def refuse(upload, with_heatmap=True):
        raise UploadError(message, 422, code)

    monkeypatch.setattr(views, "predict_upload", refuse)
    monkeypatch.setattr(api, "predict_upload", refuse)
    photo = VALID_UPLOADS["jpeg"]()
    response = _post(client, photo)
    assert response.status_code == 422 and response.json["error"]["code"] == code
    title = errors.REFUSAL_TITLES[code]
    page = _post(client, photo, api=False)
    fragment = client.post("/result", data={"image": (io.BytesIO(photo), "a.jpg")})
    for answer in (page, fragment):
        html = answer.get_data(as_text=True)
        assert answer.status_code == 422 and title in html and html.count(escape(message)) == 1
        assert f'data-code="{code}"' in html and 'id="result"' not in html
    # The message is the one place that says what to do next and that this is no reassurance.
    assert 'id="problem-next"' not in fragment.get_data(as_text=True)
    assert fragment.get_data(as_text=True).count("doctor") == message.count("doctor") == 1
    assert 'id="upload-form"' in page.get_data(as_text=True)  # try again on the same page


def test_a_mostly_missing_picture_is_refused_as_no_reassurance(client):
    from bench.hostile import BOMBS

    blank = BOMBS["PNG 1-bit 7000x7000, blank"]()  # 6 KB claiming 49 megapixels
    api = _post(client, blank, "blank.png")
    assert api.status_code == 422 and api.json["error"]["code"] == "poor_quality"
    fragment = client.post("/result", data={"image": (io.BytesIO(blank), "blank.png")})
    html = fragment.get_data(as_text=True)
    assert fragment.status_code == 422 and "most of the image is missing" in html
    assert "not a reassurance" in html and html.count("doctor") == 1


def test_a_fully_transparent_picture_is_refused_as_empty_not_overexposed(client):
    buffer = io.BytesIO()
    Image.new("RGBA", (300, 300), (120, 80, 60, 0)).save(buffer, "PNG")
    api = _post(client, buffer.getvalue(), "empty.png")
    assert api.status_code == 422 and api.json["error"]["code"] == "poor_quality"
    message = api.json["error"]["message"]
    assert "fully transparent" in message and "overexposed" not in message
    assert message.endswith("changing, bleeding or itching.")  # no reassurance, as every refusal


def test_every_api_error_carries_a_stable_code(client):
    spec_codes = set(
        client.get("/api/v1/openapi.json").json["components"]["schemas"]["Error"]["properties"]["error"][
            "properties"
        ]["code"]["enum"]
    )  # noqa: E501
    answers = [
        client.get("/api/v1/nothing"),
        client.get("/api/v1/predict"),
        client.post("/api/v1/predict", data={}, content_type="multipart/form-data"),
        client.post("/api/v1/predict", json={"image": "x"}),
        _post(client, b"text", "a.txt"),
        client.post("/api/v1/predict?heatmap=banana", data={"image": (io.BytesIO(b"x"), "a.jpg")}),
    ]
    for response in answers:
        error = response.json["error"]
        assert error["code"] in spec_codes and error["status"] == response.status_code and error["message"]


def test_405_names_the_allowed_methods(client):
    response = client.get("/api/v1/predict")
    assert response.status_code == 405 and response.json["error"]["code"] == "method_not_allowed"
    assert response.headers["Allow"] == "OPTIONS, POST"
    assert "GET" in client.delete("/about").headers["Allow"]


def test_wrong_field_name_is_named(client):
    response = client.post("/api/v1/predict", data={"photo": (io.BytesIO(VALID_UPLOADS["jpeg"]()), "a.jpg")})
    message = response.json["error"]["message"]
    assert response.status_code == 400 and response.json["error"]["code"] == "missing_image"
    assert "`image`" in message and "`photo`" in message


def _multipart(boundary: str) -> bytes:
    return (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="a.jpg"\r\n'
            f"Content-Type: image/jpeg\r\n\r\n"
        ).encode()
        + VALID_UPLOADS["jpeg"]()
        + f"\r\n--{boundary}--\r\n".encode()
    )


@pytest.mark.parametrize("content_type", ["multipart/form-data", "multipart/form-data; boundary=other"])
def test_a_multipart_body_its_boundary_does_not_parse_is_named_as_such(client, content_type):
    """A client that sets Content-Type itself sends no boundary, or the wrong one: say so, not "no file"."""
    response = client.post("/api/v1/predict", data=_multipart("b0und"), content_type=content_type)
    assert response.status_code == 400 and response.json["error"]["code"] == "bad_request"
    assert "boundary" in response.json["error"]["message"]
    right = client.post(
        "/api/v1/predict", data=_multipart("b0und"), content_type="multipart/form-data; boundary=b0und"
    )
    assert right.status_code in (200, 422)


@pytest.mark.parametrize("chunked", [True, False])
def test_a_malformed_chunked_body_is_a_400_and_is_not_logged(client, caplog, chunked):
    """gunicorn raises its parse errors while the app reads the body; their message quotes the body."""
    from gunicorn.http.errors import InvalidChunkSize

    class BrokenChunks(io.BytesIO):
        def read(self, *args):
            raise InvalidChunkSize(b"secret-bytes")

        readline = readinto = read

    response = client.post(
        "/api/v1/predict",
        data=_multipart("b"),
        content_type="multipart/form-data; boundary=b",
        environ_overrides={"wsgi.input": BrokenChunks()}
        | ({"wsgi.input_terminated": True, "HTTP_TRANSFER_ENCODING": "chunked"} if chunked else {}),
    )
    assert response.status_code == 400 and response.json["error"]["code"] == "bad_request"
    assert "chunked" in response.json["error"]["message"]
    assert "secret-bytes" not in caplog.text and "Traceback" not in caplog.text


def test_a_photo_sent_as_text_is_named_as_such(client):
    """curl -F "image=<photo.jpg" (no filename) sends a text field: say so, not "no file"."""
    response = client.post(
        "/api/v1/predict", data={"image": "bytes of a photo"}, content_type="multipart/form-data"
    )
    message = response.json["error"]["message"]
    assert response.status_code == 400 and response.json["error"]["code"] == "missing_image"
    assert "arrived as text" in message and "-F image=@photo.jpg" in message


def test_two_photos_in_one_request_are_refused_not_half_answered(client):
    photo = VALID_UPLOADS["jpeg"]()
    files = {"image": [(io.BytesIO(photo), "a.jpg"), (io.BytesIO(photo), "b.jpg")]}
    response = client.post("/api/v1/predict", data=files)
    assert response.status_code == 400 and response.json["error"]["code"] == "too_many_images"
    assert "2 files" in response.json["error"]["message"]


def test_json_body_is_told_to_send_multipart(client):
    response = client.post("/api/v1/predict", json={"image": "aGVsbG8="})
    assert response.status_code == 415
    assert (
        "multipart/form-data" in response.json["error"]["message"]
        and "application/json" in response.json["error"]["message"]
    )


@pytest.mark.parametrize("value", ["banana", "2", "maybe"])
def test_invalid_heatmap_value_is_a_400(client, value):
    data = {"image": (io.BytesIO(VALID_UPLOADS["jpeg"]()), "a.jpg")}
    response = client.post(f"/api/v1/predict?heatmap={value}", data=data)
    assert response.status_code == 400 and response.json["error"]["code"] == "invalid_parameter"
    assert "`heatmap`" in response.json["error"]["message"] and value in response.json["error"]["message"]


@pytest.mark.parametrize(("value", "present"), [("yes", True), ("on", True), ("0", False), ("off", False)])
def test_heatmap_accepts_every_documented_value(client, value, present):
    data = {"image": (io.BytesIO(VALID_UPLOADS["jpeg"]()), "a.jpg"), "heatmap": value}
    body = client.post("/api/v1/predict", data=data).json
    assert ("heatmap_png_base64" in body) is present


def test_ten_thousand_form_fields_get_the_right_message(client):
    data = {f"field{i}": "x" for i in range(10_000)}
    data["image"] = (io.BytesIO(VALID_UPLOADS["jpeg"]()), "a.jpg")
    response = client.post("/api/v1/predict", data=data)
    assert response.status_code == 413 and response.json["error"]["code"] == "too_many_fields"
    message = response.json["error"]["message"]
    assert "too many fields" in message and "`image`" in message and "MB" not in message


def test_openapi_has_operation_ids_examples_and_every_error(client):
    from webapp.gate import refusal

    spec = client.get("/api/v1/openapi.json").json
    operations = [op for path in spec["paths"].values() for op in path.values()]
    ids = [op["operationId"] for op in operations]
    assert len(ids) == len(set(ids)) == len(operations)
    predict = spec["paths"]["/api/v1/predict"]["post"]["responses"]
    assert {"200", "400", "405", "413", "415", "422", "500"} <= set(predict)
    assert "Allow" in predict["405"]["headers"]
    for op in operations:
        for status, response in op["responses"].items():
            content = response["content"]["application/json"]
            assert "example" in content, (op["operationId"], status)
            name = content["schema"]["$ref"].rsplit("/", 1)[1]
            _validate(content["example"], name, spec)
    assert spec["components"]["responses"]["NotFound"]
    # The examples are the served model's name and the gate's real message, not stale copies.
    served = client.get("/api/v1/model").json
    example = predict["200"]["content"]["application/json"]["example"]
    assert example["model"] == {"name": served["name"], "version": served["version"]}
    refused = predict["422"]["content"]["application/json"]["example"]["error"]
    assert refused["message"] == refusal(refused["code"]).message


def test_about_page_reads_how_good_it_is_from_the_committed_metadata(tiny_model_dir, tmp_path):
    import json
    import shutil

    from model.advice import percent
    from webapp import create_app

    model_dir = tmp_path / "evaluated"
    shutil.copytree(tiny_model_dir, model_dir)
    metadata = json.loads((model_dir / config.METADATA_FILE).read_text())
    committed = json.loads((config.MODEL_DIR / config.METADATA_FILE).read_text())
    metadata["metrics"] = committed["metrics"]
    (model_dir / config.METADATA_FILE).write_text(json.dumps(metadata))
    html = (
        create_app({"TESTING": True, "MODEL_DIR": str(model_dir)})
        .test_client()
        .get("/about")
        .get_data(as_text=True)
    )
    test = committed["metrics"]["test"]
    low, high = test["intervals_95"]["malignant_sensitivity"]
    sensitivity = percent(test["malignant_sensitivity"])
    assert f"<strong>{sensitivity}</strong> (95% interval {percent(low)} to {percent(high)})" in html
    assert percent(committed["metrics"]["operating_point"]["malignant_threshold"]) in html
    for source in test.get("by_source", {}):
        assert source in html
