"""How many decode threads to run while other programs keep cores busy (engine/cpu_share.py)."""

from __future__ import annotations

import pytest

from hoshikage.engine import cpu_share
from hoshikage.engine.cpu_share import CpuShare, parse_proc_stat, threads_for


def test_un_niced_busy_time_from_proc_stat():
    #      user nice system idle iowait irq softirq steal guest guest_nice
    line = "cpu  100 900 50 5000 7 3 2 1 0 0\ncpu0 ...\n"
    assert parse_proc_stat(line, ticks=100) == (100 + 50 + 3 + 2 + 1) / 100  # niced, idle and iowait left out


@pytest.mark.parametrize("others,most,threads", [
    (0.0, 2, 2), (0.3, 2, 2), (0.7, 2, 1), (1.0, 2, 1), (1.9, 2, 1), (3.0, 2, 1),
    (1.0, 8, 7), (2.6, 8, 5), (0.0, 1, 1)])
def test_threads_give_way_to_what_others_keep_busy(others, most, threads):
    assert threads_for(others, most) == threads


def test_decide_changes_the_count_only_when_it_changes(tmp_path, monkeypatch):
    stat = tmp_path / "stat"
    clock = [100.0]
    ours = [0.0]
    monkeypatch.setattr(cpu_share.time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(cpu_share.os, "times", lambda: type("T", (), {"user": ours[0], "system": 0.0})())
    monkeypatch.setattr(cpu_share.os, "sysconf", lambda name: 100)
    share = CpuShare(2, stat)

    def tick(seconds: float, busy_ticks: int, our_seconds: float):
        clock[0] += seconds
        ours[0] += our_seconds
        stat.write_text(f"cpu  {busy_ticks} 0 0 0 0 0 0 0 0 0\n")
        return share.decide()

    assert tick(1.0, 0, 0.0) is None  # the first sample has nothing to compare with
    assert tick(1.0, 200, 2.0) is None  # we were the only busy ones: stay at 2
    assert tick(1.0, 400, 1.0) == 1  # another program kept a whole core busy
    assert tick(0.5, 600, 0.0) is None  # sampled at most once a second
    assert tick(1.0, 500, 1.0) == 2  # it stopped: since the last sample only our own second was busy
    assert share.threads == 2


def test_without_proc_it_stays_as_configured(tmp_path):
    share = CpuShare(4, tmp_path / "missing")
    assert share.decide() is None and share.threads == 4
