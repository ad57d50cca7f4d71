"""The default thread count: affinity, cgroup CPU quota (v1 and v2), and other processes' load."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tuneforge.training import threads
from tuneforge.training.threads import (
    ThreadChoice,
    apply_threads,
    cgroup_cpu_quota,
    choose_threads,
    parse_cfs,
    parse_cpu_max,
    set_wait_policy,
    threads_spin,
)


@pytest.mark.parametrize(
    ("text", "cpus"),
    [
        ("max 100000\n", None),
        ("max", None),
        ("200000 100000\n", 2.0),
        ("150000 100000", 1.5),
        ("50000 100000", 0.5),
        ("100000", 1.0),  # period omitted: the kernel default of 100 ms
        ("", None),
        ("garbage here", None),
        ("0 100000", None),
    ],
)
def test_parse_cpu_max(text, cpus):
    assert parse_cpu_max(text) == cpus


@pytest.mark.parametrize(
    ("quota", "period", "cpus"),
    [("-1\n", "100000\n", None), ("100000", "100000", 1.0), ("250000", "100000", 2.5)],
)
def test_parse_cfs(quota, period, cpus):
    assert parse_cfs(quota, period) == cpus


def test_parse_cfs_unreadable_is_no_quota():
    assert parse_cfs("x", "100000") is None
    assert parse_cfs("100000", "0") is None


def _fake_v2(tmp_path: Path, leaf: str | None, parent: str | None) -> tuple[Path, Path]:
    mount = tmp_path / "cgroup2"
    group = mount / "system.slice" / "job.scope"
    group.mkdir(parents=True)
    if leaf is not None:
        (group / "cpu.max").write_text(leaf)
    if parent is not None:
        (group.parent / "cpu.max").write_text(parent)
    proc = tmp_path / "cgroup"
    proc.write_text("0::/system.slice/job.scope\n")
    info = tmp_path / "mountinfo"
    info.write_text(
        "22 1 0:21 / /proc rw - proc proc rw\n"
        f"30 22 0:26 / {mount} rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n"
    )
    return proc, info


def test_cgroup_v2_quota_is_read(tmp_path):
    proc, info = _fake_v2(tmp_path, "150000 100000\n", None)
    assert cgroup_cpu_quota(proc, info) == 1.5


def test_cgroup_v2_takes_the_tightest_limit_on_the_path(tmp_path):
    proc, info = _fake_v2(tmp_path, "max 100000\n", "100000 100000\n")
    assert cgroup_cpu_quota(proc, info) == 1.0


def test_cgroup_v2_max_means_no_quota(tmp_path):
    proc, info = _fake_v2(tmp_path, "max 100000\n", "max 100000\n")
    assert cgroup_cpu_quota(proc, info) is None


def test_cgroup_v2_in_a_container_whose_mount_is_the_group(tmp_path):
    # Inside a container the cgroup namespace makes the group look like the root.
    mount = tmp_path / "fs"
    mount.mkdir()
    (mount / "cpu.max").write_text("200000 100000\n")
    proc = tmp_path / "cgroup"
    proc.write_text("0::/\n")
    info = tmp_path / "mountinfo"
    info.write_text(f"30 22 0:26 / {mount} rw - cgroup2 cgroup2 rw\n")
    assert cgroup_cpu_quota(proc, info) == 2.0


def test_cgroup_v1_cfs_quota_is_read(tmp_path):
    mount = tmp_path / "cpu,cpuacct"
    group = mount / "docker" / "abc"
    group.mkdir(parents=True)
    (group / "cpu.cfs_quota_us").write_text("50000\n")
    (group / "cpu.cfs_period_us").write_text("100000\n")
    (mount / "cpu.cfs_quota_us").write_text("-1\n")
    (mount / "cpu.cfs_period_us").write_text("100000\n")
    proc = tmp_path / "cgroup"
    proc.write_text("4:memory:/docker/abc\n3:cpu,cpuacct:/docker/abc\n0::/\n")
    info = tmp_path / "mountinfo"
    info.write_text(
        f"32 31 0:29 / {mount} rw,relatime - cgroup cgroup rw,cpu,cpuacct\n"
        f"33 31 0:30 / {tmp_path / 'memory'} rw,relatime - cgroup cgroup rw,memory\n"
    )
    assert cgroup_cpu_quota(proc, info) == 0.5


def test_cgroup_v1_mount_rooted_below_the_hierarchy_root(tmp_path):
    # A container sees only its own group, mounted with root /docker/abc.
    mount = tmp_path / "cpu"
    mount.mkdir()
    (mount / "cpu.cfs_quota_us").write_text("200000")
    (mount / "cpu.cfs_period_us").write_text("100000")
    proc = tmp_path / "cgroup"
    proc.write_text("3:cpu:/docker/abc\n")
    info = tmp_path / "mountinfo"
    info.write_text(f"32 31 0:29 /docker/abc {mount} rw - cgroup cgroup rw,cpu\n")
    assert cgroup_cpu_quota(proc, info) == 2.0


def test_cgroup_files_missing_mean_no_quota(tmp_path):
    assert cgroup_cpu_quota(tmp_path / "nope", tmp_path / "nope2") is None
    proc, info = _fake_v2(tmp_path, None, None)
    assert cgroup_cpu_quota(proc, info) is None


def test_affinity_limits_the_default(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {3})
    choice = choose_threads(quota=None, busy=0.0, spinning=True)
    assert choice.threads == 1 and choice.cpus_allowed == 1
    assert "1 CPU allowed" in choice.reason


def test_quota_rounds_down_but_never_below_one():
    assert choose_threads(cpus=8, quota=2.5, busy=0.0, spinning=True).threads == 2
    assert choose_threads(cpus=8, quota=0.5, busy=0.0, spinning=True).threads == 1
    assert choose_threads(cpus=2, quota=4.0, busy=0.0, spinning=True).threads == 2
    assert "CPU quota 2.5" in choose_threads(cpus=8, quota=2.5, busy=0.0, spinning=True).reason


def test_idle_machine_uses_every_allowed_cpu():
    choice = choose_threads(cpus=2, quota=None, busy=0.05, spinning=True)
    assert choice == ThreadChoice(
        2, "2 threads: 2 CPUs allowed, no CPU quota, machine idle", 2, None, 0.05, None
    )


@pytest.mark.parametrize(
    ("busy", "expected"), [(0.0, 4), (0.4, 4), (1.0, 3), (2.0, 2), (3.2, 1), (6.0, 1)]
)
def test_busy_machine_takes_one_thread_per_free_cpu(busy, expected):
    choice = choose_threads(cpus=4, quota=None, busy=busy, spinning=True)
    assert choice.threads == expected
    if expected < 4:
        assert "busy with other processes" in choice.reason


def test_two_busy_processes_on_two_cpus_leave_one_thread():
    choice = choose_threads(cpus=2, quota=None, busy=2.0, spinning=True)
    assert choice.threads == 1
    assert choice.reason.startswith("1 thread: 2 CPUs allowed, no CPU quota, 2.0 CPUs busy")


def test_unknown_load_keeps_the_allowed_count():
    choice = choose_threads(cpus=3, quota=None, busy=None, spinning=True)
    assert choice.threads == 3 and "load unknown" in choice.reason


def test_an_explicit_request_is_used_as_given():
    choice = choose_threads(6, cpus=2, quota=1.0, busy=2.0, spinning=True)
    assert choice.threads == 6 and choice.requested == 6
    assert "as requested" in choice.reason


def test_busy_cpus_measures_a_number_within_the_machine():
    busy = threads.busy_cpus(window=0.05)
    assert busy is not None and 0.0 <= busy <= (os.cpu_count() or 1) + 0.01


def test_apply_threads_sets_torch():
    import torch

    before = torch.get_num_threads()
    try:
        choice = apply_threads(1)
        assert choice.threads == 1 and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_choice_is_json_friendly():
    assert choose_threads(cpus=2, quota=1.0, busy=0.0, spinning=True).to_dict() == {
        "threads": 1,
        "reason": "1 thread: 2 CPUs allowed, CPU quota 1, machine idle",
        "cpus_allowed": 2,
        "cpu_quota": 1.0,
        "busy_cpus": 0.0,
        "requested": None,
    }


def test_wait_policy_respects_the_users_choice():
    env: dict[str, str] = {}
    assert set_wait_policy(env) is True and env == {"OMP_WAIT_POLICY": "PASSIVE"}
    mine = {"OMP_WAIT_POLICY": "ACTIVE"}
    assert set_wait_policy(mine) is False and mine == {"OMP_WAIT_POLICY": "ACTIVE"}
    spin = {"GOMP_SPINCOUNT": "1000"}
    assert set_wait_policy(spin) is False and "OMP_WAIT_POLICY" not in spin


def test_sleeping_threads_do_not_count_the_load():
    # Measured: under two busy processes on 2 CPUs, two sleeping threads beat one.
    choice = choose_threads(cpus=2, quota=None, busy=2.0, spinning=False)
    assert choice.threads == 2 and choice.busy_cpus is None
    assert "idle threads sleep" in choice.reason
    assert choose_threads(cpus=4, quota=1.0, busy=0.0, spinning=False).threads == 1


def test_spinning_is_read_from_the_environment():
    assert threads_spin({}) is True
    assert threads_spin({"OMP_WAIT_POLICY": "passive"}) is False
    assert threads_spin({"OMP_WAIT_POLICY": "ACTIVE"}) is True
    assert threads_spin({"GOMP_SPINCOUNT": "0"}) is False
    assert threads_spin({"GOMP_SPINCOUNT": "10000"}) is True


def test_adaptive_wait_policy_spins_only_on_an_idle_machine() -> None:
    """``train`` keeps spinning threads when other processes leave the CPUs idle, and makes
    them sleep when they don't (or when the load cannot be read)."""
    idle: dict[str, str] = {}
    assert set_wait_policy(idle, adaptive=True, busy=0.1) is False and idle == {}
    loaded: dict[str, str] = {}
    assert set_wait_policy(loaded, adaptive=True, busy=1.9) is True
    assert loaded == {"OMP_WAIT_POLICY": "PASSIVE"}
    unknown: dict[str, str] = {}
    assert set_wait_policy(unknown, adaptive=True, busy=None) is True
    mine = {"OMP_WAIT_POLICY": "ACTIVE"}
    assert set_wait_policy(mine, adaptive=True, busy=1.9) is False
    assert mine == {"OMP_WAIT_POLICY": "ACTIVE"}
    # Not adaptive (serve, worker, predict): always sleep, the load is not read.
    always: dict[str, str] = {}
    assert set_wait_policy(always, busy=0.0) is True and always == {"OMP_WAIT_POLICY": "PASSIVE"}
