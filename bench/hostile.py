"""Hostile uploads for the resilience tests and the benchmark: images that cost the most to decode.

Each is a valid file under the 12 MB upload limit. WORST_CASES sit just under the decode budget
(config.MAX_DECODE_MB) with enough data to pass the missing-data check, so they are decoded;
BOMBS are the cases of issue 21, which must be refused before their pixels are decoded.
"""

from __future__ import annotations

import io
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
from PIL import Image


def _banded(width: int, height: int, mode: str, rows: int = 64) -> Image.Image:
    """Mid grey with a band of noise: compresses well, yet holds enough data to be decoded."""
    pixels = np.full((height, width, 3), 128, dtype=np.uint8)
    pixels[:rows] = np.random.default_rng(0).integers(0, 256, (rows, width, 3), dtype=np.uint8)
    image = Image.fromarray(pixels)
    if mode == "I;16":
        return Image.fromarray(np.asarray(image.convert("L"), dtype=np.uint16) * 257)
    if mode == "P":
        return image.convert("L").convert("P")  # a grey palette: no slow quantising of 49 MP
    return image.convert(mode)


def _encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


WORST_CASES: dict[str, Callable[[], bytes]] = {
    "PNG 8-bit grey 7000x7000": lambda: _encode(_banded(7000, 7000, "L"), "PNG"),
    "PNG palette 7000x7000": lambda: _encode(_banded(7000, 7000, "P"), "PNG"),
    "PNG RGB 4000x3000": lambda: _encode(_banded(4000, 3000, "RGB"), "PNG"),
    "PNG RGBA 2800x2100": lambda: _encode(_banded(2800, 2100, "RGBA"), "PNG"),
    "PNG 16-bit grey 4900x4900": lambda: _encode(_banded(4900, 4900, "I;16"), "PNG"),
    "JPEG progressive 4:2:0 4000x3000": lambda: _encode(
        _banded(4000, 3000, "RGB"), "JPEG", progressive=True, quality=90
    ),
    "JPEG baseline 7000x7000": lambda: _encode(_banded(7000, 7000, "RGB"), "JPEG", quality=90),
    "WebP 1700x1700": lambda: _encode(_banded(1700, 1700, "RGB"), "WEBP"),
    "TIFF RGB deflate 2400x2400": lambda: _encode(
        _banded(2400, 2400, "RGB"), "TIFF", compression="tiff_adobe_deflate"
    ),
    "GIF 7000x7000": lambda: _encode(_banded(7000, 7000, "P"), "GIF"),
}

# The four that raise a worker's peak memory most (docs/PERFORMANCE.md): sent at once.
FOUR_AT_ONCE = (
    "PNG 8-bit grey 7000x7000",
    "PNG palette 7000x7000",
    "PNG RGBA 2800x2100",
    "PNG 16-bit grey 4900x4900",
)

BOMBS: dict[str, Callable[[], bytes]] = {
    "PNG 16-bit 7000x7000, blank": lambda: _encode(Image.new("I;16", (7000, 7000)), "PNG"),
    "PNG 1-bit 7000x7000, blank": lambda: _encode(Image.new("1", (7000, 7000)), "PNG"),
    "TIFF float 5000x5000": lambda: _encode(
        _banded(5000, 5000, "F"), "TIFF", compression="tiff_adobe_deflate"
    ),
    "JPEG progressive 4:4:4 4000x3000": lambda: _encode(
        _banded(4000, 3000, "RGB"), "JPEG", progressive=True, quality=90, subsampling=0
    ),
    "PNG 7000x7000, truncated": lambda: _encode(_banded(7000, 7000, "L", rows=600), "PNG")[:60_000],
}


def build(cases: dict[str, Callable[[], bytes]]) -> dict[str, bytes]:
    """Encode every case."""
    return {name: make() for name, make in cases.items()}


# --- Measurements on a running server (used by the benchmark and tests/test_resilience.py) ---------
def peak_rise_per_upload(base: str, worker: int, uploads: dict[str, bytes]) -> dict[str, tuple[int, float]]:
    """POST each upload to a one-worker server; (status, rise of the worker's peak RSS in MB) each."""
    from bench.loopback import peak_rss_mb, post_image, reset_peak_rss, rss_mb

    rises = {}
    for name, data in uploads.items():
        resting = rss_mb(worker)
        reset_peak_rss(worker)
        status, _ = post_image(base, data, "upload.img")
        rises[name] = (status, peak_rss_mb(worker) - resting)
    return rises


@contextmanager
def sampled_peak_pss(master: int, every_s: float = 0.02):
    """Sample the whole server's memory (PSS, MB) in the background; yields a dict whose "mb" is the peak."""
    from bench.loopback import server_pss_mb

    peak, done = {"mb": server_pss_mb(master)}, threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak["mb"] = max(peak["mb"], server_pss_mb(master))
            time.sleep(every_s)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        yield peak
    finally:
        done.set()
        sampler.join()


def _run_together(threads: list[threading.Thread]) -> None:
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def concurrent_peak_pss(base: str, master: int, uploads: list[bytes], rounds: int = 2) -> float:
    """Peak memory of the whole server (PSS, MB) while the uploads are POSTed all at once, `rounds` times."""
    from bench.loopback import post_image

    with sampled_peak_pss(master) as peak:
        for _ in range(rounds):
            _run_together(
                [threading.Thread(target=post_image, args=(base, data, "x.img")) for data in uploads]
            )
    return peak["mb"]


@dataclass
class SlowClientFigures:
    """Normal predictions served beside slow clients, and how long stalled clients were kept."""

    load: object  # bench.loopback.LoadResult
    within_1s: float
    header_stall_s: float
    header_stall_answer: bytes
    body_stall_s: float
    body_stall_answer: bytes
    header_trickle_cut_s: list[float]


def slow_client_figures(base: str, uploads, slow: int = 16, seconds: float = 12) -> SlowClientFigures:
    """Predictions at concurrency 4 for `seconds` while `slow` clients trickle (half their headers,
    half their bodies, a byte a second), and one client stalls in its headers and one in its body."""
    from bench.loopback import SlowClients, run_load, stalled_connection_lifetime

    stalls = {}
    stall_threads = [
        threading.Thread(target=lambda k=kind: stalls.update({k: stalled_connection_lifetime(base, k)}))
        for kind in ("headers", "body")
    ]
    with (
        SlowClients(base, slow // 2, kind="body", seconds=seconds + 30),
        SlowClients(base, slow - slow // 2, kind="headers", seconds=seconds + 30) as headers,
    ):
        for thread in stall_threads:
            thread.start()
        time.sleep(2)  # every slow client is connected and trickling
        load = run_load(base, uploads, concurrency=4, seconds=seconds)
        for thread in stall_threads:
            thread.join()
    within = sum(1 for ms in load.latencies_ms if ms <= 1000) / max(load.requests, 1)
    return SlowClientFigures(
        load, within, *stalls["headers"], *stalls["body"], header_trickle_cut_s=list(headers.cut_after)
    )


# Many large uploads arriving together (the review of 2026-11-25): bodies just under the upload limit.
MANY_UPLOADS = 40
LARGE_UPLOAD_BYTES = 11 * 1024 * 1024


def many_uploads_peak_pss(
    base: str, master: int, clients: int = MANY_UPLOADS, size: int = LARGE_UPLOAD_BYTES
) -> tuple[float, Counter]:
    """Peak server memory (PSS, MB) while `clients` bodies of `size` bytes arrive at once, a MB a
    quarter second each; with the status each client got (0: none)."""
    host, port = base.removeprefix("http://").split(":")
    head = (
        'Content-Disposition: form-data; name="image"; filename="a.jpg"\r\nContent-Type: image/jpeg\r\n\r\n'
    )
    body_head, body_tail = f"--b\r\n{head}".encode(), b"\r\n--b--\r\n"
    length = len(body_head) + size + len(body_tail)
    statuses: Counter = Counter()
    counting = threading.Lock()  # the client threads share the Counter

    def upload() -> None:
        chunk = b"\xff" * 2**20
        try:
            with socket.create_connection((host, int(port)), timeout=30) as sock:
                sock.sendall(
                    f"POST /api/v1/predict HTTP/1.1\r\nHost: {host}\r\nContent-Length: {length}\r\n"
                    f"Content-Type: multipart/form-data; boundary=b\r\n\r\n".encode()
                    + body_head
                )
                for start in range(0, size, len(chunk)):
                    sock.sendall(chunk[: min(len(chunk), size - start)])
                    time.sleep(0.25)
                sock.sendall(body_tail)
                status = int(sock.recv(64).split(b" ")[1])
        except (OSError, IndexError, ValueError):
            status = 0  # cut off or refused before it had sent everything
        with counting:
            statuses[status] += 1

    with sampled_peak_pss(master, every_s=0.05) as peak:
        _run_together([threading.Thread(target=upload) for _ in range(clients)])
    return peak["mb"], statuses
