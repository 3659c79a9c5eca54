"""The RAM disk: generated units, and staging into a real tmpfs (root only)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from hoshikage.config import load_settings
from hoshikage.engine import ramdisk
from hoshikage.ramdisk_units import escape_path, render


@pytest.mark.parametrize("path", ["/mnt/temp/hoshikage", "/srv/ram disk/x-y", "/a/.hidden", "/data/星影"])
def test_unit_names_match_systemd_escape(path):
    if shutil.which("systemd-escape") is None:
        pytest.skip("needs systemd-escape")
    expected = subprocess.run(["systemd-escape", "--path", path], capture_output=True, text=True,
                              check=True).stdout.strip()
    assert escape_path(Path(path)) == expected


def test_generated_units_follow_the_config(tmp_path):
    config = tmp_path / "hoshikage.yaml"
    config.write_text("ramdisk_path: /srv/hot models\nramdisk_size: 2.5\n")
    units = render(load_settings(config_file=config, environ={}))
    mount = units["srv-hot\\x20models.mount"]
    assert "Where=/srv/hot models" in mount
    assert "Options=size=2560M,mode=0750,uid=hoshikage,gid=hoshikage,nosuid,nodev,noexec" in mount
    assert "StopWhenUnneeded=yes" in mount
    assert "Wants=srv-hot\\x20models.mount hoshikage-ramdisk.service" in units["hoshikage.service.d/50-ramdisk.conf"]
    assert "BindsTo=srv-hot\\x20models.mount" in units["hoshikage-ramdisk.service.d/50-mount.conf"]


def test_without_a_mount_models_load_from_the_store(tmp_path):
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF" + bytes(100))
    plain_dir = tmp_path / "not-a-mount"
    plain_dir.mkdir()
    assert ramdisk.stage(model, plain_dir) == model
    assert list(plain_dir.iterdir()) == []


@pytest.fixture
def tmpfs(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mount_point = tmp_path / "ram"
    mount_point.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=80M", "tmpfs", str(mount_point)], check=True)
    yield mount_point
    subprocess.run(["umount", str(mount_point)], check=True)


def test_stages_once_verified_and_falls_back_when_full(tmp_path, tmpfs):
    small = tmp_path / "small.gguf"
    small.write_bytes(os.urandom(3 * 2**20))
    progress = []
    staged = ramdisk.stage(small, tmpfs, lambda done, total: progress.append((done, total)))
    assert staged.parent == tmpfs and staged.read_bytes() == small.read_bytes()
    assert progress[-1] == (small.stat().st_size, small.stat().st_size)
    assert ramdisk.stage(small, tmpfs) == staged  # already there: no second copy
    assert (tmpfs / ramdisk.STAMP).exists()
    big = tmp_path / "big.gguf"
    big.write_bytes(bytes(40 * 2**20))  # 80M tmpfs minus 64M headroom cannot hold it
    assert ramdisk.stage(big, tmpfs) == big
    assert not list(tmpfs.glob(".*partial"))


def test_hold_returns_once_unused_for_the_timeout(tmp_path, tmpfs):
    ramdisk.touch_stamp(tmpfs)
    stamp = tmpfs / ramdisk.STAMP
    os.utime(stamp, (stamp.stat().st_atime, stamp.stat().st_mtime - 100))
    ramdisk.hold(tmpfs, great_timeout_seconds=60)  # used 100 s ago: returns at once


def test_hold_waits_while_recently_used(tmpfs):
    import time

    ramdisk.touch_stamp(tmpfs)
    started = time.monotonic()
    ramdisk.hold(tmpfs, great_timeout_seconds=0.6, poll_seconds=0.1)
    assert time.monotonic() - started >= 0.5  # a lower bound: a busy machine only makes it longer
