"""How many CPU threads to compute with: what the process may really use, and what is free.

``os.cpu_count()`` counts the machine's cores, not the ones this process may use. Three
things cut that down, and each is read here:

- CPU affinity (``taskset``, a container's cpuset): ``os.sched_getaffinity``.
- A CPU quota (``docker --cpus``, Kubernetes limits): cgroup v2 ``cpu.max`` or cgroup v1
  ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``. A process over its quota is frozen for the
  rest of each period, so threads beyond the quota only add waiting.
- Other processes already computing. OpenMP threads that *spin* while waiting for a core
  held by another process stall every parallel region: on a shared 2-core machine with two
  busy processes, two spinning threads trained 7x slower than one. With idle threads that
  sleep (``OMP_WAIT_POLICY=PASSIVE``, which the ``tuneforge`` command sets before torch loads)
  the slowdown is gone and two threads were faster than one under the same load, so the
  load only lowers the count when threads spin.

The choice comes with a reason, so a run can say what it chose and why.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

# libgomp (torch's OpenMP on Linux) reads these once, when torch loads it.
WAIT_POLICY_ENV = {"OMP_WAIT_POLICY": "PASSIVE"}


@dataclass(frozen=True)
class ThreadChoice:
    """The number of threads chosen, and why.

    Attributes:
        threads: Threads to compute with (at least 1).
        reason: One line for people, e.g. ``"2 threads: 2 CPUs allowed, no CPU quota,
            machine idle"``.
        cpus_allowed: CPUs in this process's affinity mask.
        cpu_quota: CPUs' worth of time the cgroup quota allows (None: no quota).
        busy_cpus: CPUs kept busy by other processes when measured (None: not measured).
        requested: The explicit request, if there was one.
    """

    threads: int
    reason: str
    cpus_allowed: int
    cpu_quota: float | None = None
    busy_cpus: float | None = None
    requested: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form."""
        return asdict(self)


# ----------------------------------------------------------------------------- cgroups


def parse_cpu_max(text: str) -> float | None:
    """CPUs allowed by a cgroup v2 ``cpu.max`` (``"QUOTA PERIOD"``; ``"max ..."``: none).

    Returns None for no limit or text that cannot be read as a limit.
    """
    parts = text.split()
    if not parts or parts[0] == "max":
        return None
    try:
        quota = int(parts[0])
        period = int(parts[1]) if len(parts) > 1 else 100_000
    except ValueError:
        return None
    if quota <= 0 or period <= 0:
        return None
    return quota / period


def parse_cfs(quota_text: str, period_text: str) -> float | None:
    """CPUs allowed by cgroup v1 ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us`` (-1: none)."""
    try:
        quota = int(quota_text.strip())
        period = int(period_text.strip())
    except ValueError:
        return None
    if quota <= 0 or period <= 0:
        return None
    return quota / period


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None


def _cgroup_paths(proc_cgroup: str) -> tuple[str | None, str | None]:
    """(v2 path, v1 ``cpu`` controller path) from ``/proc/self/cgroup`` text."""
    v2 = v1 = None
    for line in proc_cgroup.splitlines():
        fields = line.strip().split(":", 2)
        if len(fields) != 3:
            continue
        hierarchy, controllers, path = fields
        if hierarchy == "0" and controllers == "":
            v2 = path
        elif "cpu" in controllers.split(","):
            v1 = path
    return v2, v1


def _mount_points(mountinfo: str) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(v2 mounts, v1 ``cpu`` mounts) as (root inside the hierarchy, mount point)."""
    v2: list[tuple[str, str]] = []
    v1: list[tuple[str, str]] = []
    for line in mountinfo.splitlines():
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        fields, tail = left.split(), right.split()
        if len(fields) < 5 or not tail:
            continue
        root, point = fields[3], fields[4]
        if tail[0] == "cgroup2":
            v2.append((root, point))
        elif tail[0] == "cgroup" and len(tail) >= 3 and "cpu" in tail[2].split(","):
            v1.append((root, point))
    return v2, v1


def _dirs_up(mount_root: str, mount_point: str, path: str) -> list[Path]:
    """The cgroup's directory and its parents up to the mount point, leaf first."""
    rel = path
    if mount_root not in ("", "/") and (rel == mount_root or rel.startswith(mount_root + "/")):
        rel = rel[len(mount_root) :]
    parts = [p for p in rel.split("/") if p and p != ".."]
    base = Path(mount_point)
    return [base.joinpath(*parts[:i]) for i in range(len(parts), -1, -1)]


def cgroup_cpu_quota(
    proc_cgroup: Path = Path("/proc/self/cgroup"),
    mountinfo: Path = Path("/proc/self/mountinfo"),
) -> float | None:
    """CPUs' worth of time this process's cgroup may use (the tightest limit on its path).

    Reads cgroup v2 ``cpu.max`` and cgroup v1 ``cpu.cfs_quota_us``/``cpu.cfs_period_us``
    in the cgroup and every parent up to the mount point. None: no quota, or no cgroup
    information (not Linux, files missing or unreadable).

    Args:
        proc_cgroup: The ``/proc/self/cgroup`` file (a parameter for tests).
        mountinfo: The ``/proc/self/mountinfo`` file.
    """
    cgroup_text, mount_text = _read(proc_cgroup), _read(mountinfo)
    if cgroup_text is None or mount_text is None:
        return None
    v2_path, v1_path = _cgroup_paths(cgroup_text)
    v2_mounts, v1_mounts = _mount_points(mount_text)
    limits: list[float] = []
    if v2_path is not None:
        for root, point in v2_mounts:
            for d in _dirs_up(root, point, v2_path):
                text = _read(d / "cpu.max")
                limit = parse_cpu_max(text) if text is not None else None
                if limit is not None:
                    limits.append(limit)
    if v1_path is not None:
        for root, point in v1_mounts:
            for d in _dirs_up(root, point, v1_path):
                quota, period = _read(d / "cpu.cfs_quota_us"), _read(d / "cpu.cfs_period_us")
                limit = parse_cfs(quota, period) if quota and period else None
                if limit is not None:
                    limits.append(limit)
    return min(limits) if limits else None


# ----------------------------------------------------------------------------- CPUs, load


def allowed_cpus() -> int:
    """CPUs in this process's affinity mask (``taskset``, cpuset)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def _cpu_ticks(stat: str) -> tuple[int, int] | None:
    """(busy, total) jiffies of all CPUs from ``/proc/stat`` text."""
    for line in stat.splitlines():
        if line.startswith("cpu "):
            values = [int(v) for v in line.split()[1:]]
            # user nice system idle iowait irq softirq steal [guest guest_nice: inside user]
            total = sum(values[:8])
            idle = values[3] + (values[4] if len(values) > 4 else 0)
            return total - idle, total
    return None


def _own_ticks(stat: str) -> int:
    """utime + stime jiffies of this process from ``/proc/self/stat`` text."""
    fields = stat.rpartition(")")[2].split()
    return int(fields[11]) + int(fields[12])


def busy_cpus(window: float = 0.2) -> float | None:
    """CPUs kept busy by *other* processes, measured over ``window`` seconds.

    From ``/proc/stat`` (all CPUs) minus this process's own time (``/proc/self/stat``).
    Falls back to the 1-minute load average where ``/proc`` is missing; None when
    neither is available.
    """
    try:
        before = _cpu_ticks(Path("/proc/stat").read_text())
        own_before = _own_ticks(Path("/proc/self/stat").read_text())
        time.sleep(window)
        after = _cpu_ticks(Path("/proc/stat").read_text())
        own_after = _own_ticks(Path("/proc/self/stat").read_text())
    except (OSError, ValueError, IndexError):
        try:
            return os.getloadavg()[0]
        except OSError:  # pragma: no cover - no load average either
            return None
    if before is None or after is None or after[1] <= before[1]:
        return None
    cpus = os.cpu_count() or 1
    share = (after[0] - before[0] - (own_after - own_before)) / (after[1] - before[1])
    return max(0.0, share * cpus)


# ----------------------------------------------------------------------------- the choice


def _plural(n: float, word: str) -> str:
    text = f"{n:g}" if isinstance(n, float) else str(n)
    return f"{text} {word}{'' if n == 1 else 's'}"


def threads_spin(environ: dict[str, str] | None = None) -> bool:
    """Whether idle OpenMP threads spin (libgomp's default) rather than sleep."""
    env = os.environ if environ is None else environ
    if env.get("OMP_WAIT_POLICY", "").strip().upper() == "PASSIVE":
        return False
    return env.get("GOMP_SPINCOUNT", "").strip() not in {"0"}


def choose_threads(
    requested: int | None = None,
    *,
    cpus: int | None = None,
    quota: float | str | None = "read",
    busy: float | str | None = "measure",
    window: float = 0.2,
    spinning: bool | None = None,
) -> ThreadChoice:
    """How many threads to compute with, and why.

    The default is the CPUs this process may use (affinity, then the cgroup quota rounded
    down, at least 1). Where idle OpenMP threads spin, it is further reduced to the CPUs
    that other processes leave free (one thread per free CPU, at least one): a spinning
    thread waiting for a core that another process holds stalls every parallel operator.
    Where they sleep (``OMP_WAIT_POLICY=PASSIVE``), the load is not counted: measured under
    two busy processes on 2 CPUs, two sleeping threads beat one.

    Args:
        requested: An explicit count (``--threads``); used as given.
        cpus: CPUs allowed (None: read the affinity mask). For tests.
        quota: CPUs the cgroup quota allows, None for no quota, or ``"read"`` to read it.
        busy: CPUs busy with other processes, None for unknown, or ``"measure"`` to sample
            ``/proc/stat`` over ``window`` seconds.
        window: Seconds to sample the load for.
        spinning: Whether idle OpenMP threads spin (None: from ``OMP_WAIT_POLICY`` and
            ``GOMP_SPINCOUNT`` in the environment).
    """
    allowed = allowed_cpus() if cpus is None else max(1, cpus)
    cpu_quota = cgroup_cpu_quota() if quota == "read" else quota
    assert cpu_quota is None or isinstance(cpu_quota, float | int)
    facts = [f"{_plural(allowed, 'CPU')} allowed"]
    if cpu_quota is None:
        facts.append("no CPU quota")
        usable = allowed
    else:
        usable = max(1, min(allowed, math.floor(cpu_quota + 1e-9)))
        facts.append(f"CPU quota {cpu_quota:.2g}")
    if requested is not None:
        n = max(1, int(requested))
        return ThreadChoice(
            n,
            f"{_plural(n, 'thread')}: as requested ({', '.join(facts)})",
            allowed,
            cpu_quota,
            None,
            requested,
        )
    if not (threads_spin() if spinning is None else spinning):
        facts.append("idle threads sleep, so the load is not counted")
        return ThreadChoice(
            usable, f"{_plural(usable, 'thread')}: {', '.join(facts)}", allowed, cpu_quota
        )
    other = busy_cpus(window) if busy == "measure" else busy
    assert other is None or isinstance(other, float | int)
    n = usable
    if other is None:
        facts.append("load unknown")
    else:
        # The whole machine's CPUs minus the busy ones, but never more than we may use.
        total = max(allowed, os.cpu_count() or allowed) if cpus is None else allowed
        free = total - other
        if free < usable - 0.5:
            n = max(1, min(usable, math.floor(free + 0.5)))
            facts.append(f"{other:.1f} CPUs busy with other processes")
        else:
            facts.append("machine idle" if other < 0.25 else f"{other:.1f} CPUs busy elsewhere")
    return ThreadChoice(
        n, f"{_plural(n, 'thread')}: {', '.join(facts)}", allowed, cpu_quota, other, None
    )


def apply_threads(requested: int | None = None, **kwargs: Any) -> ThreadChoice:
    """Choose the thread count (see ``choose_threads``) and give it to torch.

    ``torch.set_num_threads`` is process-wide: the last call wins for every model in
    the process.
    """
    import torch

    choice = choose_threads(requested, **kwargs)
    torch.set_num_threads(choice.threads)
    return choice


IDLE_BELOW_CPUS = 0.5
"""Other processes using less CPU than this (measured over ``IDLE_WINDOW`` seconds) count as
an idle machine for ``set_wait_policy(adaptive=True)``."""
IDLE_WINDOW = 0.1


def set_wait_policy(
    environ: dict[str, str] | None = None,
    *,
    adaptive: bool = False,
    busy: float | str | None = "measure",
) -> bool:
    """Make OpenMP's idle threads sleep instead of spinning, unless the user chose.

    Spinning threads hold a core that another process (or another of our threads) needs;
    on a shared machine that collapses throughput (measured: 1.8 vs 21 examples/s beside
    two busy processes), while on an idle machine sleeping threads cost ~20%. It must run
    before torch is imported: libgomp reads the setting once, when it loads.

    Args:
        environ: The environment to set (default: ``os.environ``).
        adaptive: Leave libgomp's spinning default when the machine is idle now (a training
            run that starts on an idle machine keeps full speed; ``choose_threads`` then
            counts other processes' load, and a run that slows down later warns); make
            threads sleep otherwise. Not adaptive: always sleep (servers, workers, short
            commands).
        busy: Other processes' CPUs in use, or ``"measure"`` (``busy_cpus`` over
            ``IDLE_WINDOW`` seconds); only read when ``adaptive``.

    Returns:
        True when it made threads sleep; False when the user's own
        ``OMP_WAIT_POLICY``/``GOMP_SPINCOUNT`` is kept or the machine is idle (adaptive).
    """
    env = os.environ if environ is None else environ
    if "OMP_WAIT_POLICY" in env or "GOMP_SPINCOUNT" in env:
        return False
    if adaptive:
        load = busy_cpus(IDLE_WINDOW) if busy == "measure" else busy
        if isinstance(load, int | float) and load < IDLE_BELOW_CPUS:
            return False
    env.update(WAIT_POLICY_ENV)
    return True
