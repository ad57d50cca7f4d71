"""Fine-tuning jobs: create (validate the files first), list, state changes, events."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from tuneforge.config import RunConfig, SettingError
from tuneforge.data.splits import Splits
from tuneforge.errors import InputError, Problem
from tuneforge.jobs.ids import new_id
from tuneforge.jobs.messages import scrub_paths
from tuneforge.jobs.results import fine_tuned_model_id
from tuneforge.jobs.spec import (
    build_run_config,
    hyperparameter_settings,
    method_option_settings,
    resolve_paths,
)
from tuneforge.jobs.status import JobStatus, sources_of
from tuneforge.jobs.store import JobStore
from tuneforge.jobs.tables import Checkpoint, Job, JobEvent
from tuneforge.recipes.checkpoint_bundles import checkpoint_steps
from tuneforge.recipes.run_checks import check_method_options, check_schedule
from tuneforge.server.errors import APIError, not_found
from tuneforge.server.schemas.jobs import Hyperparameters, JobCreate
from tuneforge.server.services.files import get_file
from tuneforge.server.state import AppState
from tuneforge.server.text_checks import check_no_lone_surrogates

OPENAI_HYPERPARAMETERS = ("n_epochs", "batch_size", "learning_rate_multiplier")
# what a request may do -> (from which statuses, to which); the store checks the move too
ACTIONS = {
    "cancel": (sources_of(JobStatus.CANCELLED), JobStatus.CANCELLED),
    "pause": (sources_of(JobStatus.PAUSED), JobStatus.PAUSED),
    "resume": (frozenset({JobStatus.PAUSED}), JobStatus.QUEUED),
}


def job_object(job: Job) -> dict[str, Any]:
    """The OpenAI ``FineTuningJob`` shape of a row."""
    hp = {k: job.hyperparameters.get(k, "auto") for k in OPENAI_HYPERPARAMETERS}
    extra = {k: v for k, v in job.hyperparameters.items() if k not in hp and v is not None}
    method_type = job.method.get("type", "supervised")
    params: dict[str, Any] = {"hyperparameters": {**hp, **extra}}
    params.update(job.method.get("options") or {})
    return {
        "id": job.id,
        "object": "fine_tuning.job",
        "created_at": job.created_at,
        "error": job.error,
        "fine_tuned_model": job.fine_tuned_model,
        "finished_at": job.finished_at,
        "hyperparameters": hp,
        "model": job.model,
        "organization_id": job.project,
        "result_files": list(job.result_files or []),
        "seed": job.seed,
        "status": job.status,
        "trained_tokens": job.trained_tokens,
        "training_file": job.training_file,
        "validation_file": job.validation_file,
        "test_file": job.test_file,
        "data": job.data_options,
        "estimated_finish": job.estimated_finish,
        "integrations": list(job.integrations or []),
        "metadata": job.metadata_,
        "method": {"type": method_type, method_type: params},
        "attempts": job.attempts,
    }


def _merged_hyperparameters(body: JobCreate) -> tuple[str, dict[str, Any], dict[str, Any], set]:
    """(method type, hyperparameters, method options, the hyperparameters given under
    ``method.<type>``): ``method.<type>`` wins over the deprecated top-level
    ``hyperparameters``."""
    method = body.method
    method_type = method.type if method else "supervised"
    hp = body.hyperparameters.model_dump(exclude_unset=True) if body.hyperparameters else {}
    options: dict[str, Any] = {}
    from_method: set[str] = set()
    params = getattr(method, method_type, None) if method else None
    if params is not None:
        if params.hyperparameters is not None:
            given = params.hyperparameters.model_dump(exclude_unset=True)
            hp.update(given)
            from_method = set(given)
        options = params.model_dump(exclude_none=True, exclude={"hyperparameters"})
    Hyperparameters(**hp)  # validated again after merging
    return method_type, hp, options, from_method


class SettingParams:
    """Names a run-config setting as the request did: its ``param`` path and field name."""

    def __init__(self, method_type: str, from_method: set[str]) -> None:
        self.method_type = method_type
        self.from_method = from_method
        hp = hyperparameter_settings()
        options = method_option_settings()
        self.names = {s.key: name for name, s in {**hp, **options}.items()}
        self.options = {s.key for s in options.values()}

    def param(self, key: str) -> str:
        """``hyperparameters.n_epochs``, ``method.lora.hyperparameters.n_epochs`` or
        ``method.lora.target_modules``."""
        name = self.names.get(key)
        if name is None:
            return "hyperparameters"
        if key in self.options:
            return f"method.{self.method_type}.{name}"
        if name in self.from_method:
            return f"method.{self.method_type}.hyperparameters.{name}"
        return f"hyperparameters.{name}"

    def message(self, text: str) -> str:
        """``text`` with run-config keys (``train.epochs``) replaced by the field names."""
        for key in sorted(self.names, key=len, reverse=True):
            text = text.replace(key, self.names[key])
        return text


def create_job(state: AppState, session: Session, project: str, body: JobCreate) -> Job:
    """Create a job, validate its files (failing the job on bad data), queue it."""
    # every string is stored and echoed back: refuse what UTF-8 cannot encode, naming it
    check_no_lone_surrogates(body.model_dump(exclude_unset=True))
    base = state.resolve_base(body.model)
    if base is None:
        known = ", ".join(sorted(state.base_models)) + ", default"
        raise APIError(
            400,
            f"Model {body.model!r} is not a base model available for fine-tuning here; "
            f"choose one of: {known} (GET /v1/models).",
            code="model_not_available",
            param="model",
        )
    train_file = get_file(session, project, body.training_file, "training_file")
    optional = {"validation_file": body.validation_file, "test_file": body.test_file}
    files = {"training_file": train_file}
    for param, file_id in optional.items():
        if file_id:
            files[param] = get_file(session, project, file_id, param)
    for param, row in files.items():
        if row.purpose != "fine-tune":
            raise APIError(
                400,
                f"File {row.id} has purpose {row.purpose!r}, not 'fine-tune'.",
                code="invalid_file_purpose",
                param=param,
            )
    valid_file, test_file = files.get("validation_file"), files.get("test_file")
    data_options = body.data.model_dump(exclude_unset=True) if body.data else {}
    integrations = [i.model_dump(exclude_none=True) for i in body.integrations or []]
    method_type, hp, options, from_method = _merged_hyperparameters(body)
    params = SettingParams(method_type, from_method)
    base_id, base_spec = base
    job_id = new_id("ftjob-")
    seed = body.seed if body.seed is not None else int(time.time()) % (2**31 - 1)
    layout = state.layout
    try:
        config = build_run_config(
            training_file=str(Path("files") / train_file.storage_name),
            validation_file=str(Path("files") / valid_file.storage_name) if valid_file else None,
            test_file=str(Path("files") / test_file.storage_name) if test_file else None,
            data_options=data_options,
            base_model=base_spec,
            output=str(layout.bundle(job_id).relative_to(layout.root)),
            method_type=method_type,
            method_options=options,
            hyperparameters=hp,
            seed=seed,
        )
    except SettingError as exc:
        raise _setting_error(exc, params) from None
    except (InputError, TypeError, ValueError) as exc:
        raise APIError(
            400,
            f"Invalid hyperparameters: {exc}",
            code="invalid_hyperparameters",
            param="hyperparameters",
        ) from None
    # Read and check the files before the job exists: settings that do not fit the data
    # (a batch larger than the rows, too many steps) are a 400 that creates no job.
    error, splits = _validate_files(config, state, files)
    if splits is not None:
        try:
            check_schedule(config, len(splits.train), state.settings.max_train_steps)
        except SettingError as exc:
            raise _setting_error(exc, params, cap=state.settings.max_train_steps) from None
        error = _check_method_options(config, params)
    now = int(time.time())
    job = Job(
        id=job_id,
        project=project,
        model=base_id,
        training_file=train_file.id,
        validation_file=valid_file.id if valid_file else None,
        test_file=test_file.id if test_file else None,
        data_options=data_options or None,
        integrations=integrations or None,
        hyperparameters=hp,
        method={"type": method_type, "options": options},
        suffix=body.suffix or None,
        seed=seed,
        metadata_=body.metadata,
        run_config=config.to_dict(),
        status=JobStatus.VALIDATING_FILES.value,
        result_files=[],
        created_at=now,
        attempts=0,
        max_attempts=state.settings.max_attempts,
        queued_at=0.0,
    )
    session.add(job)
    store = state.store
    store.add_event(job.id, f"Created fine-tuning job: {job.id}", session=session)
    store.add_event(job.id, f"Validating training file: {train_file.id}", session=session)
    for message in integration_notes(integrations):
        store.add_event(job.id, message, level="warn", session=session)
    session.commit()

    if error is not None:
        store.transition(job, JobStatus.FAILED, error=error)
        store.add_event(
            job.id, f"Validation failed: {error['message']}", level="error", session=session
        )
    else:
        store.transition(job, JobStatus.QUEUED)
        store.add_event(job.id, "Files validated, moving job to queued state", session=session)
    session.commit()
    return job


def _setting_error(exc: SettingError, params: SettingParams, cap: int | None = None) -> APIError:
    """The 400 for a refused setting, naming the field as the request did."""
    message = params.message(str(exc))
    if cap is not None and exc.key == "train.epochs":
        message += (
            " (this server's max_train_steps, TUNEFORGE_MAX_TRAIN_STEPS); lower n_epochs or "
            "raise batch_size"
        )
    return APIError(
        400,
        f"Invalid hyperparameters: {message}",
        code="invalid_hyperparameters",
        param=params.param(exc.key),
    )


def _check_method_options(config: RunConfig, params: SettingParams) -> dict | None:
    """None, or the job error of method options the base model cannot take (unknown
    ``target_modules``): the job fails in validation with ``invalid_job``."""
    try:
        check_method_options(config)
    except SettingError as exc:
        return {
            "code": "invalid_job",
            "message": scrub_paths(params.message(str(exc))),
            "param": params.param(exc.key),
        }
    except InputError as exc:
        return {"code": "invalid_job", "message": scrub_paths(str(exc)), "param": "model"}
    return None


def integration_notes(integrations: list[dict[str, Any]]) -> list[str]:
    """Warnings for integrations this offline server stands in for."""
    return [
        f"Integration wandb (project {i.get('wandb', {}).get('project', '?')!r}) is not "
        "available offline; metrics are written as TensorBoard event files instead "
        "(result file tensorboard.tar.gz)"
        for i in integrations
        if i["type"] == "wandb"
    ]


# the CLI flags a data problem's fix names -> the job body's fields
CLI_DATA_FLAGS = {
    "--text-column": "data.text_column",
    "--label-column": "data.label_column",
    "--multi-label": "data.multi_label",
    "--label-separator": "data.label_separator",
}
# request param -> (run config data key, error code)
FILE_PARAMS = {
    "training_file": ("train", "invalid_training_file"),
    "validation_file": ("validation", "invalid_validation_file"),
    "test_file": ("test", "invalid_test_file"),
}


def _validate_files(
    config: RunConfig, state: AppState, files: dict[str, Any]
) -> tuple[dict | None, Splits | None]:
    """(None, the splits), or (the OpenAI error of the first problem, naming the file, line
    and param; None).

    Args:
        config: The job's run config (paths relative to the data directory).
        state: The app state.
        files: Request param (``training_file`` ...) -> the ``File`` row.
    """
    from tuneforge.recipes.finetune_classifier import load_splits

    resolved = RunConfig.from_dict(resolve_paths(config.to_dict(), str(state.layout.root)))
    names = {row.storage_name: row.filename for row in files.values()}
    paths = {
        param: getattr(resolved.data, key)
        for param, (key, _code) in FILE_PARAMS.items()
        if param in files
    }
    try:
        splits = load_splits(resolved)
    except InputError as exc:
        problems = exc.problems or [Problem(file=resolved.data.train, message=str(exc))]
        first = problems[0]
        param = next(
            (p for p, path in paths.items() if first.file and Path(first.file) == Path(path)),
            "training_file",
        )
        shown = _readable(first, files[param].id, names)
        # a message may name another file by its stored path: never show server paths
        for other, path in paths.items():
            name = names.get(Path(path).name, "")
            shown_id = files[other].id
            shown = shown.replace(str(path), f"{shown_id} ({name})" if name else shown_id)
        for flag, field in CLI_DATA_FLAGS.items():  # the fix hints name CLI flags
            shown = shown.replace(flag, field)
        more = f" (and {len(problems) - 1} more problem(s))" if len(problems) > 1 else ""
        error = {"code": FILE_PARAMS[param][1], "message": f"{shown}{more}", "param": param}
        return error, None
    return None, splits


def _readable(problem: Problem, file_id: str, names: dict[str, str]) -> str:
    """A problem with the stored path replaced by ``file-id (name)``."""
    name = names.get(Path(problem.file).name, "") if problem.file else ""
    label = f"{file_id} ({name})" if name else file_id
    text = str(dataclasses.replace(problem, file=label))
    return text


def get_job(session: Session, project: str, job_id: str) -> Job:
    """A project's job or 404."""
    job = session.get(Job, job_id)
    if job is None or job.project != project:
        raise not_found("fine-tuning job", job_id, "fine_tuning_job_id")
    return job


def list_jobs(
    session: Session,
    project: str,
    after: str | None,
    limit: int,
    metadata: dict[str, str] | None = None,
) -> tuple[list[Job], bool]:
    """A page of jobs, newest first; ``after`` is the last id of the previous page.

    ``metadata`` keeps only the jobs whose metadata has every given key with that value.
    """
    q = select(Job).where(Job.project == project).order_by(Job.created_at.desc(), Job.id.desc())
    for key, value in (metadata or {}).items():
        q = q.where(Job.metadata_[key].as_string() == value)
    if after:
        anchor = session.get(Job, after)
        if anchor is None or anchor.project != project:
            return [], False
        q = q.where(
            (Job.created_at < anchor.created_at)
            | ((Job.created_at == anchor.created_at) & (Job.id < anchor.id))
        )
    rows = list(session.scalars(q.limit(limit + 1)))
    return rows[:limit], len(rows) > limit


def change_state(store: JobStore, session: Session, project: str, job_id: str, action: str) -> Job:
    """Cancel, pause or resume; 409 when the job's status does not allow it.

    A running job's worker notices within a second (its lease renewal stops matching) and
    stops the training process.
    """
    allowed, target = ACTIONS[action]
    job = get_job(session, project, job_id)
    if job.status not in allowed:
        raise APIError(
            409,
            f"Cannot {action} job {job_id}: it is {job.status} "
            f"(allowed from: {', '.join(sorted(allowed))}).",
            code="invalid_state",
            param="fine_tuning_job_id",
        )
    previous = store.transition(job, target)
    if target == JobStatus.CANCELLED:
        job.estimated_finish = None
    if action == "pause" and previous == JobStatus.RUNNING:
        # The user stopped the attempt; it did not fail, so it does not count toward
        # max_attempts (as when a worker shuts down), or a few pauses would fail the job.
        job.attempts = max(job.attempts - 1, 0)
    messages = {
        "cancel": "Fine-tuning job cancelled",
        "pause": "Fine-tuning job paused; resume continues from the last checkpoint",
        "resume": "Fine-tuning job resumed; queued",
    }
    store.add_event(job.id, f"{messages[action]} (was {previous})", session=session)
    session.commit()
    return job


def event_object(row: JobEvent) -> dict[str, Any]:
    """The OpenAI ``FineTuningJobEvent`` shape."""
    return {
        "id": row.id,
        "object": "fine_tuning.job.event",
        "created_at": row.created_at,
        "level": row.level,
        "message": row.message,
        "data": row.data,
        "type": row.type,
    }


def list_events(
    session: Session, job_id: str, after: str | None, limit: int
) -> tuple[list[JobEvent], bool]:
    """A page of events, newest first; ``after`` is the last id of the previous page."""
    q = select(JobEvent).where(JobEvent.job_id == job_id).order_by(JobEvent.seq.desc())
    if after:
        anchor = session.scalar(
            select(JobEvent.seq).where(JobEvent.id == after, JobEvent.job_id == job_id)
        )
        if anchor is None:
            return [], False
        q = q.where(JobEvent.seq < anchor)
    rows = list(session.scalars(q.limit(limit + 1)))
    return rows[:limit], len(rows) > limit


def checkpoint_object(row: Checkpoint, job: Job) -> dict[str, Any]:
    """The OpenAI ``FineTuningJobCheckpoint`` shape."""
    return {
        "id": row.id,
        "object": "fine_tuning.job.checkpoint",
        "created_at": row.created_at,
        "fine_tuned_model_checkpoint": f"{fine_tuned_model_id(job)}:ckpt-step-{row.step_number}",
        "fine_tuning_job_id": job.id,
        "metrics": row.metrics,
        "step_number": row.step_number,
    }


def kept_checkpoint_steps(state: AppState, job: Job) -> list[int] | None:
    """Steps of the checkpoints a finished job kept as models (newest first), or None
    while it has no bundle (every checkpoint recorded so far is listed then)."""
    bundle = state.layout.bundle(job.id)
    if job.fine_tuned_model is None or not bundle.is_dir():
        return None
    return checkpoint_steps(bundle)


def list_checkpoints(
    session: Session, job_id: str, after: str | None, limit: int, steps: list[int] | None = None
) -> tuple[list[Checkpoint], bool]:
    """A page of checkpoints, newest first; one per step (the latest record of a step a
    resumed attempt saved again), only ``steps`` when given."""
    latest = select(func.max(Checkpoint.seq)).where(Checkpoint.job_id == job_id)
    q = select(Checkpoint).where(Checkpoint.seq.in_(latest.group_by(Checkpoint.step_number)))
    if steps is not None:
        q = q.where(Checkpoint.step_number.in_(steps))
    q = q.order_by(Checkpoint.seq.desc())
    if after:
        anchor = session.scalar(select(Checkpoint.seq).where(Checkpoint.id == after))
        if anchor is None:
            return [], False
        q = q.where(Checkpoint.seq < anchor)
    rows = list(session.scalars(q.limit(limit + 1)))
    return rows[:limit], len(rows) > limit
