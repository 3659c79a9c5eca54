"""packaging/build-deb.sh: one switch for the CUDA flavour, portable and with a wheel cache of its own."""

from __future__ import annotations

import os
import subprocess

from tests.conftest import REPO


def dry_run(*args: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key not in {"CMAKE_ARGS", "PIP_CACHE_DIR"}}
    result = subprocess.run([REPO / "packaging/build-deb.sh", *args, "--dry-run"], capture_output=True, text=True,
                            env={**env, "HOME": "/home/builder"}, check=True)
    return dict(line.split("=", 1) for line in result.stdout.splitlines())


def test_cuda_flavour_is_portable_and_keeps_its_own_wheel_cache():
    cuda, cpu = dry_run("--cuda"), dry_run()
    assert "-DGGML_CUDA=on" in cuda["CMAKE_ARGS"].split()
    assert "-DGGML_NATIVE=OFF" in cuda["CMAKE_ARGS"].split()  # not tuned to the build machine's CPU
    assert "-DGGML_RPC=ON" in cuda["CMAKE_ARGS"].split()  # a GPU host can lend itself (hoshikage rpc-server)
    assert cuda["PIP_CACHE_DIR"] != cpu["PIP_CACHE_DIR"]  # the CPU wheel in pip's cache is never reused
    assert cuda["output"] == "dist/cuda" and cpu["output"] == "dist"
    assert "GGML_CUDA" not in cpu["CMAKE_ARGS"]


def test_unknown_switch_is_refused():
    result = subprocess.run([REPO / "packaging/build-deb.sh", "--gpu"], capture_output=True, text=True)
    assert result.returncode == 2 and "usage" in result.stderr
