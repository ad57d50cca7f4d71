"""The training child: runs one attempt of one job through the same recipe as the CLI.

    TUNEFORGE_DATABASE_URL=URL python -m tuneforge.jobs.child --data-dir DIR --job-id ID

The database URL comes from the environment, never the command line (it may hold a password
and every user of the machine can read command lines).

It reads the job's run config, resumes from the last complete checkpoint when one exists,
streams training events into the job's event log, and leaves ``result.json`` (success) or
``error.json`` (bad input, exit code 2) in the job's directory for its worker. It exits
by itself when its worker dies, so an orphan never trains beside the job's next owner.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_ORPHANED = 0, 1, 2, 70


class EventForwarder:
    """Training events -> OpenAI-style job events (step metrics batched, at most 1 write/s)."""

    def __init__(
        self,
        store,
        job_id: str,
        flush_seconds: float = 1.0,
        logged: tuple[int, int] = (0, 0),
    ) -> None:
        self.store = store
        self.job_id = job_id
        self.flush_seconds = flush_seconds
        # (last step, last evaluation step) a previous attempt already logged: a resumed
        # attempt trains again from its checkpoint and must not log those steps twice.
        self.logged_step, self.logged_eval = logged
        self.pending: list[dict[str, Any]] = []
        self.last_flush = 0.0
        self.total_steps: int | None = None
        self.last_step: dict[str, Any] = {}
        self.last_eval: dict[str, Any] = {}
        self.started = time.time()
        self.first_step: tuple[float, int] | None = None
        self.summary: dict[str, Any] = {}

    def __call__(self, event: dict[str, Any]) -> None:
        kind = event["type"]
        handler = getattr(self, f"_on_{kind}", None)
        if handler is not None:
            handler(event)
        if kind != "step" or time.time() - self.last_flush >= self.flush_seconds:
            self.flush()

    def _add(self, message: str, **fields: Any) -> None:
        self.pending.append({"message": message, "time": time.time(), **fields})

    def _on_start(self, e: dict[str, Any]) -> None:
        self.total_steps = e.get("total_steps")
        self._add(
            f"Training started: {e.get('train_examples')} examples, {e.get('total_steps')} "
            f"steps, batch size {e.get('batch_size')}, learning rate {e.get('learning_rate'):.3g}",
            data={k: v for k, v in e.items() if k not in ("type", "time")},
        )

    def _on_plan(self, e: dict[str, Any]) -> None:
        self._add(
            f"Plan: {e['epochs']} epochs, {e['total_steps']} steps ({e['steps_per_epoch']} per "
            f"epoch), batch size {e['batch_size']}, learning rate {e['learning_rate']:.3g} "
            f"(head {e['head_learning_rate']:.3g}), max length {e['max_length']} "
            f"({e['truncated_texts']} texts truncated), method {e['method']}, precision "
            f"{e['precision']}, {e['threads']} thread(s); estimated "
            f"{e['estimated_seconds']:.0f} s (measured on this machine)",
            data={k: v for k, v in e.items() if k not in ("type", "time")},
        )

    def _on_warning(self, e: dict[str, Any]) -> None:
        self._add(
            f"Warning: {e['message']}",
            level="warn",
            data={k: v for k, v in e.items() if k not in ("type", "time")},
        )

    def _on_resume(self, e: dict[str, Any]) -> None:
        self._add(
            f"Resumed from checkpoint at step {e['step']} ({e.get('checkpoint')})",
            data={"step": e["step"], "checkpoint": e.get("checkpoint")},
        )

    def _on_step(self, e: dict[str, Any]) -> None:
        step = int(e["step"])
        now = time.time()
        if self.first_step is None:
            self.first_step = (now, step)
        self.last_step = {"step": step, "train_loss": e.get("loss")}
        if step <= self.logged_step:
            return  # logged by the attempt this one resumed
        data = {
            "step": step,
            "total_steps": self.total_steps,
            "train_loss": e.get("loss"),
            "learning_rate": e.get("lr"),
            "epoch": e.get("epoch"),
        }
        self._add(
            f"Step {step}/{self.total_steps}: training loss={e.get('loss', float('nan')):.4f}",
            type="metrics",
            data=data,
        )

    def _on_eval(self, e: dict[str, Any]) -> None:
        m = e.get("metrics") or {}
        self.last_eval = {
            "valid_loss": m.get("log_loss"),
            "valid_accuracy": m.get("accuracy", m.get("subset_accuracy")),
            "valid_macro_f1": m.get("macro_f1"),
        }
        if int(e["step"]) <= self.logged_eval:
            return  # logged by the attempt this one resumed
        self._add(
            f"Step {e['step']}: validation accuracy={self.last_eval['valid_accuracy']}, "
            f"macro-F1={self.last_eval['valid_macro_f1']}",
            type="metrics",
            data={"step": e["step"], "epoch": e.get("epoch"), **self.last_eval},
        )

    def _on_checkpoint(self, e: dict[str, Any]) -> None:
        self.flush()
        metrics = {"step": e["step"], **self.last_step, **self.last_eval}
        metrics["step"] = e["step"]
        self.store.add_checkpoint(self.job_id, int(e["step"]), metrics)
        self._add(f"Checkpoint saved at step {e['step']}", data={"step": e["step"]})

    def _on_early_stop(self, e: dict[str, Any]) -> None:
        self._add(
            f"Stopped early at step {e['step']}: no improvement since step {e['best_step']}",
            data={"step": e["step"], "best_step": e["best_step"]},
        )

    def _on_summary(self, e: dict[str, Any]) -> None:
        self.summary = e
        self._add(
            f"Training finished after {e.get('epochs_trained')} of {e.get('epochs_planned')} "
            f"epochs ({e.get('steps')} steps"
            + (", stopped early" if e.get("stopped_early") else "")
            + f"): best checkpoint at step {e.get('best_step')}; "
            f"validation {e.get('validation')}; test {e.get('test')}",
            data={k: v for k, v in e.items() if k not in ("type", "time")},
        )

    def estimated_finish(self) -> int | None:
        """Unix time the training should end at the rate seen so far."""
        if self.first_step is None or not self.total_steps or not self.last_step:
            return None
        t0, s0 = self.first_step
        done = self.last_step["step"] - s0
        if done <= 0:
            return None
        rate = done / max(time.time() - t0, 1e-6)
        return int(time.time() + (self.total_steps - self.last_step["step"]) / rate)

    def flush(self) -> None:
        """Write the pending events (one commit)."""
        if self.pending:
            self.store.add_events(self.job_id, self.pending)
            self.pending = []
            eta = self.estimated_finish()
            if eta is not None:
                self.store.set_fields(self.job_id, estimated_finish=eta)
        self.last_flush = time.time()


def logged_steps(store, job_id: str) -> tuple[int, int]:
    """(last training step, last evaluation step) in the job's metrics events (0 if none)."""
    from sqlalchemy import select

    from tuneforge.jobs.tables import JobEvent

    step = evaluation = 0
    with store.sessions() as s:
        rows = s.scalars(
            select(JobEvent.data)
            .where(JobEvent.job_id == job_id, JobEvent.type == "metrics")
            .order_by(JobEvent.seq.desc())
        )
        for data in rows:
            if not data or "step" not in data:
                continue
            if "train_loss" in data and not step:
                step = int(data["step"])
            elif "train_loss" not in data and not evaluation:
                evaluation = int(data["step"])
            if step and evaluation:
                break
    return step, evaluation


# the run config's data file -> (the job's field, the error code of its problems)
FILE_FIELDS = {
    "train": ("training_file", "invalid_training_file"),
    "validation": ("validation_file", "invalid_validation_file"),
    "test": ("test_file", "invalid_test_file"),
}


def file_labels(store, job_id: str, data: Any) -> tuple[dict[str, str], dict[str, str]]:
    """For the job's data files: (path or stored name -> ``file-id (name)``, path or stored
    name -> the error code of a problem in it).

    Args:
        store: The job store.
        job_id: The job.
        data: The run config's ``DataConfig`` (absolute paths).
    """
    from tuneforge.jobs.tables import File, Job

    labels: dict[str, str] = {}
    codes: dict[str, str] = {}
    with store.sessions() as s:
        job = s.get(Job, job_id)
        for role, (field, code) in FILE_FIELDS.items():
            path = getattr(data, role)
            if not path:
                continue
            file_id = getattr(job, field, None) if job is not None else None
            row = s.get(File, file_id) if file_id else None
            label = f"{file_id} ({row.filename})" if row else (file_id or Path(path).name)
            for key in (str(path), Path(path).name):
                labels[key] = label
                codes[key] = code
    return labels, codes


def bad_input_error(exc: Exception, labels: dict[str, str], codes: dict[str, str]) -> dict:
    """``error.json`` for an ``InputError``: its message and problems with the data files
    named by id (no server path), and the job error code (the file a problem is in, or
    the error's own ``job_error_code``; none: the worker says ``invalid_job``)."""
    from tuneforge.jobs.messages import scrub_paths

    problems = list(getattr(exc, "problems", []))
    error: dict[str, Any] = {
        "message": scrub_paths(str(exc).split("\n", 1)[0], labels),
        "problems": [scrub_paths(str(p), labels) for p in problems],
    }
    code = getattr(exc, "job_error_code", None)
    for problem in problems:
        if code:
            break
        code = codes.get(problem.file) or codes.get(Path(problem.file).name)
    if code:
        error["code"] = code
    return error


def _watch_parent(parent: int) -> None:
    """Exit at once when the worker that started us is gone (its pid is no longer our parent)."""
    while True:
        if os.getppid() != parent:
            os._exit(EXIT_ORPHANED)
        time.sleep(0.5)


def _write_json(path: Path, payload: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(payload), encoding="utf-8")
    os.replace(tmp, path)


def run(database_url: str, data_dir: str, job_id: str) -> int:
    """One attempt of one job; returns the exit code."""
    from tuneforge.bundle import staging_dir
    from tuneforge.config import RunConfig
    from tuneforge.errors import InputError
    from tuneforge.jobs.db import make_engine
    from tuneforge.jobs.integrations import tracker_listeners
    from tuneforge.jobs.layout import DataDir
    from tuneforge.jobs.spec import resolve_paths
    from tuneforge.jobs.store import JobStore
    from tuneforge.recipes.finetune_classifier import finetune_classifier

    store = JobStore(make_engine(database_url))
    layout = DataDir(Path(data_dir))
    work = layout.job_dir(job_id)
    work.mkdir(parents=True, exist_ok=True)
    raw = store.run_config(job_id)
    if raw is None:
        print(f"job {job_id} not found", file=sys.stderr)
        return EXIT_FAILED
    try:  # a run config stored by an older server may hold values no longer accepted
        config = RunConfig.from_dict(resolve_paths(raw, data_dir))
    except InputError as exc:
        _write_json(work / "error.json", bad_input_error(exc, {}, {}))
        return EXIT_BAD_INPUT
    output = Path(config.output)
    if (output / "tuneforge.json").is_file():  # a previous attempt published, then died
        _write_json(work / "result.json", {"bundle": str(output), "reused": True})
        return EXIT_OK
    stage = staging_dir(output)
    resume = (stage / "checkpoints" / "latest.json").is_file()
    config = RunConfig.from_dict({**config.to_dict(), "resume": resume})
    forwarder = EventForwarder(
        store, job_id, logged=logged_steps(store, job_id) if resume else (0, 0)
    )
    trackers = tracker_listeners(store, job_id, work, resume)
    try:
        result = finetune_classifier(config, listeners=[forwarder, *trackers])
    except InputError as exc:  # deterministic: the worker fails the job, no retry
        forwarder.flush()
        labels, codes = file_labels(store, job_id, config.data)
        _write_json(work / "error.json", bad_input_error(exc, labels, codes))
        return EXIT_BAD_INPUT
    forwarder.flush()
    for tracker in trackers:
        tracker.close()
    _write_json(
        work / "result.json",
        {
            "bundle": str(result.bundle),
            "metrics": result.metrics,
            "train_seconds": result.train_seconds,
            "trained_tokens": forwarder.summary.get("trained_tokens"),
        },
    )
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m tuneforge.jobs.child``."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--job-id", required=True)
    args = parser.parse_args(argv)
    from tuneforge.jobs.db import DATABASE_URL_ENV

    database_url = os.environ.get(DATABASE_URL_ENV)
    if not database_url:
        parser.error(f"{DATABASE_URL_ENV} is not set: the worker passes the database URL there")
    threading.Thread(target=_watch_parent, args=(os.getppid(),), daemon=True).start()
    from tuneforge.environment import quiet_libraries

    quiet_libraries()
    return run(database_url, args.data_dir, args.job_id)


if __name__ == "__main__":
    sys.exit(main())
