"""Page weight and first render of the web pages: `python -m bench.pages` (also part of `python -m bench`).

Weight: the bytes a browser is sent for a page (HTML with its inline pictures, CSS, JS, icon), with
gzip/brotli accepted, over loopback from gunicorn. First render: Chromium's first-contentful-paint
time from navigation start, on a fresh profile each time (nothing cached), median of several loads.
Needs the committed model, Debian's chromium and Playwright; a real Test JPEG for the result page.
"""

from __future__ import annotations

import gzip
import http.client
import re
import shutil
import statistics
import sys
from pathlib import Path
from urllib.parse import urlsplit

from bench.loopback import gunicorn_server, multipart
from model import config

BEFORE_KB = {"/": 327, "result": 376}  # measured in a browser before issue 20
FIRST_RENDER_BUDGET_MS = 300
ASSET = re.compile(r'(?:href|src)="(/static/[^"]+)"')


def measure(photo: Path, loads: int = 7) -> dict:
    """Weights (KB) and first-render times (ms) of /, /about and a result page."""
    with gunicorn_server(config.MODEL_DIR, workers=1) as (base, _):
        weights = {
            "/": page_weight(base, "GET", "/"),
            "/about": page_weight(base, "GET", "/about"),
            "result": page_weight(base, "POST", "/", photo.read_bytes()),
        }
        renders = first_render(base, photo, loads)
    return {"weights_kb": weights, "first_render_ms": renders}


def page_weight(base: str, method: str, path: str, photo: bytes | None = None) -> float:
    """KB sent for one page and everything it links, with compression accepted."""
    host, port = urlsplit(base).hostname, urlsplit(base).port
    connection = http.client.HTTPConnection(host, port, timeout=30)
    headers = {"Accept-Encoding": "gzip, br", "Accept": "text/html"}
    body = None
    if photo is not None:
        body, content_type = multipart("image", "photo.jpg", photo)
        headers["Content-Type"] = content_type
    connection.request(method, path, body=body, headers=headers)
    response = connection.getresponse()
    sent = response.read()
    html = _decode(sent, response.getheader("Content-Encoding")).decode()
    total = len(sent)
    for url in ASSET.findall(html):
        connection.request("GET", url, headers={"Accept-Encoding": "gzip, br"})
        total += len(connection.getresponse().read())
    connection.close()
    return total / 1024


def _decode(data: bytes, encoding: str | None) -> bytes:
    if encoding == "br":
        import brotli

        return brotli.decompress(data)
    return gzip.decompress(data) if encoding == "gzip" else data


def first_render(base: str, photo: Path, loads: int) -> dict:
    """Median first-contentful-paint (ms) of /, /about and the no-JavaScript result page."""
    from playwright.sync_api import sync_playwright

    paint = "performance.getEntriesByName('first-contentful-paint')[0]?.startTime ?? null"
    # bypass_csp: Playwright polls `paint` through eval, which the site's CSP rightly forbids.
    options = {"viewport": {"width": 390, "height": 844}, "bypass_csp": True}
    times: dict[str, list[float]] = {"/": [], "/about": [], "result": []}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=shutil.which("chromium"),
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        for _ in range(loads):
            for path in ("/", "/about"):
                context = browser.new_context(**options)
                page = context.new_page()
                page.goto(base + path, wait_until="load")
                times[path].append(page.wait_for_function(paint).json_value())
                context.close()
            # The result page as a plain form post renders it: the site's script blocked, so the
            # browser navigates to the server-rendered page (timed from the post to its first paint).
            context = browser.new_context(**options)
            context.route("**/static/app.js*", lambda route: route.abort())
            page = context.new_page()
            page.goto(base + "/")
            page.set_input_files("#image", str(photo))
            with page.expect_navigation(wait_until="load"):
                page.click("#submit")
            times["result"].append(page.wait_for_function(paint).json_value())
            context.close()
        browser.close()
    return {name: statistics.median(values) for name, values in times.items()}


def budgets(result: dict) -> list[tuple[str, str, str, bool]]:
    """(budget, measured, limit, holds): page weights at most half of before, first render of / fast."""
    weights, renders = result["weights_kb"], result["first_render_ms"]
    rows = [
        (
            f"weight of {name}",
            f"{weights[name]:.0f} KB",
            f"<= {before / 2:.0f} KB",
            weights[name] <= before / 2,
        )
        for name, before in BEFORE_KB.items()
    ]
    first = renders["/"]
    rows.append(
        (
            "first render of /",
            f"{first:.0f} ms",
            f"< {FIRST_RENDER_BUDGET_MS} ms",
            first < FIRST_RENDER_BUDGET_MS,
        )
    )
    return rows


def render(result: dict) -> str:
    """The Markdown section for docs/PERFORMANCE.md."""
    weights, renders = result["weights_kb"], result["first_render_ms"]
    lines = [
        "## Pages (loopback, Chromium, phone viewport)",
        "",
        "| page | sent, KB (gzip/brotli) | before, KB | first render, ms (median) |",
        "|---|---|---|---|",
    ]
    for name in ("/", "/about", "result"):
        before = BEFORE_KB.get(name)
        lines.append(f"| {name} | {weights[name]:.1f} | {before if before else ''} | {renders[name]:.0f} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    """Measure and print the pages section."""
    photos = sorted((config.DATA_DIR / "Test" / "melanoma").glob("*.jpg"))
    if not photos:
        print(f"error: no Test images under {config.DATA_DIR} (set ISIC_DATA_DIR)", file=sys.stderr)
        return 2
    result = measure(photos[0])
    print(render(result))
    for name, measured, limit, holds in budgets(result):
        print(f"{name}: {measured} (budget {limit}) {'holds' if holds else 'FAILS'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
