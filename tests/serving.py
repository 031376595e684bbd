"""Helpers to run real gunicorn on loopback and talk to it over HTTP (tests and benchmarks)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from contextlib import contextmanager
from pathlib import Path

from model import config


def free_port() -> int:
    """An unused TCP port on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def gunicorn_server(model_dir: Path, workers: int = 1, extra_env: dict | None = None, timeout: float = 60):
    """Start gunicorn with the project's configuration on a free loopback port; yield its base URL."""
    port = free_port()
    env = {**os.environ, "PORT": str(port), "MODEL_DIR": str(model_dir), "WEB_CONCURRENCY": str(workers),
           **(extra_env or {})}
    command = [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "--bind", f"127.0.0.1:{port}"]
    process = subprocess.Popen(command, cwd=config.PROJECT_ROOT, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base, process, timeout)
        yield base, process
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()


def wait_ready(base: str, process: subprocess.Popen | None = None, timeout: float = 60) -> float:
    """Poll /readyz until it answers 200; return the seconds it took."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}: {process.stdout.read()[-2000:]}")
        try:
            with urllib.request.urlopen(f"{base}/readyz", timeout=2) as response:
                if response.status == 200:
                    return time.monotonic() - started
        except (OSError, urllib.error.HTTPError):
            time.sleep(0.05)
    raise TimeoutError(f"{base}/readyz did not answer 200 within {timeout}s")


def multipart(field: str, filename: str, content: bytes, content_type: str = "image/jpeg") -> tuple[bytes, str]:
    """Encode one file as a multipart/form-data body; return (body, content-type header)."""
    boundary = uuid.uuid4().hex
    body = (
        f"--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"{filename}\"\r\n"
        f"Content-Type: {content_type}\r\n\r\n"
    ).encode() + content + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def post_image(base: str, content: bytes, filename: str = "photo.jpg", query: str = "") -> tuple[int, dict]:
    """POST an image to /api/v1/predict; return (status, JSON body)."""
    body, content_type = multipart("image", filename, content)
    request = urllib.request.Request(f"{base}/api/v1/predict{query}", data=body, method="POST",
                                     headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")
