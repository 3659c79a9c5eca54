from hoshikage.hardware import physical_core_count


def _cpu(sysfs, number, package, core):
    topology = sysfs / f"cpu{number}" / "topology"
    topology.mkdir(parents=True)
    (topology / "physical_package_id").write_text(f"{package}\n")
    (topology / "core_id").write_text(f"{core}\n")


def test_smt_siblings_count_once(tmp_path, monkeypatch):
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1, 2, 3})
    for cpu, core in [(0, 0), (1, 1), (2, 0), (3, 1)]:  # two cores, two threads each
        _cpu(tmp_path, cpu, 0, core)
    assert physical_core_count(tmp_path, tmp_path / "no-cgroup") == 2


def test_cgroup_quota_caps_the_count(tmp_path, monkeypatch):
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1, 2, 3})
    for cpu in range(4):
        _cpu(tmp_path, cpu, 0, cpu)
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert physical_core_count(tmp_path, tmp_path / "cpu.max") == 2
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert physical_core_count(tmp_path, tmp_path / "cpu.max") == 4


def test_missing_topology_counts_cpus(tmp_path, monkeypatch):
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1, 2})
    assert physical_core_count(tmp_path, tmp_path / "none") == 3
