"""Loopback servers and HTTP clients shared by the benchmark and the tests (127.0.0.1 only)."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np

from model import config


def free_port() -> int:
    """An unused TCP port on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def gunicorn_server(
    model_dir: Path,
    workers: int = 1,
    extra_env: dict | None = None,
    timeout: float = 60,
    app: str | None = None,
):
    """Start gunicorn with the project's configuration on a free loopback port; yield (URL, process).

    app replaces the configured WSGI app (the benchmark's baseline runs this way).
    """
    port = free_port()
    env = {
        **os.environ,
        "PORT": str(port),
        "MODEL_DIR": str(model_dir),
        "WEB_CONCURRENCY": str(workers),
        **(extra_env or {}),
    }
    command = [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "--bind", f"127.0.0.1:{port}"]
    command += [app] if app else []
    # The server's log goes to a file: an undrained pipe fills after ~64 KB of access log, and
    # then every request thread blocks inside the logger and the server deadlocks.
    with tempfile.TemporaryFile("w+") as log:
        # Its own process group, so that workers never outlive a test even if the master is killed.
        process = subprocess.Popen(
            command,
            cwd=config.PROJECT_ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        process.log = log
        try:
            wait_ready(f"http://127.0.0.1:{port}", process, timeout)
            yield f"http://127.0.0.1:{port}", process
        finally:
            stop(process)


def gunicorn_start_failure(
    model_dir: Path, timeout: float = 60, extra_env: dict | None = None
) -> subprocess.CompletedProcess:
    """Start gunicorn on model_dir expecting it to refuse; the finished process, with its output."""
    env = {**os.environ, "PORT": "0", "MODEL_DIR": str(model_dir), "WEB_CONCURRENCY": "1"}
    env.update(extra_env or {})
    return subprocess.run(
        [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "--bind", "127.0.0.1:0"],
        cwd=config.PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def stop(process: subprocess.Popen, grace: float = 20) -> None:
    """Stop a server gracefully (SIGTERM), and its whole process group if it does not stop in time."""
    process.terminate()
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def server_log(process: subprocess.Popen) -> str:
    """What a server started by gunicorn_server has logged so far."""
    process.log.flush()
    process.log.seek(0)
    return process.log.read()


def wait_ready(base: str, process: subprocess.Popen | None = None, timeout: float = 60) -> float:
    """Poll /readyz until it answers 200; return the seconds it took."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if process is not None and process.poll() is not None:
            log = server_log(process)[-2000:] if hasattr(process, "log") else ""
            raise RuntimeError(f"server exited with {process.returncode}: {log}")
        try:
            with urllib.request.urlopen(f"{base}/readyz", timeout=2) as response:
                if response.status == 200:
                    return time.monotonic() - started
        except (OSError, urllib.error.HTTPError):
            time.sleep(0.05)
    raise TimeoutError(f"{base}/readyz did not answer 200 within {timeout}s")


def multipart(
    field: str, filename: str, content: bytes, content_type: str = "image/jpeg"
) -> tuple[bytes, str]:
    """Encode one file as a multipart/form-data body; return (body, content-type header)."""
    boundary = uuid.uuid4().hex
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="{filename}"\r\n'
            f"Content-Type: {content_type}\r\n\r\n"
        ).encode()
        + content
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, f"multipart/form-data; boundary={boundary}"


def post_image(base: str, content: bytes, filename: str = "photo.jpg", query: str = "") -> tuple[int, dict]:
    """POST an image to /api/v1/predict; return (status, JSON body)."""
    body, content_type = multipart("image", filename, content)
    request = urllib.request.Request(
        f"{base}/api/v1/predict{query}", data=body, method="POST", headers={"Content-Type": content_type}
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


MAX_LOAD_SECONDS = 300.0  # a safety bound on every load run, whatever its request count


@dataclass
class LoadResult:
    """What a bounded load run measured."""

    seconds: float
    latencies_ms: list[float] = field(default_factory=list)
    statuses: Counter = field(default_factory=Counter)
    wrong: int = 0  # answered 200 but with a different result than expected

    @property
    def requests(self) -> int:
        return len(self.latencies_ms)

    @property
    def errors(self) -> int:
        """Transport failures, 5xx answers and wrong answers."""
        failed = sum(n for status, n in self.statuses.items() if status == 0 or status >= 500)
        return failed + self.wrong

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.latencies_ms, q)) if self.latencies_ms else float("nan")


def run_load(
    base: str,
    uploads: list[tuple[bytes, str]],
    concurrency: int,
    total: int | None = None,
    seconds: float | None = None,
    check: Callable[[int, int, dict], bool] | None = None,
    path: str = "/api/v1/predict",
) -> LoadResult:
    """POST uploads round-robin from `concurrency` keep-alive clients until total or seconds is reached.

    Bounded by construction: it stops after `total` requests or `seconds`, whichever comes first,
    and never runs past MAX_LOAD_SECONDS. check(index, status, body) says whether an answer is right.
    """
    if total is None and seconds is None:
        raise ValueError("a load run needs a bound: total or seconds")
    host, port = urlsplit(base).hostname, urlsplit(base).port
    bodies = [multipart("image", name, content) for content, name in uploads]
    counter, lock = iter(range(total if total is not None else 10**9)), threading.Lock()
    result = LoadResult(seconds=0.0)
    deadline = time.monotonic() + min(seconds if seconds is not None else MAX_LOAD_SECONDS, MAX_LOAD_SECONDS)

    def client() -> None:
        connection = http.client.HTTPConnection(host, port, timeout=30)
        while time.monotonic() < deadline:
            with lock:
                index = next(counter, None)
            if index is None:
                break
            body, content_type = bodies[index % len(bodies)]
            started = time.perf_counter()
            try:
                connection.request("POST", path, body=body, headers={"Content-Type": content_type})
                response = connection.getresponse()
                payload, status = response.read(), response.status
            except (OSError, http.client.HTTPException):
                connection.close()
                connection = http.client.HTTPConnection(host, port, timeout=30)
                payload, status = b"", 0
            elapsed = (time.perf_counter() - started) * 1000
            right = True
            # A classification (200) or an image-gate refusal (422) is an answer that can be wrong.
            if check is not None and status in (200, 422):
                right = check(index % len(bodies), status, json.loads(payload))
            with lock:
                result.latencies_ms.append(elapsed)
                result.statuses[status] += 1
                result.wrong += 0 if right else 1
        connection.close()

    threads = [threading.Thread(target=client) for _ in range(concurrency)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    result.seconds = time.monotonic() - started
    return result


def worker_pids(master_pid: int) -> list[int]:
    """PIDs of a gunicorn master's workers."""
    import psutil

    return [child.pid for child in psutil.Process(master_pid).children()]


def rss_mb(pid: int) -> float:
    """Resident memory of one process in MB."""
    import psutil

    return psutil.Process(pid).memory_info().rss / 2**20


def reset_peak_rss(pid: int) -> None:
    """Reset a process's peak resident memory (VmHWM) to its current size (Linux, same user)."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def peak_rss_mb(pid: int) -> float:
    """A process's peak resident memory in MB since start or the last reset_peak_rss (VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmHWM for process {pid}")


def server_pss_mb(master_pid: int) -> float:
    """Memory of a whole server (master + workers) in MB, each shared page counted once (PSS).

    What a container's memory limit sees; the sum of RSS would count the pages that the workers
    share with the master (libraries, the model) once per process.
    """
    import psutil

    master = psutil.Process(master_pid)
    processes = [master, *master.children(recursive=True)]
    total = 0
    for process in processes:
        try:
            total += process.memory_full_info().pss
        except psutil.NoSuchProcess:
            pass
    return total / 2**20


@dataclass
class SlowClients:
    """Clients that send a byte now and then, reconnecting when cut off, until stopped or `seconds`.

    kind "body": full headers, then the body a byte at a time; "headers": the headers a byte at a
    time. cut_after holds how long each connection lived before the server closed it.
    """

    base: str
    count: int
    interval: float = 1.0
    seconds: float = 60.0
    kind: str = "body"
    cut_after: list[float] = field(default_factory=list)

    def __enter__(self) -> SlowClients:
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(self.count)]
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=self.interval + 5)

    def _run(self) -> None:
        deadline = time.monotonic() + self.seconds
        while not self._stop.is_set() and time.monotonic() < deadline:
            self._trickle_one(deadline)

    def _trickle_one(self, deadline: float) -> None:
        host, port = urlsplit(self.base).hostname, urlsplit(self.base).port
        if self.kind == "body":
            body, content_type = multipart("image", "slow.jpg", b"\xff" * 100_000)
            head = (
                f"POST /api/v1/predict HTTP/1.1\r\nHost: {host}\r\nContent-Type: {content_type}\r\n"
                f"Content-Length: {len(body)}\r\n\r\n"
            ).encode()
            prefix, dribble = head + body[:200], body[200:]
        else:
            prefix, dribble = b"", b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Padding: " + b"a" * 4000
        started = time.monotonic()
        try:
            with socket.create_connection((host, port), timeout=self.interval + 30) as sock:
                sock.sendall(prefix)
                for byte in dribble:
                    if self._stop.wait(self.interval) or time.monotonic() > deadline:
                        return
                    sock.sendall(bytes([byte]))
        except OSError:
            self.cut_after.append(time.monotonic() - started)


def stalled_connection_lifetime(base: str, kind: str, limit: float = 60.0) -> tuple[float, bytes]:
    """Send part of a request (its headers, or its body) and stop; return the seconds until the
    server answered or closed the connection, and the start of its answer."""
    host, port = urlsplit(base).hostname, urlsplit(base).port
    if kind == "headers":
        request = b"POST /api/v1/predict HT"
    else:
        body, content_type = multipart("image", "stall.jpg", b"\xff" * 10_000)
        request = (
            f"POST /api/v1/predict HTTP/1.1\r\nHost: {host}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode() + body[:100]
    with socket.create_connection((host, port), timeout=limit) as sock:
        sock.sendall(request)
        started = time.monotonic()
        try:
            answer = sock.recv(65536)
        except OSError:
            answer = b""
        return time.monotonic() - started, answer
