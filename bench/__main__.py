"""Serving and training benchmark: `python -m bench` prints tables and writes docs/PERFORMANCE.md.

Everything runs on this machine, on 127.0.0.1 only, with bounded request counts. Needs the real
Test images (ISIC_DATA_DIR) and the committed model; the training figures also need the prepared
data (`python -m data_prep all`).
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from PIL import Image

from bench import hostile, pages
from bench.loopback import gunicorn_server, rss_mb, run_load, worker_pids
from model import config
from model.preprocessing import load_image_files
from webapp import DEFAULTS

BUDGETS = {
    "p50_small_c1_ms": 15.0,
    "p50_phone_c1_ms": 150.0,
    "rps_ratio_c16": 10.0,
    "rss_mb": 200.0,
    "rss_growth_pct": 10.0,
    "cold_start_s": 5.0,
    "upload_peak_rise_mb": 100.0,
    "server_memory_mb": 512.0,
    "slow_clients_within_1s": 0.95,
}
# The served interpreter's thread count (the web app's default).
INFERENCE_THREADS = DEFAULTS["INFERENCE_THREADS"]
# Issue 19: the image gate (quality statistics + gate network) adds at most this at p50.
GATE_BUDGET_MS = 3.0
DOC = config.PROJECT_ROOT / "docs" / "PERFORMANCE.md"
# The baseline runs under gunicorn's threaded worker, as the demos it stands for do: Keras's tf.data
# input pipeline fails under gevent's monkey-patched threading.
BASELINE = "bench.baseline_app:app"
BASELINE_ENV = {"GUNICORN_CMD_ARGS": "--worker-class gthread --threads 4"}


def main(argv: list[str] | None = None) -> int:
    """Run every measurement, print the tables, write docs/PERFORMANCE.md."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--memory-requests", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=300, help="small-image requests per load level")
    parser.add_argument("--out", type=Path, default=DOC)
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    small = [(p.read_bytes(), p.name) for p in sorted((config.DATA_DIR / "Test").glob("*/*.jpg"))]
    if not small:
        print(f"error: no Test images under {config.DATA_DIR} (set ISIC_DATA_DIR)", file=sys.stderr)
        return 2
    phone = [(phone_photo(small[0][0]), "phone.jpg")]
    sections = {
        "runtime": runtime_table(),
        "gate": gate_timing(),
        "end_to_end": end_to_end(small, phone, args.requests),
        "memory": memory(small, args.memory_requests),
        "hostile": hostile_clients(small),
        "training": training(),
        "pages": pages.measure(sorted((config.DATA_DIR / "Test" / "melanoma").glob("*.jpg"))[0]),
    }
    report = render(sections, args)
    print(report)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report)
    print(f"\nwritten to {args.out}")
    return 0


# --- Serving runtime alone -------------------------------------------------------------------------
def runtime_table() -> list[dict]:
    """LiteRT vs Keras on preprocessed Test images: batch-1 latency and batch-16 throughput."""
    from ai_edge_litert.interpreter import Interpreter

    from model.export import load_served_keras_model

    images = load_image_files(sorted((config.DATA_DIR / "Test").glob("*/*.jpg")))
    model_path = str(config.MODEL_DIR / config.MODEL_TFLITE_FILE)

    def litert(batch: int):
        interpreter = Interpreter(model_path=model_path, num_threads=INFERENCE_THREADS)
        index = interpreter.get_input_details()[0]["index"]
        interpreter.resize_tensor_input(index, [batch, *config.IMAGE_SIZE, 3])
        interpreter.allocate_tensors()

        def run(x):
            interpreter.set_tensor(index, x)
            interpreter.invoke()

        return run

    keras_model = load_served_keras_model(config.MODEL_DIR)
    rows = []
    for name, one, sixteen in (
        ("LiteRT (served)", litert(1), litert(16)),
        (
            "Keras model.predict (baseline)",
            lambda x: keras_model.predict(x, verbose=0),
            lambda x: keras_model.predict(x, verbose=0),
        ),
    ):
        latencies = _time_each(lambda i, run=one: run(images[i % len(images)][None]), 200)
        batch_seconds = _time_each(lambda i, run=sixteen: run(images[(i * 16) % 96 : (i * 16) % 96 + 16]), 20)
        rows.append(
            {
                "runtime": name,
                "p50_ms": np.percentile(latencies, 50),
                "p99_ms": np.percentile(latencies, 99),
                "img_s_batch1": 1000 / np.mean(latencies),
                "img_s_batch16": 16_000 / np.mean(batch_seconds),
            }
        )
    return rows


def gate_timing() -> dict:
    """What the image gate adds to a request: statistics plus gate network, per decoded Test image."""
    import json

    from model.gate import read_upload
    from webapp.gate import Gate

    metadata = json.loads((config.MODEL_DIR / config.METADATA_FILE).read_text())
    gate = Gate.from_metadata(config.MODEL_DIR, metadata, INFERENCE_THREADS)
    images = [read_upload(p) for p in sorted((config.DATA_DIR / "Test").glob("*/*.jpg"))]
    latencies = _time_each(lambda i: gate.check(images[i % len(images)]), 500)
    return {"p50_ms": np.percentile(latencies, 50), "p99_ms": np.percentile(latencies, 99)}


def _time_each(step, count: int, warmup: int = 5) -> np.ndarray:
    for i in range(warmup):
        step(i)
    times = []
    for i in range(count):
        started = time.perf_counter()
        step(i)
        times.append((time.perf_counter() - started) * 1000)
    return np.array(times)


# --- End to end over HTTP --------------------------------------------------------------------------
def end_to_end(small, phone, requests: int) -> dict:
    """Ours and the baseline under gunicorn: cold start, then load at concurrency 1, 4 and 16."""
    results = {}
    for name, app in (("ours", None), ("baseline", BASELINE)):
        started = time.monotonic()
        env = BASELINE_ENV if app else None
        with gunicorn_server(config.MODEL_DIR, workers=2, app=app, timeout=120, extra_env=env) as (base, _):
            cold = time.monotonic() - started
            run_load(base, small, 4, total=40)  # warm-up: every worker has answered
            rows = []
            for concurrency in (1, 4, 16):
                for kind, uploads, total in (
                    ("180x180", small, requests),
                    ("12 MP", phone, max(30, requests // 8)),
                ):
                    load = run_load(base, uploads, concurrency, total=total)
                    rows.append(
                        {
                            "concurrency": concurrency,
                            "image": kind,
                            "rps": load.rps,
                            "p50_ms": load.percentile(50),
                            "p99_ms": load.percentile(99),
                            "errors": load.errors,
                            "requests": load.requests,
                        }
                    )
        results[name] = {"cold_start_s": cold, "rows": rows}
    return results


def memory(small, requests: int) -> dict:
    """Resident memory of one worker after warm-up and after `requests` requests."""
    out = {}
    for name, app, count in (("ours", None, requests), ("baseline", BASELINE, 200)):
        # The same worker from start to end.
        no_recycling = {"GUNICORN_MAX_REQUESTS": "0", **(BASELINE_ENV if app else {})}
        with gunicorn_server(config.MODEL_DIR, workers=1, app=app, timeout=120, extra_env=no_recycling) as (
            base,
            process,
        ):
            run_load(base, small, 4, total=200)
            worker = worker_pids(process.pid)[0]
            warm = rss_mb(worker)
            load = run_load(base, small, 16, total=count)
            after = rss_mb(worker)
            same_worker = worker in worker_pids(process.pid)
        out[name] = {
            "warm_mb": warm,
            "after_mb": after,
            "requests": load.requests,
            "errors": load.errors,
            "same_worker": same_worker,
        }
    return out


def hostile_clients(small) -> dict:
    """Worst-case memory per upload, four at once, and predictions beside 16 slow clients."""
    worst, bombs = hostile.build(hostile.WORST_CASES), hostile.build(hostile.BOMBS)
    no_recycling = {"GUNICORN_MAX_REQUESTS": "0"}
    with gunicorn_server(config.MODEL_DIR, workers=1, extra_env=no_recycling) as (base, process):
        run_load(base, small, 2, total=20)
        worker = worker_pids(process.pid)[0]
        rises = hostile.peak_rise_per_upload(base, worker, {**worst, **bombs})
        after = rss_mb(worker)
    with gunicorn_server(config.MODEL_DIR, workers=2) as (base, process):
        run_load(base, small, 4, total=40)
        four = hostile.concurrent_peak_pss(base, process.pid, [worst[name] for name in hostile.FOUR_AT_ONCE])
        many, many_statuses = hostile.many_uploads_peak_pss(base, process.pid)
        slow = hostile.slow_client_figures(base, small, slow=16, seconds=15)
    sizes = {name: len(data) for name, data in {**worst, **bombs}.items()}
    return {
        "rises": rises,
        "sizes": sizes,
        "worker_after_mb": after,
        "four_at_once_mb": four,
        "many_uploads_mb": many,
        "many_uploads_statuses": dict(many_statuses),
        "slow": slow,
    }


# --- Training --------------------------------------------------------------------------------------
def training() -> dict | None:
    """Images per second of the tf.data input pipeline and of a training step, as `model.train` runs them."""
    try:
        from model import data
        from model.train import TrainConfig, training_dataset, training_model

        table = data.read_training_set(config.WORK_DIR).sample(960, random_state=0)
    except FileNotFoundError:
        return None
    labels = data.label_indices(table.label)
    settings = TrainConfig()
    dataset = training_dataset(table.path, labels, settings)
    started = time.perf_counter()
    for _ in dataset:  # first pass: decode through the shared preprocessing, fill the cache
        pass
    decode = len(table) / (time.perf_counter() - started)
    started = time.perf_counter()
    for _ in dataset:  # cached pass: shuffle + augmentation only
        pass
    cached = len(table) / (time.perf_counter() - started)
    model = training_model(settings)
    model.compile(optimizer="adamw", loss="sparse_categorical_crossentropy")
    batches = list(dataset.take(12))
    model.train_on_batch(*batches[0])
    started = time.perf_counter()
    for x, y in batches[1:]:
        model.train_on_batch(x, y)
    step = 11 * settings.batch_size / (time.perf_counter() - started)
    crop = settings.crop_size or config.IMAGE_SIZE[0]
    return {"decode_img_s": decode, "augment_img_s": cached, "train_step_img_s": step, "crop": crop}


# --- Report ----------------------------------------------------------------------------------------
def budgets(sections: dict) -> list[tuple[str, str, str, bool]]:
    """(budget, measured, limit, holds) for each budget of the issue."""
    ours, base = sections["end_to_end"]["ours"], sections["end_to_end"]["baseline"]
    row = lambda rows, c, kind: next(r for r in rows if r["concurrency"] == c and r["image"] == kind)  # noqa: E731
    small_c1, phone_c1 = row(ours["rows"], 1, "180x180"), row(ours["rows"], 1, "12 MP")
    ours_c16, base_c16 = row(ours["rows"], 16, "180x180"), row(base["rows"], 16, "180x180")
    ratio = ours_c16["rps"] / base_c16["rps"]
    mem = sections["memory"]["ours"]
    growth = (mem["after_mb"] - mem["warm_mb"]) / mem["warm_mb"] * 100
    return [
        (
            "p50, concurrency 1, 180x180 JPEG",
            f"{small_c1['p50_ms']:.1f} ms",
            "<= 15 ms",
            small_c1["p50_ms"] <= 15,
        ),
        (
            "p50, concurrency 1, 12 MP JPEG",
            f"{phone_c1['p50_ms']:.1f} ms",
            "<= 150 ms",
            phone_c1["p50_ms"] <= 150,
        ),
        (
            "requests/s at concurrency 16 vs baseline",
            f"{ratio:.1f}x, {ours_c16['errors']} errors",
            ">= 10x, 0 errors",
            ratio >= 10 and ours_c16["errors"] == 0,
        ),
        (
            "one worker's resident memory",
            f"{max(mem['warm_mb'], mem['after_mb']):.0f} MB",
            "< 200 MB",
            max(mem["warm_mb"], mem["after_mb"]) < 200,
        ),
        (f"memory growth over {mem['requests']:,} requests", f"{growth:+.1f}%", "< 10%", growth < 10),
        ("cold start to /readyz 200", f"{ours['cold_start_s']:.2f} s", "< 5 s", ours["cold_start_s"] < 5),
        (
            "image gate added per request, p50",
            f"{sections['gate']['p50_ms']:.2f} ms",
            f"<= {GATE_BUDGET_MS:g} ms",
            sections["gate"]["p50_ms"] <= GATE_BUDGET_MS,
        ),
        *hostile_budgets(sections["hostile"]),
        *pages.budgets(sections["pages"]),
    ]


def hostile_budgets(figures: dict) -> list[tuple[str, str, str, bool]]:
    """The budgets of issue 21: memory per hostile upload, four at once, slow clients."""
    name, (_, rise) = max(figures["rises"].items(), key=lambda item: item[1][1])
    slow = figures["slow"]
    return [
        (
            "worst-case rise of a worker's peak memory per upload",
            f"{rise:.0f} MB ({name})",
            f"< {BUDGETS['upload_peak_rise_mb']:.0f} MB",
            rise < BUDGETS["upload_peak_rise_mb"],
        ),
        (
            "whole server (PSS) with four worst-case uploads at once",
            f"{figures['four_at_once_mb']:.0f} MB",
            f"< {BUDGETS['server_memory_mb']:.0f} MB",
            figures["four_at_once_mb"] < BUDGETS["server_memory_mb"],
        ),
        (
            f"whole server (PSS) with {hostile.MANY_UPLOADS} uploads of 11 MB arriving at once",
            f"{figures['many_uploads_mb']:.0f} MB",
            f"< {BUDGETS['server_memory_mb']:.0f} MB",
            figures["many_uploads_mb"] < BUDGETS["server_memory_mb"],
        ),
        (
            "predictions within 1 s beside 16 slow clients",
            f"{slow.within_1s:.1%} of {slow.load.requests}, {slow.load.errors} errors",
            ">= 95%, 0 errors",
            slow.within_1s >= BUDGETS["slow_clients_within_1s"] and slow.load.errors == 0,
        ),
    ]


def render(sections: dict, args) -> str:
    """The Markdown report."""
    lines = [
        "# Performance",
        "",
        f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC by `python -m bench` on {_machine()}. "
        "Load runs on 127.0.0.1 with a threaded keep-alive client in the same machine (it competes "
        "for the same 2 cores). Ours: gunicorn with `gunicorn.conf.py` (2 gevent workers, `webapp.worker`) "
        f"serving the LiteRT model ({INFERENCE_THREADS} inference threads per worker). Baseline: "
        "`bench/baseline_app.py`, Flask calling the Keras `.h5` (the same 8-view prediction) "
        "with `model.predict` per request, under the same gunicorn configuration with the threaded "
        "worker (2 gthread workers x 4 threads; tf.data fails under gevent).",
        "",
        "## Budgets",
        "",
        "| budget | measured | limit | holds |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {name} | {measured} | {limit} | {'yes' if ok else '**no**'} |"
        for name, measured, limit, ok in budgets(sections)
    ]
    lines += [
        "",
        f"## Serving runtime alone (preprocessed {'x'.join(map(str, config.IMAGE_SIZE))} input, "
        f"{INFERENCE_THREADS} threads as served)",
        "",
        "| runtime | p50 ms | p99 ms | img/s batch 1 | img/s batch 16 |",
        "|---|---|---|---|---|",
    ]
    runtime = sections["runtime"]
    for r in runtime:
        lines.append(
            f"| {r['runtime']} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['img_s_batch1']:.0f} | "
            f"{r['img_s_batch16']:.0f} |"
        )
    lines.append(
        f"\nLiteRT vs Keras: {runtime[1]['p50_ms'] / runtime[0]['p50_ms']:.0f}x lower p50 at batch 1."
    )
    gate = sections["gate"]
    lines.append(
        f"\nImage gate (`webapp.gate.Gate.check` on a decoded Test image: image statistics + the "
        f"{'x'.join(map(str, config.GATE_IMAGE_SIZE))} gate network in LiteRT, "
        f"{INFERENCE_THREADS} threads): "
        f"p50 {gate['p50_ms']:.2f} ms, p99 {gate['p99_ms']:.2f} ms."
    )
    ours, base = sections["end_to_end"]["ours"], sections["end_to_end"]["baseline"]
    lines += [
        "",
        "## End to end over HTTP (POST /api/v1/predict, real Test JPEGs and a 3000x4000 JPEG)",
        "",
        "| concurrency | image | ours req/s | ours p50 ms | ours p99 ms | ours errors | baseline req/s | "
        "baseline p50 ms | baseline errors | req/s ratio | p50 ratio |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for mine, theirs in zip(ours["rows"], base["rows"]):
        lines.append(
            f"| {mine['concurrency']} | {mine['image']} | {mine['rps']:.0f} | {mine['p50_ms']:.1f} | "
            f"{mine['p99_ms']:.1f} | {mine['errors']} | {theirs['rps']:.1f} | {theirs['p50_ms']:.1f} | "
            f"{theirs['errors']} | {mine['rps'] / theirs['rps']:.1f}x | "
            f"{theirs['p50_ms'] / mine['p50_ms']:.1f}x |"
        )
    mem_ours, mem_base = sections["memory"]["ours"], sections["memory"]["baseline"]
    lines += [
        "",
        "## Memory and cold start",
        "",
        "| | ours | baseline | ratio |",
        "|---|---|---|---|",
        f"| one worker's RSS after warm-up | {mem_ours['warm_mb']:.0f} MB | {mem_base['warm_mb']:.0f} MB | "
        f"{mem_base['warm_mb'] / mem_ours['warm_mb']:.1f}x smaller |",
        f"| RSS after {mem_ours['requests']:,} requests (ours) / {mem_base['requests']} (baseline) | "
        f"{mem_ours['after_mb']:.0f} MB | {mem_base['after_mb']:.0f} MB | |",
        f"| cold start to /readyz 200 | {ours['cold_start_s']:.2f} s | {base['cold_start_s']:.2f} s | "
        f"{base['cold_start_s'] / ours['cold_start_s']:.1f}x faster |",
    ]
    lines += render_hostile(sections["hostile"])
    lines += ["", pages.render(sections["pages"])]
    train = sections["training"]
    lines += ["", "## Training (batch 32, 2 CPU cores)", ""]
    if train:
        lines += [
            "| stage | images/s |",
            "|---|---|",
            "| input pipeline, first pass (decode + resize via the shared preprocessing) | "
            f"{train['decode_img_s']:.0f} |",
            f"| input pipeline, cached pass (shuffle + augmentation) | {train['augment_img_s']:.0f} |",
            f"| training step on {train['crop']}-px crops (forward + backward + AdamW) | "
            f"{train['train_step_img_s']:.0f} |",
        ]
    else:
        lines.append("Skipped: no prepared data (run `python -m data_prep all`).")
    lines += [
        "",
        f"Command: `python -m bench --requests {args.requests} --memory-requests {args.memory_requests}`",
        "",
    ]
    return "\n".join(lines)


def render_hostile(figures: dict) -> list[str]:
    """The Markdown section on hostile uploads and slow clients."""
    slow = figures["slow"]
    lines = [
        "",
        "## Hostile uploads and slow clients (bench/hostile.py)",
        "",
        "Rise of one worker's peak resident memory (VmHWM) over its resting RSS, per upload:",
        "",
        "| upload | bytes | status | peak rise MB |",
        "|---|---|---|---|",
    ]
    for name, (status, rise) in figures["rises"].items():
        lines.append(f"| {name} | {figures['sizes'][name]:,} | {status} | {rise:.0f} |")
    lines += [
        "",
        f"The worker's RSS afterwards: {figures['worker_after_mb']:.0f} MB. Four of the largest at once on "
        f"two workers: the whole server peaked at {figures['four_at_once_mb']:.0f} MB (PSS: shared pages "
        "counted once, as a container limit counts them).",
        f"{hostile.MANY_UPLOADS} uploads of 11 MB arriving at once (a MB every quarter second each): the "
        f"whole server peaked at {figures['many_uploads_mb']:.0f} MB; answers "
        f"{figures['many_uploads_statuses']} (503: told to retry, the worker's budget of upload bytes being "
        "received was spent; 415: the bytes were no image).",
        "",
        f"Beside 16 slow clients (8 trickling headers, 8 bodies, a byte a second), {slow.load.requests} "
        f"predictions at concurrency 4: {slow.within_1s:.1%} within 1 s, p50 {slow.load.percentile(50):.0f} "
        f"ms, p99 {slow.load.percentile(99):.0f} ms, {slow.load.errors} errors. A client that stalls in its "
        f"headers was cut off after {slow.header_stall_s:.1f} s, one that stalls in its body answered 408 "
        f"after {slow.body_stall_s:.1f} s.",
    ]
    return lines


def phone_photo(jpeg: bytes) -> bytes:
    """A 3000x4000 JPEG with photo-like detail, made from a real Test image (about 12 megapixels)."""
    image = Image.open(io.BytesIO(jpeg)).convert("RGB").resize((3000, 4000), Image.Resampling.BICUBIC)
    grain = np.random.default_rng(0).normal(0, 6, (4000, 3000, 3))
    pixels = np.clip(np.asarray(image, dtype=np.float32) + grain, 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=88)
    return buffer.getvalue()


def _machine() -> str:
    cpu = platform.processor() or "cpu"
    try:
        model_line = subprocess.run(
            ["grep", "-m1", "model name", "/proc/cpuinfo"], capture_output=True, text=True
        ).stdout
        cpu = model_line.split(":", 1)[1].strip() or cpu
    except (OSError, IndexError):
        pass
    return f"{os.cpu_count()} cores ({cpu}), Python {platform.python_version()}"


if __name__ == "__main__":
    sys.exit(main())
