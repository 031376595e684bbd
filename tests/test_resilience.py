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

from bench.loopback import gunicorn_server, gunicorn_start_failure, rss_mb, run_load, worker_pids
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
            # The WSGI client does not decode gzip/brotli as an HTTP client would: ask for plain bodies.
            case.call_and_validate(
                headers={"Accept-Encoding": "identity"},
                excluded_checks=[schemathesis.checks.positive_data_acceptance],
            )

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
def test_mixed_load_has_no_5xx_and_right_answers(committed_model_dir, synthetic_dataset):
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

    seconds = float(os.environ.get("LOAD_TEST_SECONDS", "20"))
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


# --- Decoding with a memory budget (issue 21) -------------------------------------------------------
@pytest.fixture(scope="session")
def worst_uploads() -> dict[str, bytes]:
    """The costliest uploads that are still decoded (bench.hostile.WORST_CASES)."""
    from bench import hostile

    return hostile.build(hostile.WORST_CASES)


@pytest.fixture(scope="session")
def bomb_uploads() -> dict[str, bytes]:
    """The uploads of issue 21 that must be refused before decoding (bench.hostile.BOMBS)."""
    from bench import hostile

    return hostile.build(hostile.BOMBS)


def test_bombs_are_refused_before_decoding(bomb_uploads):
    from model.preprocessing import ImageTooLarge, IncompleteImage

    expected = {
        "PNG 16-bit 7000x7000, blank": IncompleteImage,
        "PNG 1-bit 7000x7000, blank": IncompleteImage,
        "PNG 7000x7000, truncated": IncompleteImage,
        "TIFF float 5000x5000": ImageTooLarge,
        "JPEG progressive 4:4:4 4000x3000": ImageTooLarge,
    }
    assert set(expected) == set(bomb_uploads)
    for name, data in bomb_uploads.items():
        assert len(data) < 12 * 2**20
        with pytest.raises(expected[name]):
            decode_image(data)


def test_worst_cases_are_decoded_reduced_and_within_budget(worst_uploads):
    from model.preprocessing import decode_cost_mb

    for name, data in worst_uploads.items():
        opened = Image.open(io.BytesIO(data))
        declared = opened.size
        if opened.format == "JPEG":
            opened.draft("RGB", tuple(2 * s for s in config.IMAGE_SIZE))
        assert decode_cost_mb(opened, declared) <= config.MAX_DECODE_MB, name
        image = decode_image(data)
        # Reduced to between 2x and 4x the model input (JPEG by DCT scaling, the rest by reduce).
        assert 2 * min(config.IMAGE_SIZE) <= min(image.size) <= 4 * max(config.IMAGE_SIZE), name


def test_a_small_file_claiming_a_large_picture_is_poor_quality_422(client):
    from bench import hostile

    data = hostile.BOMBS["PNG 1-bit 7000x7000, blank"]()
    response = client.post("/api/v1/predict", data={"image": (io.BytesIO(data), "x.png")})
    assert response.status_code == 422
    error = response.get_json()["error"]
    assert error["code"] == "poor_quality" and "missing" in error["message"]


def test_offline_decode_keeps_every_pixel():
    # data_prep hashes and augments at full size: draft_size=None reduces nothing.
    buffer = io.BytesIO()
    pixels = np.random.default_rng(0).integers(0, 256, (1000, 1400, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(buffer, format="PNG")
    assert decode_image(buffer.getvalue(), draft_size=None).size == (1400, 1000)
    assert decode_image(buffer.getvalue()).size == (467, 334)  # 1/3: both sides >= 2 x 128


@pytest.mark.slow
def test_no_upload_raises_a_workers_peak_memory_by_100_mb(committed_model_dir, worst_uploads, bomb_uploads):
    from bench.hostile import peak_rise_per_upload

    no_recycling = {"GUNICORN_MAX_REQUESTS": "0"}
    with gunicorn_server(committed_model_dir, workers=1, extra_env=no_recycling) as (base, process):
        (worker,) = worker_pids(process.pid)
        run_load(base, [(_jpeg(300, 200), "a.jpg")], 1, total=2)  # what every request needs is loaded
        rises = peak_rise_per_upload(base, worker, {**worst_uploads, **bomb_uploads})
        after = rss_mb(worker)
    assert all(status in (200, 413, 422) for status, _ in rises.values()), rises
    # Decoded in full: classified, or refused by the image gate after decoding (synthetic pictures).
    assert all(rises[name][0] in (200, 422) for name in worst_uploads), rises
    assert max(rise for _, rise in rises.values()) < 100, rises
    assert after < 250, after  # memory is given back, not kept at the peak


@pytest.mark.slow
def test_four_worst_uploads_at_once_keep_the_server_under_512_mb(committed_model_dir, worst_uploads):
    from bench.hostile import FOUR_AT_ONCE, concurrent_peak_pss

    costliest = [worst_uploads[name] for name in FOUR_AT_ONCE]
    with gunicorn_server(committed_model_dir, workers=2) as (base, process):
        run_load(base, [(_jpeg(), "a.jpg")], 4, total=8)
        peak = concurrent_peak_pss(base, process.pid, costliest)
    assert peak < 512, peak


@pytest.mark.slow
def test_many_large_uploads_at_once_keep_the_server_under_512_mb(committed_model_dir):
    """40 bodies of 11 MB arriving together: each worker holds its upload budget, the rest retry."""
    from bench.hostile import MANY_UPLOADS, many_uploads_peak_pss

    with gunicorn_server(committed_model_dir, workers=2) as (base, process):
        run_load(base, [(_jpeg(), "a.jpg")], 4, total=8)
        peak, statuses = many_uploads_peak_pss(base, process.pid)
        after = run_load(base, [(_jpeg(), "a.jpg")], 4, total=20)  # the budget was given back
    assert peak < 512, peak
    assert sum(statuses.values()) == MANY_UPLOADS and set(statuses) <= {415, 503}, statuses
    assert statuses[415] >= 2 and statuses[503] >= 1, statuses  # some received in full, some told to retry
    assert after.errors == 0 and after.statuses[200] + after.statuses[422] == 20


@pytest.mark.slow
def test_a_busy_answer_reaches_a_client_still_sending_its_photo(committed_model_dir):
    """The 503 comes after the body is read and discarded, so a plain HTTP client reads it (no reset)."""
    import socket

    from bench.loopback import post_image

    with gunicorn_server(committed_model_dir, workers=1, extra_env={"SKIN_UPLOAD_BUDGET_MB": "1"}) as (
        base,
        _,
    ):
        host, port = base.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port))) as holder:  # declares 5 MB, sends it slowly
            holder.sendall(
                b"POST /api/v1/predict HTTP/1.1\r\nHost: x\r\nContent-Length: 5000000\r\n"
                b"Content-Type: multipart/form-data; boundary=b\r\n\r\n--b\r\n"
            )
            time.sleep(0.5)
            status, body = post_image(base, b"\xff" * 11_000_000)
    assert status == 503 and body["error"]["code"] == "busy"


@pytest.mark.slow
def test_a_too_large_upload_and_a_broken_chunked_body_get_json_4xx_not_resets(committed_model_dir):
    """urllib sends the whole body before it reads: an early 413 would reach it as a reset."""
    import json
    import socket

    from bench.loopback import post_image, server_log

    broken = (
        b"POST /api/v1/predict HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
        b"Content-Type: multipart/form-data; boundary=X\r\n\r\nZZ\r\nsecret\r\n0\r\n\r\n"
    )
    with gunicorn_server(committed_model_dir, workers=1) as (base, process):
        status, body = post_image(base, b"\xff" * 13_000_000)
        with socket.create_connection(("127.0.0.1", int(base.rsplit(":", 1)[1])), timeout=10) as sock:
            sock.sendall(broken)
            answer = b"".join(iter(lambda: sock.recv(65536), b""))  # until the server closes
        log = server_log(process)
    assert status == 413 and body["error"]["code"] == "payload_too_large"
    head, _, rest = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400") and b"application/json" in head, answer[:300]
    assert json.loads(rest)["error"]["code"] == "bad_request"
    assert "Traceback" not in log and "secret" not in log


# --- Slow clients (issue 21) ------------------------------------------------------------------------
@pytest.mark.slow
def test_slow_clients_do_not_starve_predictions_and_stalls_are_cut_off(committed_model_dir):
    from bench.hostile import slow_client_figures
    from webapp.worker import CLIENT_IDLE_TIMEOUT_S

    valid = [(_jpeg(180, 180, seed), f"{seed}.jpg") for seed in range(4)]
    with gunicorn_server(committed_model_dir, workers=2) as (base, _):
        run_load(base, valid, 2, total=8)
        figures = slow_client_figures(base, valid, slow=16, seconds=6)
    load = figures.load
    answered = load.statuses[200] + load.statuses[422]  # classified, or refused by the image gate
    assert load.requests >= 20 and answered == load.requests
    assert figures.within_1s >= 0.95, (figures.within_1s, load.percentile(99))
    # A client that stops sending is cut off: in its headers by the keep-alive bound (5 s), in
    # its body by the read timeout, answered 408.
    assert figures.header_stall_s < 5 + 2 and figures.header_stall_answer == b""
    assert CLIENT_IDLE_TIMEOUT_S - 1 < figures.body_stall_s < CLIENT_IDLE_TIMEOUT_S + 2
    assert figures.body_stall_answer.startswith(b"HTTP/1.1 408")
    # Clients trickling headers are cut off too, and reconnect: the keep-alive bound, plus the up to
    # two sends a client makes before it notices that the server closed the connection.
    assert figures.header_trickle_cut_s and max(figures.header_trickle_cut_s) < 5 + 2 + 1


@pytest.mark.slow
def test_a_trickling_upload_is_cut_off_at_the_request_deadline(committed_model_dir):
    from bench.loopback import SlowClients, server_log

    # A byte a second never trips the read timeout; the whole-request deadline (gunicorn's
    # `timeout`, 25 s in production, 3 s here) cuts it.
    with gunicorn_server(committed_model_dir, workers=1, extra_env={"GUNICORN_CMD_ARGS": "--timeout 3"}) as (
        base,
        process,
    ):
        with SlowClients(base, 1, kind="body", seconds=8) as trickle:
            time.sleep(7)
        log = server_log(process)
    # Cut at 3 s; the client notices at one of its next two sends.
    assert trickle.cut_after and 3 <= trickle.cut_after[0] < 3 + 2 + 1
    assert "ran past the deadline" in log and "Traceback" not in log


# --- A model that proves itself at boot (issue 21) ------------------------------------------------
def _flip_a_byte(path) -> None:
    """Change one byte near the end of a model file: its hash no longer matches the recorded one."""
    content = bytearray(path.read_bytes())
    content[-100] ^= 0xFF
    path.write_bytes(bytes(content))


def _damaged_copy(model_dir, tmp_path, damage: str):
    import json
    import shutil

    target = tmp_path / "model"
    shutil.copytree(model_dir, target, ignore=shutil.ignore_patterns("*.h5", "evaluation", "*.png"))
    path = target / config.METADATA_FILE
    metadata = json.loads(path.read_text())
    names = metadata["class_names"]
    if damage == "renamed_class":
        names[names.index("nevus")] = "naevus"
    elif damage == "one_class_short":
        names.pop()
    elif damage == "melanoma_nevus_swapped":
        i, j = names.index("melanoma"), names.index("nevus")
        names[i], names[j] = names[j], names[i]
    elif damage == "wrong_input_size":
        metadata["input"]["size"] = [side + 32 for side in metadata["input"]["size"]]  # not the exported size
    elif damage == "model_file_changed":
        _flip_a_byte(target / config.MODEL_TFLITE_FILE)
    elif damage == "no_integrity_fields":
        del metadata["sha256"], metadata["known_answer"]
    elif damage == "known_answer_edited":
        metadata["known_answer"]["probabilities"][0]["melanoma"] += 0.01
    elif damage == "gate_threshold_missing":  # a folder from before a quality check was added
        del metadata[config.GATE_METADATA_KEY]["thresholds"]["quality"]["colourless"]
    elif damage == "gate_file_changed":
        _flip_a_byte(target / config.GATE_TFLITE_FILE)
    path.write_text(json.dumps(metadata))
    return target


BROKEN_MODELS = [
    "renamed_class",
    "one_class_short",
    "melanoma_nevus_swapped",
    "wrong_input_size",
    "model_file_changed",
    "no_integrity_fields",
    "known_answer_edited",
]
# Damage to the image gate, which the server checks before listening too.
BROKEN_GATES = ["gate_threshold_missing", "gate_file_changed"]


def test_committed_metadata_proves_the_committed_model(committed_model_dir):
    import json

    from model import integrity
    from webapp.classifier import Classifier

    metadata = json.loads((committed_model_dir / config.METADATA_FILE).read_text())
    assert metadata["sha256"][config.MODEL_TFLITE_FILE] == integrity.file_sha256(
        committed_model_dir / config.MODEL_TFLITE_FILE
    )
    # A trained model tells every pair of classes apart on the reference inputs.
    assert metadata["known_answer"]["indistinct"] == []
    assert Classifier.from_model_dir(committed_model_dir).class_names == list(config.CLASS_NAMES)


def test_export_command_rewrites_the_integrity_fields(tiny_model_dir, tmp_path):
    import json
    import shutil

    from model.export import main

    model_dir = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model_dir)
    path = model_dir / config.METADATA_FILE
    metadata = json.loads(path.read_text())
    recorded = {key: metadata.pop(key) for key in ("sha256", "known_answer")}
    path.write_text(json.dumps(metadata))
    assert main(["--model-dir", str(model_dir)]) == 0
    rewritten = json.loads(path.read_text())
    assert rewritten["sha256"] == recorded["sha256"]
    assert rewritten["known_answer"]["probabilities"] == recorded["known_answer"]["probabilities"]
    assert {k: v for k, v in rewritten.items() if k not in recorded} == metadata


@pytest.mark.parametrize("damage", BROKEN_MODELS)
def test_broken_model_is_refused_at_load(committed_model_dir, tmp_path, damage):
    from webapp.classifier import Classifier, ModelLoadError

    with pytest.raises(ModelLoadError):
        Classifier.from_model_dir(_damaged_copy(committed_model_dir, tmp_path, damage))


def test_a_changed_or_unrecorded_gate_file_is_refused_at_load(committed_model_dir, tmp_path):
    import json

    from webapp.classifier import ModelLoadError
    from webapp.gate import Gate

    target = _damaged_copy(committed_model_dir, tmp_path, "none")
    metadata = json.loads((target / config.METADATA_FILE).read_text())
    assert Gate.from_metadata(target, metadata)  # the committed gate is the recorded one
    _flip_a_byte(target / config.GATE_TFLITE_FILE)
    with pytest.raises(ModelLoadError, match="SHA-256"):
        Gate.from_metadata(target, metadata)
    del metadata["sha256"][config.GATE_TFLITE_FILE]
    with pytest.raises(ModelLoadError, match="no sha256"):
        Gate.from_metadata(target, metadata)


@pytest.mark.slow
def test_every_broken_model_stops_gunicorn_with_one_line_and_exit_78(committed_model_dir, tmp_path):
    from webapp.classifier import EXIT_MODEL_INVALID

    for damage in BROKEN_MODELS + BROKEN_GATES:
        result = gunicorn_start_failure(_damaged_copy(committed_model_dir, tmp_path / damage, damage))
        assert result.returncode == EXIT_MODEL_INVALID, (damage, result.stderr[-2000:])
        refusals = [line for line in result.stderr.splitlines() if line.startswith("refusing to start: ")]
        assert len(refusals) == 1, (damage, result.stderr)
        assert "Traceback" not in result.stderr and "Listening at" not in result.stderr


BAD_SETTINGS = {
    "WEB_CONCURRENCY": "0",  # gunicorn would listen with no worker to answer
    "GUNICORN_WORKER_CONNECTIONS": "many",
    "SKIN_INFERENCE_THREADS": "abc",
    "SKIN_MAX_CONTENT_LENGTH": "-5",
    "SKIN_UPLOAD_BUDGET_MB": "0",
}


@pytest.mark.parametrize("name", BAD_SETTINGS)
def test_a_bad_setting_stops_gunicorn_with_one_line_naming_it(committed_model_dir, name):
    from webapp.classifier import EXIT_MODEL_INVALID

    result = gunicorn_start_failure(committed_model_dir, extra_env={name: BAD_SETTINGS[name]})
    assert result.returncode == EXIT_MODEL_INVALID, result.stderr[-2000:]
    refusals = [line for line in result.stderr.splitlines() if line.startswith("refusing to start: ")]
    assert len(refusals) == 1 and name in refusals[0], result.stderr
    assert "Traceback" not in result.stderr and "Listening at" not in result.stderr


def test_create_app_refuses_a_setting_that_is_not_a_positive_number(committed_model_dir):
    from webapp import SettingsError, create_app

    for name, value in (("INFERENCE_THREADS", "2"), ("UPLOAD_BUDGET_MB", -1), ("MAX_CONTENT_LENGTH", True)):
        with pytest.raises(SettingsError, match=f"SKIN_{name}"):
            create_app({"TESTING": True, "MODEL_DIR": str(committed_model_dir), name: value})


# --- Graceful shutdown (issue 21) -------------------------------------------------------------------
@pytest.mark.slow
def test_sigterm_refuses_new_connections_finishes_requests_and_exits_in_time(committed_model_dir):
    import socket

    from bench.loopback import multipart

    with gunicorn_server(committed_model_dir, workers=2) as (base, process):
        port = int(base.rsplit(":", 1)[1])
        run_load(base, [(_jpeg(), "a.jpg")], 2, total=4)
        body, content_type = multipart("image", "a.jpg", _jpeg(300, 200))
        head = (
            f"POST /api/v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        in_flight = socket.create_connection(("127.0.0.1", port), timeout=30)
        in_flight.sendall(head + body[:1000])
        time.sleep(0.5)
        signalled = time.monotonic()
        process.send_signal(signal.SIGTERM)
        time.sleep(1.5)  # every process has seen the signal and closed its listening socket
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=5)
        in_flight.sendall(body[1000:])  # the request that was in flight completes
        answer = in_flight.recv(65536)
        in_flight.close()
        process.wait(timeout=28)
        exited_after = time.monotonic() - signalled
    assert answer.startswith((b"HTTP/1.1 200", b"HTTP/1.1 422"))  # answered (the gate may refuse it)
    assert process.returncode == 0
    assert exited_after < 25  # Heroku sends SIGKILL 30 s after SIGTERM


# --- Headers (issue 21) -----------------------------------------------------------------------------
def _raw(base: str, request: bytes) -> bytes:
    import socket

    with socket.create_connection(("127.0.0.1", int(base.rsplit(":", 1)[1])), timeout=10) as sock:
        sock.sendall(request)
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
    return answer


@pytest.mark.slow
def test_headers_on_every_answer_no_host_redirect_hsts_when_trusted(committed_model_dir):
    from webapp.security import HEADERS

    with gunicorn_server(committed_model_dir, workers=1) as (base, _):
        redirect = _raw(base, b"GET /static//x HTTP/1.1\r\nHost: evil.example\r\n\r\n")
        answers = {
            "redirect": redirect,
            "400": _raw(base, b"GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n"),
            "414": _raw(base, b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"),
            "431": _raw(base, b"GET / HTTP/1.1\r\nHost: x\r\n" + b"X-A: b\r\n" * 200 + b"\r\n"),
            "page": _raw(base, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
        }
        https = _raw(base, b"GET / HTTP/1.1\r\nHost: x\r\nX-Forwarded-Proto: https\r\n\r\n")
    assert b"evil.example" not in redirect
    for name, answer in answers.items():
        for header in HEADERS:
            assert f"\r\n{header}: ".encode() in answer, (name, header, answer[:400])
    assert answers["400"].startswith(b"HTTP/1.1 400")
    assert answers["414"].startswith(b"HTTP/1.1 414") and answers["431"].startswith(b"HTTP/1.1 431")
    assert b"Strict-Transport-Security: max-age=" in https
    assert b"Strict-Transport-Security" not in answers["page"]


@pytest.mark.slow
def test_forwarded_proto_from_an_untrusted_peer_is_ignored_and_two_servers_coexist(committed_model_dir):
    # Loopback is not in the trusted list here; and no control socket means no shared path.
    from bench.loopback import server_log

    untrusted = {"FORWARDED_ALLOW_IPS": "10.1.2.3"}
    with (
        gunicorn_server(committed_model_dir, workers=1, extra_env=untrusted) as (first, first_process),
        gunicorn_server(committed_model_dir, workers=1) as (second, second_process),
    ):
        https = _raw(first, b"GET / HTTP/1.1\r\nHost: x\r\nX-Forwarded-Proto: https\r\n\r\n")
        assert b"Strict-Transport-Security" not in https and https.startswith(b"HTTP/1.1 200")
        assert _raw(second, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").startswith(b"HTTP/1.1 200")
        time.sleep(1.5)  # gunicorn opens its control socket (when enabled) once the workers are up
        logs = server_log(first_process) + server_log(second_process)
    assert "Control socket" not in logs and "control socket" not in logs
