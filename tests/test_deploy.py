"""The Dockerfile and heroku.yml: lint clean, and the image's files alone serve the model."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.loopback import free_port, post_image, wait_ready
from model import config

ROOT = config.PROJECT_ROOT
DOCKERFILE = (ROOT / "Dockerfile").read_text()


def _copies() -> list[tuple[list[str], str]]:
    """(sources, destination) of each COPY instruction."""
    out = []
    for line in re.findall(r"^COPY (.+)$", DOCKERFILE, flags=re.MULTILINE):
        *sources, destination = shlex.split(line)
        out.append((sources, destination))
    return out


def test_hadolint_finds_nothing():
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    result = subprocess.run([hadolint, str(ROOT / "Dockerfile")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_image_has_no_tensorflow_and_runs_as_non_root():
    lines = (ROOT / "requirements-serve.txt").read_text().lower().splitlines()
    packages = {re.split(r"[=<>\[ ]", line)[0] for line in lines if line and not line.startswith("#")}
    assert "ai-edge-litert" in packages
    assert not packages & {"tensorflow", "tensorflow-cpu", "keras", "tf-keras", "torch"}
    assert "requirements-serve.txt" in DOCKERFILE
    assert not re.search(r"requirements(-dev)?\.txt", DOCKERFILE)  # never the training stack
    assert re.search(r"^USER \d+$", DOCKERFILE, flags=re.MULTILINE)
    assert re.search(r'^CMD \["gunicorn", "-c", "gunicorn.conf.py"\]$', DOCKERFILE, flags=re.MULTILINE)


def test_image_installs_every_package_at_a_pinned_version():
    def pins(name: str) -> dict[str, str]:
        lines = (ROOT / name).read_text().splitlines()
        pairs = [line.split("==") for line in lines if "==" in line and not line.startswith("#")]
        return {re.sub(r"[-_.]+", "-", package).lower(): version.strip() for package, version in pairs}

    direct, locked = pins("requirements-serve.txt"), pins("constraints-serve.txt")
    assert direct.items() <= locked.items()  # the lock agrees with the direct pins
    assert "-c constraints-serve.txt" in DOCKERFILE


def test_heroku_builds_the_dockerfile_and_runs_the_same_command():
    heroku = (ROOT / "heroku.yml").read_text()
    assert re.search(r"web:\s*Dockerfile", heroku)
    assert "gunicorn -c gunicorn.conf.py" in heroku


def test_every_copied_file_exists():
    for sources, _ in _copies():
        for source in sources:
            assert (ROOT / source).exists(), f"Dockerfile copies {source}, which does not exist"


@pytest.mark.slow
def test_image_layout_serves_the_model_with_the_docker_command(tmp_path):
    """Lay out /app as the Dockerfile would, then run its CMD there (no Docker engine here)."""
    app_dir = tmp_path / "app"
    app_dir.mkdir()
    for sources, destination in _copies():
        target = app_dir / destination.lstrip("./")
        for source in sources:
            path = ROOT / source
            if path.is_dir():
                shutil.copytree(path, target if len(sources) == 1 else target / path.name, dirs_exist_ok=True)
            else:
                dest = target if not destination.endswith("/") and destination != "." else target / path.name
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(path, dest)
    port = free_port()
    env = {
        **os.environ,
        "PORT": str(port),
        "MODEL_DIR": str(app_dir / "models" / "skin_cnn"),
        "WEB_CONCURRENCY": "1",
    }
    command = [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py"]  # the CMD, from the venv
    healthcheck = json.loads(re.search(r"^\s+CMD (\[.+\])$", DOCKERFILE, flags=re.MULTILINE).group(1))
    probe = [sys.executable, "-X", "importtime", *healthcheck[1:]]  # HEALTHCHECK's CMD, from the venv
    process = subprocess.Popen(
        command, cwd=app_dir, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        started = time.monotonic()
        wait_ready(f"http://127.0.0.1:{port}", process, timeout=60)
        assert time.monotonic() - started < 30
        image = next((ROOT / "tests").glob("*.py")).read_bytes()  # not an image: a clean 415
        status, body = post_image(f"http://127.0.0.1:{port}", image, "x.py")
        assert status == 415 and "not an image" in body["error"]["message"]
        checked = subprocess.run(probe, cwd=app_dir, env=env, capture_output=True, text=True, timeout=10)
        assert checked.returncode == 0
        assert "flask" not in checked.stderr  # the probe loads nothing of the app every 30 s
    finally:
        process.terminate()
        output = process.communicate(timeout=20)[0]
    # The app that answered was the copy in the image layout, not the repository's.
    assert (
        str(app_dir)
        in subprocess.run(
            [sys.executable, "-c", "import webapp; print(webapp.__file__)"],
            cwd=app_dir,
            capture_output=True,
            text=True,
            env=env,
        ).stdout
    )
    assert "Traceback" not in output
    assert subprocess.run(probe, cwd=app_dir, env=env, capture_output=True, timeout=10).returncode == 1
