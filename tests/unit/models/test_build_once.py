"""A directory built once (a converted base model): complete or absent, never half-written,
built by one process when several ask at once, and the first rename wins where locks fail."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from tuneforge.models import build_once as build_once_module
from tuneforge.models.build_once import build_once

SRC = Path(__file__).resolve().parents[3] / "src"


def _writer(content: str, calls: list[str] | None = None):
    def build(scratch: Path) -> None:
        if calls is not None:
            calls.append(content)
        (scratch / "weights.safetensors").write_text(content)
        (scratch / "done.json").write_text("{}")

    return build


def _leftovers(parent: Path, target: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith(f".{target.name}.tmp"))


def test_second_call_uses_the_built_directory(tmp_path: Path) -> None:
    target = tmp_path / "bases" / "m-1"
    calls: list[str] = []
    messages: list[str] = []
    assert build_once(
        target, _writer("a", calls), marker="done.json", notify=messages.append, what="m"
    )
    assert not build_once(
        target, _writer("b", calls), marker="done.json", notify=messages.append, what="m"
    )
    assert calls == ["a"]
    assert (target / "weights.safetensors").read_text() == "a"
    assert messages == []
    assert _leftovers(target.parent, target) == []


def test_a_failing_build_leaves_no_directory_and_the_next_call_builds(tmp_path: Path) -> None:
    target = tmp_path / "m-1"

    def half_then_fail(scratch: Path) -> None:
        (scratch / "weights.safetensors").write_text("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        build_once(target, half_then_fail, marker="done.json", notify=print, what="m")
    assert not target.exists()
    assert _leftovers(tmp_path, target) == []
    assert build_once(target, _writer("ok"), marker="done.json", notify=print, what="m")
    assert (target / "weights.safetensors").read_text() == "ok"


def test_a_build_without_its_marker_is_not_published(tmp_path: Path) -> None:
    target = tmp_path / "m-1"

    def no_marker(scratch: Path) -> None:
        (scratch / "weights.safetensors").write_text("x")

    with pytest.raises(RuntimeError, match=r"wrote no done\.json"):
        build_once(target, no_marker, marker="done.json", notify=print, what="m")
    assert not target.exists()
    assert _leftovers(tmp_path, target) == []


def test_what_a_killed_builder_left_is_swept_and_rebuilt(tmp_path: Path) -> None:
    target = tmp_path / "m-1"
    stale = tmp_path / ".m-1.tmp-abc123"
    stale.mkdir()
    (stale / "weights.safetensors").write_text("half")
    hour_ago = time.time() - build_once_module.STALE_SECONDS - 60
    os.utime(stale, (hour_ago, hour_ago))
    young = tmp_path / ".m-1.tmp-young"  # may be a builder at work where locks fail
    young.mkdir()
    target.mkdir()  # a target without its marker: not published by build_once
    (target / "weights.safetensors").write_text("half")
    other = tmp_path / ".m-2.tmp-keep"  # another model's build: not ours to remove
    other.mkdir()
    assert build_once(target, _writer("ok"), marker="done.json", notify=print, what="m")
    assert (target / "weights.safetensors").read_text() == "ok"
    assert not stale.exists()
    assert young.exists()
    assert other.exists()


_RACER = """
import sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from tuneforge.models.build_once import build_once
target, log, started = Path(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4])
def build(scratch):
    with log.open("a") as fh:
        fh.write(f"built by {sys.argv[5]}\\n")
    started.write_text("")
    time.sleep(1.5)
    (scratch / "weights.safetensors").write_text(sys.argv[5])
    (scratch / "done.json").write_text("{}")
def notify(message):
    print(message, file=sys.stderr, flush=True)
print(build_once(target, build, marker="done.json", notify=notify, what="the model"))
"""


def test_two_processes_at_once_build_once_and_share_the_result(tmp_path: Path) -> None:
    target = tmp_path / "bases" / "m-1"
    log, started = tmp_path / "log", tmp_path / "started"

    def racer(who: str) -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "-c", _RACER, str(SRC), str(target), str(log), str(started), who],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    first = racer("first")
    deadline = time.monotonic() + 60
    while not started.exists():  # the first one holds the lock and is building
        assert first.poll() is None, first.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.02)
    second = racer("second")
    out1, err1 = first.communicate(timeout=60)
    out2, err2 = second.communicate(timeout=60)
    assert (first.returncode, second.returncode) == (0, 0), (err1, err2)
    assert log.read_text() == "built by first\n"
    assert (out1.strip(), out2.strip()) == ("True", "False")
    assert "Another process is preparing the model; waiting for it" in err2
    assert (target / "weights.safetensors").read_text() == "first"
    assert _leftovers(target.parent, target) == []


def test_the_first_rename_wins_where_locks_do_not_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    @contextmanager
    def no_lock(*_args):
        yield

    monkeypatch.setattr(build_once_module, "_exclusive", no_lock)
    target = tmp_path / "m-1"
    both_building = threading.Barrier(2)
    results: dict[str, bool] = {}
    errors: list[BaseException] = []

    def racer(who: str, delay: float) -> None:
        def build(scratch: Path) -> None:
            both_building.wait(timeout=30)
            time.sleep(delay)  # "fast" renames first
            (scratch / "weights.safetensors").write_text(who)
            (scratch / "done.json").write_text("{}")

        try:
            results[who] = build_once(target, build, marker="done.json", notify=print, what="m")
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [
        threading.Thread(target=racer, args=("fast", 0.0)),
        threading.Thread(target=racer, args=("slow", 0.5)),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == []
    assert results == {"fast": True, "slow": False}
    assert (target / "weights.safetensors").read_text() == "fast"
    assert _leftovers(tmp_path, target) == []
    assert sorted(os.listdir(target)) == ["done.json", "weights.safetensors"]
