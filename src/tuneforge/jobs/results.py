"""What a successful job leaves behind: the model row, the metrics CSV result file and
(with a tracker integration) the TensorBoard event files."""

from __future__ import annotations

import csv
import io
import json
import os
import time
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from tuneforge.jobs.ids import new_id
from tuneforge.jobs.integrations import tensorboard_archive
from tuneforge.jobs.layout import DataDir
from tuneforge.jobs.tables import File, FineTunedModel, Job
from tuneforge.training.events import read_events

METRIC_COLUMNS = (
    "step",
    "epoch",
    "train_loss",
    "learning_rate",
    "valid_loss",
    "valid_accuracy",
    "valid_macro_f1",
)


def fine_tuned_model_id(job: Job) -> str:
    """``ft:<base>:<project>:<suffix>:<job-id>`` (the OpenAI naming, suffix may be empty)."""
    return f"ft:{job.model}:{job.project}:{job.suffix or ''}:{job.id}"


def metrics_csv(events_path: Path) -> str:
    """One row per training step; validation columns filled on the steps that evaluated."""
    rows: dict[int, dict[str, Any]] = {}
    for e in read_events(events_path) if events_path.is_file() else []:
        if e.get("type") == "step":
            rows.setdefault(int(e["step"]), {}).update(
                step=e["step"],
                epoch=e.get("epoch"),
                train_loss=e.get("loss"),
                learning_rate=e.get("lr"),
            )
        elif e.get("type") == "eval":
            m = e.get("metrics") or {}
            rows.setdefault(int(e["step"]), {"step": e["step"]}).update(
                valid_loss=m.get("log_loss"),
                valid_accuracy=m.get("accuracy", m.get("subset_accuracy")),
                valid_macro_f1=m.get("macro_f1"),
            )
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=METRIC_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for step in sorted(rows):
        writer.writerow({k: rows[step].get(k, "") for k in METRIC_COLUMNS})
    return out.getvalue()


def record_success(session: Session, job: Job, layout: DataDir, trained_tokens: int | None) -> None:
    """Register the model and the metrics file of a job whose bundle is published."""
    bundle = layout.bundle(job.id)
    model_id = fine_tuned_model_id(job)
    if session.get(FineTunedModel, model_id) is None:
        session.add(
            FineTunedModel(
                id=model_id,
                project=job.project,
                base_model=job.model,
                job_id=job.id,
                bundle=str(bundle.relative_to(layout.root)),
                created_at=int(time.time()),
            )
        )
    results = [
        _result_file(
            session, job, layout, "step_metrics.csv", metrics_csv(bundle / "events.jsonl").encode()
        )
    ]
    archive = tensorboard_archive(layout.job_dir(job.id))
    if archive is not None:
        results.append(_result_file(session, job, layout, "tensorboard.tar.gz", archive))
    job.fine_tuned_model = model_id
    job.result_files = results
    job.trained_tokens = trained_tokens
    job.hyperparameters = resolved_hyperparameters(job.hyperparameters, bundle)


def _result_file(session: Session, job: Job, layout: DataDir, name: str, content: bytes) -> str:
    """Store ``content`` as a ``fine-tune-results`` file of the job's project; its id."""
    file_id = new_id("file-")
    storage = file_id + "".join(Path(name).suffixes)
    layout.files.mkdir(parents=True, exist_ok=True)
    tmp = layout.files / f".{storage}.tmp"
    tmp.write_bytes(content)
    os.replace(tmp, layout.file_path(storage))
    session.add(
        File(
            id=file_id,
            project=job.project,
            filename=name,
            purpose="fine-tune-results",
            bytes=len(content),
            created_at=int(time.time()),
            status="processed",
            storage_name=storage,
        )
    )
    return file_id


def resolved_hyperparameters(requested: dict[str, Any], bundle: Path) -> dict[str, Any]:
    """The requested hyperparameters with every ``auto`` replaced by what the run used (as
    the OpenAI API reports them once a job ran)."""
    config_path = bundle / "run_config.json"
    if not config_path.is_file():
        return dict(requested)
    train = json.loads(config_path.read_text(encoding="utf-8"))["train"]
    out = dict(requested)
    out["n_epochs"] = train["epochs"]
    out["batch_size"] = train["batch_size"]
    if out.get("learning_rate_multiplier", "auto") == "auto":
        out["learning_rate_multiplier"] = 1.0
    return out
