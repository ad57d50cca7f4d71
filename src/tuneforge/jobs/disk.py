"""Free space on the data disk.

Below a floor (``TUNEFORGE_MIN_FREE_DISK_MB``) workers take no new job, a training attempt
that dies fails its job with ``disk_full`` (a retry would die the same way) and ``/readyz``
is not ready, with the reason.
"""

from __future__ import annotations

import errno
import shutil
from pathlib import Path

FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
"""OS errors that mean the disk (or the writer's quota or file size limit) is full."""


def free_bytes(path: Path) -> int:
    """Bytes free for this process on the filesystem holding ``path`` (0 if unknown)."""
    try:
        return shutil.disk_usage(path).free
    except OSError:
        return 0


def is_disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` is an OS error saying that there is no room to write."""
    return isinstance(exc, OSError) and exc.errno in FULL_ERRNOS


def describe_low(free: int, floor: int) -> str:
    """One line saying that the data disk is low on space, with the setting to change."""
    return (
        f"the data disk has {free / 2**20:.0f} MiB free, under the floor of "
        f"{floor / 2**20:.0f} MiB (TUNEFORGE_MIN_FREE_DISK_MB)"
    )
