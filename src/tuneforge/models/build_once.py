"""A directory that is expensive to build (a converted base model), built once and shared.

Protocol, for any number of processes and threads asking for the same ``target`` at once:

1. ``target`` exists and holds its ``marker`` file → it is complete; use it (no lock).
2. Otherwise take an exclusive lock on ``.<target name>.lock`` beside it (``filelock``:
   ``flock`` on Linux, released by the kernel when a holder dies). Whoever waits for it
   re-checks step 1 once it holds the lock, so only one of them builds.
3. Under the lock: remove what a killed builder left (``.<target name>.tmp-*`` folders
   untouched for an hour, and a ``target`` without its marker, which no rename below
   produces), build into a fresh ``.<target name>.tmp-*`` folder, then ``rename`` it to
   ``target``. A rename is atomic: ``target`` is either absent or complete.
4. If ``target`` appeared anyway (a file system whose locks do not work across hosts), the
   rename fails; the first rename wins, the loser's folder is removed and the winner's used.
   That is also why only hour-old temporary folders are swept: where locks do not work, a
   younger one may be another builder's, at work now (a conversion takes a minute or two).

A build that raises leaves nothing behind: its temporary folder is removed and the error
propagates.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout

# Temporary folders older than this are a dead builder's (see the module docstring).
STALE_SECONDS = 3600


def build_once(
    target: Path,
    build: Callable[[Path], None],
    *,
    marker: str,
    notify: Callable[[str], None],
    what: str,
) -> bool:
    """Make sure ``target`` exists and is complete, building it at most once.

    Args:
        target: The directory to produce. Its parent is created if missing.
        build: Writes the directory's contents into the (empty, existing) folder it is
            given; it must write ``marker`` last or at any point, the rename is what makes
            the result visible.
        marker: A file that every complete ``target`` holds.
        notify: Receives one line when this call waits for another builder.
        what: How to name the directory in that line.

    Returns:
        True when this call built ``target``, False when it was there already (or another
        process built it meanwhile).
    """
    if (target / marker).is_file():
        return False
    target.parent.mkdir(parents=True, exist_ok=True)
    with _exclusive(target, notify, what):
        if (target / marker).is_file():
            return False
        _remove_leftovers(target)
        scratch = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
        try:
            build(scratch)
            if not (scratch / marker).is_file():
                raise RuntimeError(f"building {what} wrote no {marker}")
            try:
                os.rename(scratch, target)
            except OSError:
                if not (target / marker).is_file():
                    raise
                return False  # another builder's rename won; theirs is complete
        finally:
            if scratch.exists():
                shutil.rmtree(scratch, ignore_errors=True)
    return True


@contextmanager
def _exclusive(target: Path, notify: Callable[[str], None], what: str) -> Iterator[None]:
    lock = FileLock(target.parent / f".{target.name}.lock")
    try:
        lock.acquire(timeout=0)
    except Timeout:
        notify(f"Another process is preparing {what}; waiting for it ({target})")
        lock.acquire()
    try:
        yield
    finally:
        lock.release()


def _remove_leftovers(target: Path) -> None:
    """Folders a killed builder left: only called while holding the lock."""
    now = time.time()
    for stale in target.parent.glob(f".{target.name}.tmp-*"):
        try:
            old = now - stale.stat().st_mtime > STALE_SECONDS
        except OSError:
            continue
        if old:
            shutil.rmtree(stale, ignore_errors=True)
    if target.exists():
        # A target without its marker was not renamed into place by build_once (an
        # interrupted manual deletion, a copy): it cannot be trusted.
        shutil.rmtree(target, ignore_errors=True)
