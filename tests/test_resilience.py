"""Resilience: property tests, a decoder fuzz, schemathesis, a mixed load and a killed worker.

Every load loop is bounded (a request count or a duration) and talks to 127.0.0.1 only.
"""

from __future__ import annotations

import io
import os
import signal
import threading
import time

import numpy as np
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from bench.loopback import gunicorn_server, rss_mb, run_load, worker_pids
from model import config
from model.preprocessing import ImageError, decode_image, to_model_input

MODES = ["RGB", "L", "RGBA", "LA", "P", "CMYK", "I;16", "1", "I", "F"]


def _writable(fmt: str, mode: str) -> bool:
    try:
        Image.new(mode, (2, 2)).save(io.BytesIO(), format=fmt)
        return True
    except (OSError, KeyError, ValueError):
        return False


# Every (format, mode) pair this Pillow can write: the uploads a user could really send.
FORMATS = {
    fmt: tuple(m for m in MODES if _writable(fmt, m)) for fmt in ("PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP")
}


# --- Property tests of the one preprocessing definition --------------------------------------------
@st.composite
def encoded_images(draw):
    fmt = draw(st.sampled_from(sorted(FORMATS)))
    mode = draw(st.sampled_from(FORMATS[fmt]))
    width = draw(st.integers(1, 700))
    height = draw(st.integers(1, 700))
    seed = draw(st.integers(0, 2**16))
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    image = Image.fromarray(pixels).convert(mode if mode not in ("I;16", "I", "F") else "L")
    if mode in ("I;16", "I", "F"):
        image = (
            image.convert(mode)
            if mode != "I;16"
            else Image.fromarray(np.asarray(image, dtype=np.uint16) * 257)
        )
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue(), (width, height)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(encoded_images())
def test_preprocessing_gives_the_model_input_for_any_size_mode_and_aspect(case):
    data, (width, height) = case
    image = decode_image(data)
    assert image.mode == "RGB"
    # JPEGs may decode at 1/2, 1/4 or 1/8 scale, but never below twice the model's input size.
    scale = image.width / width
    assert scale <= 1 and abs(image.height - height * scale) <= 1
    target_w, target_h = (2 * s for s in config.IMAGE_SIZE)
    assert image.width >= min(width, target_w) and image.height >= min(height, target_h)
    array = to_model_input(image)
    assert array.shape == (*config.IMAGE_SIZE, 3) and array.dtype == np.float32
    assert np.isfinite(array).all() and array.min() >= 0 and array.max() <= 255


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 600), st.integers(1, 600))
def test_preprocessing_is_deterministic(width, height):
    data = _jpeg(width, height)
    np.testing.assert_array_equal(to_model_input(decode_image(data)), to_model_input(decode_image(data)))


# --- Fuzz of the upload decoder ---------------------------------------------------------------------
def _jpeg(width=64, height=48, seed=0) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG")
    return buffer.getvalue()


SEEDS = [_jpeg(), _jpeg(300, 200, 1)]
for _fmt in ("PNG", "GIF", "BMP", "TIFF", "WEBP"):
    _buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(2).integers(0, 256, (40, 30, 3), dtype=np.uint8)).save(
        _buffer, format=_fmt
    )
    SEEDS.append(_buffer.getvalue())


@st.composite
def mutated_uploads(draw):
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(0, 12))):
        position = draw(st.integers(0, len(data) - 1))
        data[position] = draw(st.integers(0, 255))
    cut = draw(st.integers(0, len(data)))
    return bytes(data[: cut or len(data)])


@settings(max_examples=400, deadline=None)
@given(st.one_of(mutated_uploads(), st.binary(max_size=2048)))
def test_decoder_fuzz_raises_only_image_error(data):
    try:
        image = decode_image(data)
    except ImageError:
        return
    assert image.mode == "RGB"
    to_model_input(image)


# --- The API against its own OpenAPI document -------------------------------------------------------
def test_api_conforms_to_its_openapi_document(tiny_model_dir):
    from webapp import create_app

    app = create_app({"TESTING": True, "MODEL_DIR": str(tiny_model_dir)})
    # The programmatic API, not the pytest plugin (schemathesis 4.32's plugin predates pytest 9).
    api = schemathesis.openapi.from_wsgi("/api/v1/openapi.json", app)
    operations = [result.ok() for result in api.get_all_operations()]
    assert len(operations) == 4
    for operation in operations:

        @settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
        @given(case=operation.as_strategy())
        def conforms(case):
            # Random bytes are schema-valid as a `binary` image but rightly rejected (400/415 are
            # documented); no JSON schema can say "must decode as a photo", so that one check is
            # off. Status codes, response schemas, content types and "no 5xx" are all checked.
            case.call_and_validate(excluded_checks=[schemathesis.checks.positive_data_acceptance])

        conforms()


# --- Under load on real gunicorn --------------------------------------------------------------------
def _uploads(synthetic_dataset):
    valid = [(p.read_bytes(), p.name) for p in synthetic_dataset["files"]["Test/nevus"][:3]]
    invalid = [(b"not an image", "a.txt"), (b"", "empty.jpg"), (_jpeg()[:300], "cut.jpg")]
    return valid, invalid


def _expected(model_dir, valid) -> list[dict | str]:
    """The served answer to each valid upload: the image gate's refusal code, or the probabilities."""
    from webapp.classifier import Classifier
    from webapp.gate import Gate

    classifier = Classifier.from_model_dir(model_dir)
    gate = Gate.from_metadata(model_dir, classifier.metadata)
    answers = []
    for content, _ in valid:
        image = decode_image(content)
        refusal = gate.check(image)
        answers.append(refusal.code if refusal else classifier.predict(image).probabilities)
    return answers


@pytest.mark.slow
def test_mixed_load_for_60_seconds_has_no_5xx_and_right_answers(committed_model_dir, synthetic_dataset):
    valid, invalid = _uploads(synthetic_dataset)
    uploads = valid + invalid
    expected = _expected(committed_model_dir, valid)

    def right(index: int, status: int, body: dict) -> bool:
        want = expected[index]
        if isinstance(want, str):  # refused by the image gate (422)
            return status == 422 and body["error"]["code"] == want
        if status != 200:
            return False
        return all(abs(body["probabilities"][c] - want[c]) < 1e-5 for c in config.CLASS_NAMES)

    seconds = float(os.environ.get("LOAD_TEST_SECONDS", "60"))
    with gunicorn_server(committed_model_dir, workers=2) as (base, process):
        run_load(base, valid, 4, total=50)
        before = {pid: rss_mb(pid) for pid in worker_pids(process.pid)}
        load = run_load(base, uploads, concurrency=16, seconds=seconds, check=right)
        after = {pid: rss_mb(pid) for pid in worker_pids(process.pid)}
    assert load.requests > 100
    assert load.errors == 0, load.statuses
    assert set(load.statuses) <= {200, 400, 415, 422}
    assert load.statuses[200] + load.statuses[422] > 0 and load.statuses[415] > 0
    for pid, rss in before.items():
        assert after.get(pid, rss) < rss * 1.2 + 5  # memory stable (same worker, bounded growth)


@pytest.mark.slow
def test_killed_worker_is_replaced_and_service_recovers(committed_model_dir, synthetic_dataset):
    valid, _ = _uploads(synthetic_dataset)
    with gunicorn_server(committed_model_dir, workers=2) as (base, process):
        first = worker_pids(process.pid)
        background = {}
        thread = threading.Thread(
            target=lambda: background.update(load=run_load(base, valid, concurrency=8, seconds=6))
        )
        thread.start()
        time.sleep(2)
        os.kill(first[0], signal.SIGKILL)
        thread.join()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            current = worker_pids(process.pid)
            if len(current) == 2 and first[0] not in current:
                break
            time.sleep(0.2)
        assert len(worker_pids(process.pid)) == 2 and first[0] not in worker_pids(process.pid)
        kept_answering = background["load"].statuses[200] + background["load"].statuses[422]
        assert kept_answering > 0  # it kept answering during the kill
        after = run_load(base, valid, concurrency=8, total=200)
    answered = after.statuses[200] + after.statuses[422]  # classified, or refused by the image gate
    assert after.errors == 0 and answered == 200
