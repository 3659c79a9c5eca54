"""The container image (packaging/docker) built and run with podman and podman-compose, offline.

This machine reaches no image registry: the base image is a debootstrapped Debian 12 root imported
with `podman import`, builds use --pull=never, and the Python packages come as wheels built here
(pip's cache keeps llama-cpp-python's). What rootful podman needs on this kind of machine is set up
here, never in the image: chroot isolation for builds, runc, and no default ulimits.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time

import pytest

from tests.conftest import REPO, free_tcp_port

needs = [tool for tool in ("podman", "podman-compose", "debootstrap", "runc") if shutil.which(tool) is None]
if os.geteuid() != 0:
    needs.append("root")
pytestmark = pytest.mark.skipif(bool(needs) and os.environ.get("CI") != "true",
                                reason=f"needs {', '.join(needs)}")

BASE = "localhost/hoshikage-test-base:bookworm"
IMAGE = "localhost/hoshikage:latest"  # the tag compose.yaml names
PROJECT = "hoshikage-test"
COMPOSE = REPO / "packaging" / "docker" / "compose.yaml"


@pytest.fixture(scope="module")
def podman_env(tmp_path_factory) -> dict[str, str]:
    conf = tmp_path_factory.mktemp("podman") / "containers.conf"
    conf.write_text('[containers]\ndefault_ulimits = []\n\n[engine]\nruntime = "runc"\n')
    return {**os.environ, "CONTAINERS_CONF": str(conf), "BUILDAH_ISOLATION": "chroot"}


def podman(env, *args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
    result = subprocess.run(["podman", *args], env=env, capture_output=True, text=True, timeout=timeout)
    assert not check or result.returncode == 0, (f"podman {' '.join(args)}:\n"
                                                 f"{result.stdout[-3000:]}{result.stderr[-3000:]}")
    return result


@pytest.fixture(scope="module")
def base_image(podman_env) -> str:
    """Debian 12 minbase, as slim as the official slim image: no apt lists, no package cache."""
    if podman(podman_env, "image", "exists", BASE, check=False).returncode == 0:
        return BASE
    from tests.system.container import CACHE, apt_mirror

    root = CACHE / "image-base-bookworm"
    shutil.rmtree(root, ignore_errors=True)
    subprocess.run(["debootstrap", "--variant=minbase", "bookworm", str(root), apt_mirror()], check=True,
                   stdout=subprocess.DEVNULL)
    for leftover in [*(root / "var/cache/apt/archives").glob("*.deb"), *(root / "var/lib/apt/lists").glob("*_*")]:
        leftover.unlink()
    with subprocess.Popen(["tar", "-C", str(root), "--numeric-owner", "-c", "."], stdout=subprocess.PIPE) as tar:
        subprocess.run(["podman", "import", "-", BASE], stdin=tar.stdout, env=podman_env, check=True,
                       capture_output=True)
        tar.stdout.close()
    assert tar.returncode == 0
    shutil.rmtree(root)
    return BASE


@pytest.fixture(scope="module")
def image(podman_env, base_image, tmp_path_factory) -> str:
    """The image from packaging/docker/Dockerfile, with this tree's package and pinned wheels."""
    wheels = tmp_path_factory.mktemp("image-wheels")
    # llama-cpp-python: the portable wheel the virtualenv and the .deb use (packaging/llama-wheel.sh).
    portable = subprocess.run(["packaging/llama-wheel.sh"], check=True, cwd=REPO, capture_output=True,
                              text=True).stdout.strip()
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--wheel-dir", str(wheels), "--find-links",
                    portable, "--constraint", str(REPO / "packaging" / "requirements-daemon.txt"), str(REPO)],
                   check=True, cwd=REPO)
    started = time.monotonic()
    podman(podman_env, "build", "--pull=never", "--format", "docker", "--isolation", "chroot",
           "-f", "packaging/docker/Dockerfile", "--build-arg", f"BASE={base_image}",
           "--build-arg", "PIP_NO_INDEX=1", "--build-arg", "PIP_FIND_LINKS=/wheels",
           "--volume", f"{wheels}:/wheels:ro", "-t", IMAGE, str(REPO), timeout=1500)
    podman(podman_env, "image", "prune", "--force")  # the build stage, compilers and all, is not kept
    size = int(podman(podman_env, "image", "inspect", "--format", "{{.Size}}", IMAGE).stdout)
    print(f"\nimage built in {time.monotonic() - started:.0f} s: {size / 2**20:.0f} MiB "
          f"(base {int(podman(podman_env, 'image', 'inspect', '--format', '{{.Size}}', BASE).stdout) / 2**20:.0f} MiB)")
    return IMAGE


def test_the_image_has_no_compiler_runs_as_a_user_and_checks_its_health(podman_env, image):
    inside = podman(podman_env, "run", "--rm", "--entrypoint", "sh", image, "-c",
                    "id -un; for tool in gcc cc g++ c++ cmake make; do command -v $tool; done; true")
    assert inside.stdout.split() == ["hoshikage"], inside.stdout
    healthcheck = podman(podman_env, "image", "inspect", "--format", "{{.Config.Healthcheck.Test}}", image).stdout
    assert "/health" in healthcheck


def compose(env, *args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
    result = subprocess.run(["podman-compose", "-p", PROJECT, "-f", str(COMPOSE), *args], env=env,
                            capture_output=True, text=True, timeout=timeout)
    assert not check or result.returncode == 0, (f"podman-compose {' '.join(args)}:\n"
                                                 f"{result.stdout[-3000:]}{result.stderr[-3000:]}")
    return result


def wait_healthy(base_url: str, timeout: float = 120) -> None:
    """Poll /health from outside the container (nothing to subscribe to), with a deadline."""
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base_url}/health", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    raise AssertionError(f"{base_url} did not become healthy in {timeout} s")


def test_compose_up_register_answer_restart_stop_and_down_keeps_the_volume(podman_env, image, gemma_path):
    import openai

    port = free_tcp_port()
    env = {**podman_env, "HOSHIKAGE_PORT": f"127.0.0.1:{port}", "HOSHIKAGE_MODELS": str(gemma_path.parent),
           "IDLE_TIMEOUT_SECONDS": "120"}
    volume = f"{PROJECT}_state"
    container = f"{PROJECT}_hoshikage_1"
    base_url = f"http://127.0.0.1:{port}"
    compose(env, "down", "--volumes", check=False)
    try:
        compose(env, "up", "-d")
        wait_healthy(base_url)
        added = compose(env, "exec", "-T", "hoshikage", "hoshikage", "add", f"/models/{gemma_path.name}", "gemma",
                        "--chat-format", "gemma", "--ctx", "1024")
        assert "added gemma" in added.stdout + added.stderr
        with openai.OpenAI(base_url=f"{base_url}/v1", api_key="unused", max_retries=0) as client:
            answer = client.chat.completions.create(model="gemma", messages=[{"role": "user", "content": "Hi"}],
                                                    max_tokens=4, extra_body={"ignore_eos": True})
        assert answer.usage.completion_tokens == 4
        logs = compose(env, "logs", "hoshikage")
        assert "POST /v1/chat/completions 200" in logs.stdout + logs.stderr  # the log is the container's output

        # podman's own health check runs the image's HEALTHCHECK.
        assert podman(env, "healthcheck", "run", container, check=False).returncode == 0

        # docker stop: tini hands SIGTERM on, the daemon exits cleanly well within the 10 s grace.
        started = time.monotonic()
        podman(env, "stop", "-t", "10", container)
        assert time.monotonic() - started < 10
        assert podman(env, "inspect", "--format", "{{.State.ExitCode}}", container).stdout.strip() == "0"

        podman(env, "start", container)
        wait_healthy(base_url)
        with openai.OpenAI(base_url=f"{base_url}/v1", api_key="unused", max_retries=0) as client:
            assert [model.id for model in client.models.list().data] == ["gemma"]  # the registry survived
            assert client.chat.completions.create(model="gemma", messages=[{"role": "user", "content": "Hi"}],
                                                  max_tokens=2).usage.completion_tokens >= 1

        compose(env, "down")
        assert podman(env, "volume", "exists", volume, check=False).returncode == 0, "down kept the state volume"
        compose(env, "up", "-d")
        wait_healthy(base_url)
        with openai.OpenAI(base_url=f"{base_url}/v1", api_key="unused", max_retries=0) as client:
            assert [model.id for model in client.models.list().data] == ["gemma"]
    finally:
        compose(env, "down", "--volumes", check=False)


def test_the_gpu_variant_is_well_formed(podman_env):
    """No GPU here: the CUDA variant is checked for form only (podman-compose merges and plans it), not run."""
    import json

    planned = subprocess.run(["podman-compose", "--dry-run", "-p", PROJECT, "-f", str(COMPOSE), "-f",
                              str(COMPOSE.with_name("compose.gpu.yaml")), "build"], env=podman_env,
                             capture_output=True, text=True, timeout=60)
    assert planned.returncode == 0, planned.stderr
    merged = json.loads(planned.stdout.split(" ** merged:\n", 1)[1].split("\n}\n", 1)[0] + "\n}")
    service = merged["services"]["hoshikage"]
    device = service["deploy"]["resources"]["reservations"]["devices"][0]
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"] and device["count"] == "all"
    assert "-f ../../packaging/docker/Dockerfile.cuda" in planned.stdout
    stages = (REPO / "packaging" / "docker" / "Dockerfile.cuda").read_text().split("\nFROM ")
    assert len(stages) == 3 and "AS build" in stages[1] and "GGML_CUDA=on" in stages[1]
    assert not any(tool in stages[2] for tool in ("gcc", "g++", "cmake", "python3-dev")), "no compiler at run time"
