"""Models (base and fine-tuned), aliases with promote/rollback, and resolving a model name
for inference."""

from __future__ import annotations

import os
import re
import shutil
import stat
import time
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from tuneforge.bundle import BundleInfo, read_bundle
from tuneforge.errors import InputError
from tuneforge.jobs.ids import new_id
from tuneforge.jobs.layout import DataDir
from tuneforge.jobs.tables import Alias, FineTunedModel
from tuneforge.models.safety import check_safe_tree, file_identity
from tuneforge.recipes.checkpoint_bundles import CHECKPOINTS, checkpoint_bundle
from tuneforge.server.errors import APIError
from tuneforge.server.state import AppState
from tuneforge.server.text_checks import check_no_lone_surrogates

_STARTED = int(time.time())
# ``<fine-tuned model id>:ckpt-step-<N>`` (OpenAI's ``fine_tuned_model_checkpoint``)
CHECKPOINT_ID = re.compile(r"^(?P<model>.+):ckpt-step-(?P<step>[0-9]{1,9})$")


def base_model_objects(state: AppState) -> list[dict[str, Any]]:
    """The base models jobs may fine-tune."""
    return [
        {"id": name, "object": "model", "created": _STARTED, "owned_by": "tuneforge"}
        for name in sorted(state.base_models)
    ]


def model_object(row: FineTunedModel) -> dict[str, Any]:
    """A fine-tuned model's public shape."""
    return {
        "id": row.id,
        "object": "model",
        "created": row.created_at,
        "owned_by": row.project,
        "base_model": row.base_model,
        "job_id": row.job_id,
    }


def list_models(state: AppState, session: Session, project: str) -> list[dict[str, Any]]:
    """Base models, then the project's fine-tuned models (newest first)."""
    rows = session.scalars(
        select(FineTunedModel)
        .where(FineTunedModel.project == project, FineTunedModel.deleted.is_(False))
        .order_by(FineTunedModel.created_at.desc())
    )
    return base_model_objects(state) + [model_object(r) for r in rows]


def get_fine_tuned(session: Session, project: str, model_id: str) -> FineTunedModel | None:
    """A project's fine-tuned model by alias or id, or None.

    The project's aliases come first, and ids are looked up in the project only: another
    project's model can never shadow an alias (model ids are unique across projects, alias
    names only within one).
    """
    alias = _active_alias(session, project, model_id)
    row = session.get(FineTunedModel, alias.model_id if alias is not None else model_id)
    if row is None or row.project != project or row.deleted:
        return None
    return row


def get_checkpoint(
    state: AppState, session: Session, project: str, model_id: str
) -> tuple[FineTunedModel, int, Path] | None:
    """(fine-tuned model row, step, sub-bundle) of a kept checkpoint id, or None."""
    match = CHECKPOINT_ID.match(model_id)
    if match is None:
        return None
    row = session.get(FineTunedModel, match["model"])
    if row is None or row.project != project or row.deleted:
        return None
    path = checkpoint_bundle(state.layout.root / row.bundle, int(match["step"]))
    return (row, int(match["step"]), path) if path is not None else None


def checkpoint_model_object(model_id: str, row: FineTunedModel, step: int) -> dict[str, Any]:
    """A kept checkpoint's public shape (a model of its own)."""
    return {**model_object(row), "id": model_id, "parent": row.id, "step_number": step}


def model_not_found(model_id: str) -> APIError:
    """404 for a model the project cannot see."""
    return APIError(
        404,
        f"The model '{model_id}' does not exist or you do not have access to it.",
        code="model_not_found",
        param="model",
    )


def retrieve_model(
    state: AppState, session: Session, project: str, model_id: str
) -> dict[str, Any]:
    """A base or fine-tuned model, or 404."""
    base = state.resolve_base(model_id)
    if base is not None:
        return {"id": base[0], "object": "model", "created": _STARTED, "owned_by": "tuneforge"}
    row = get_fine_tuned(session, project, model_id)
    if row is None:
        checkpoint = get_checkpoint(state, session, project, model_id)
        if checkpoint is None:
            raise model_not_found(model_id)
        return checkpoint_model_object(model_id, checkpoint[0], checkpoint[1])
    return model_object(row)


def delete_model(state: AppState, session: Session, project: str, model_id: str) -> None:
    """Delete a fine-tuned model and its bundle; base models and aliased models refuse."""
    if state.resolve_base(model_id) is not None:
        raise APIError(
            403,
            f"{model_id} is a base model; only fine-tuned models can be deleted.",
            code="base_model",
            param="model",
        )
    row = session.get(FineTunedModel, model_id)
    if row is None or row.project != project or row.deleted:
        raise model_not_found(model_id)
    aliased = session.scalars(
        select(Alias.name).where(
            Alias.project == project, Alias.model_id == model_id, Alias.active.is_(True)
        )
    ).all()
    if aliased:
        raise APIError(
            409,
            f"{model_id} is the model of alias(es) {', '.join(aliased)}; point them at "
            "another model first.",
            code="model_in_use",
            param="model",
        )
    row.deleted = True
    session.commit()
    state.models.evict(model_id)
    for loaded in state.models.loaded():  # its checkpoints go with it
        if loaded.startswith(f"{model_id}:ckpt-step-"):
            state.models.evict(loaded)
    state.resolved.clear()
    shutil.rmtree(state.layout.root / row.bundle, ignore_errors=True)


def bundle_for(state: AppState, session: Session, project: str, model: str) -> tuple[str, Path]:
    """(model id, bundle path) of a fine-tuned model, alias or kept checkpoint
    (``...:ckpt-step-N``) for inference; 404 otherwise."""
    row = get_fine_tuned(session, project, model)
    if row is None:
        checkpoint = get_checkpoint(state, session, project, model)
        if checkpoint is not None:
            return model, checkpoint[2]
        if state.resolve_base(model) is not None:
            raise APIError(
                400,
                f"{model} is a base model without a classification head; fine-tune it "
                "first and use the fine-tuned model id (or an alias).",
                code="not_a_classifier",
                param="model",
            )
        raise model_not_found(model)
    return row.id, state.layout.root / row.bundle


# ------------------------------------------------------------------ aliases


def _active_alias(session: Session, project: str, name: str) -> Alias | None:
    return session.scalar(
        select(Alias).where(Alias.project == project, Alias.name == name, Alias.active.is_(True))
    )


def _alias_history(session: Session, project: str, name: str) -> tuple[list[Alias], Alias]:
    """An alias's rows, newest first, and the active one; 404 when there is none."""
    rows = list(
        session.scalars(
            select(Alias)
            .where(Alias.project == project, Alias.name == name)
            .order_by(Alias.seq.desc())
        )
    )
    active = next((r for r in rows if r.active), None)
    if active is None:
        raise APIError(404, f"No such alias: {name}", code="not_found", param="name")
    return rows, active


def alias_object(session: Session, project: str, name: str) -> dict[str, Any]:
    """An alias with its history (newest first)."""
    rows, active = _alias_history(session, project, name)
    return {
        "name": name,
        "object": "alias",
        "model": active.model_id,
        "updated_at": active.created_at,
        "history": [r.model_id for r in rows if r.seq < active.seq],
    }


def list_aliases(session: Session, project: str) -> list[dict[str, Any]]:
    """Every active alias of a project."""
    names = session.scalars(
        select(Alias.name).where(Alias.project == project, Alias.active.is_(True)).distinct()
    ).all()
    return [alias_object(session, project, n) for n in sorted(names)]


def promote(session: Session, project: str, name: str, model_id: str) -> dict[str, Any]:
    """Point ``name`` at a fine-tuned model (the previous target stays in the history)."""
    check_no_lone_surrogates(model_id, "model")  # the id goes to the database
    row = session.get(FineTunedModel, model_id)
    if row is None or row.project != project or row.deleted:
        raise model_not_found(model_id)
    current = _active_alias(session, project, name)
    if current is not None:
        if current.model_id == model_id:
            return alias_object(session, project, name)
        current.active = False
    session.add(
        Alias(
            project=project, name=name, model_id=model_id, created_at=int(time.time()), active=True
        )
    )
    session.commit()
    return alias_object(session, project, name)


def rollback(session: Session, project: str, name: str) -> dict[str, Any]:
    """Point ``name`` back at the model it named before; 409 without history."""
    rows, active = _alias_history(session, project, name)
    previous = next(
        (
            r
            for r in rows
            if r.seq < active.seq
            and r.model_id != active.model_id
            and not _deleted(session, r.model_id)
        ),
        None,
    )
    if previous is None:
        raise APIError(
            409,
            f"Alias {name} has no earlier model to roll back to.",
            code="no_history",
            param="name",
        )
    active.active = False
    session.delete(active)  # a rolled-back promotion leaves the history
    previous.active = True
    session.commit()
    return alias_object(session, project, name)


def _deleted(session: Session, model_id: str) -> bool:
    row = session.get(FineTunedModel, model_id)
    return row is None or row.deleted


# ------------------------------------------------------------------ importing bundles

MODEL_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,200}")


def check_project_name(project: str) -> None:
    """Refuse an empty project name, surrounding blanks or control characters.

    Raises:
        InputError: The name is not usable.
    """
    if (
        not project
        or project != project.strip()
        or len(project) > 200
        or any(not ch.isprintable() for ch in project)
    ):
        raise InputError(
            f"--project {project!r} is not a project name: give the (non-empty) project of "
            "the API keys that will use the model, without surrounding blanks or control "
            "characters"
        )


def import_bundle(
    layout: DataDir,
    sessions: sessionmaker[Session],
    base_models: dict[str, str],
    bundle: Path,
    project: str,
    model_id: str,
    *,
    backend: str = "auto",
    max_accuracy_drop: float = 0.01,
) -> Path:
    """Copy a bundle into the data directory and register it as a project's model.

    Nothing in the bundle is trusted: links of any kind are refused (never followed),
    code, pickles, ``auto_map`` and broken weights are refused, the manifest must be
    well-formed with sane values, an adapter's base must be one of ``base_models``, and the
    copy is loaded and run once (a dry run) with the backends the server would use. On any
    failure nothing is left behind: no partial copy, no database row.

    Args:
        layout: The server's data directory.
        sessions: The server's database sessions.
        base_models: The server's base models (id -> spec, as ``base_model_table``).
        bundle: The bundle directory to import.
        project: The project whose keys may use the model.
        model_id: The id to serve it as.
        backend: The server's ``backend`` setting (which export ``auto`` would serve).
        max_accuracy_drop: The server's bound for ``auto``.

    Returns:
        The imported bundle's directory.

    Raises:
        InputError: The first problem found, in one message.
    """
    check_project_name(project)
    if not MODEL_ID.fullmatch(model_id):
        raise InputError(f"invalid model id {model_id!r}: use letters, digits, '_.:-'")
    what = f"bundle {bundle}"
    files = check_safe_tree(bundle, what)  # before a byte is copied
    read_bundle(bundle)
    with sessions() as session:
        if session.get(FineTunedModel, model_id) is not None:
            raise InputError(f"a model {model_id!r} exists already; pick another --name")
    layout.create()
    folder = new_id("import-", 12)
    dest = layout.models / folder
    tmp = layout.models / f".{folder}.partial"
    try:
        _copy_files(bundle, files, tmp, what)
        check_safe_tree(tmp, what)  # what is served is what was checked
        info = _dry_run(tmp, what, base_models, backend, max_accuracy_drop)
        tmp.rename(dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    try:
        with sessions.begin() as session:
            session.add(
                FineTunedModel(
                    id=model_id,
                    project=project,
                    base_model=info.manifest.base_model.name,
                    job_id=folder,
                    bundle=str(dest.relative_to(layout.root)),
                    created_at=int(time.time()),
                )
            )
    except IntegrityError:
        shutil.rmtree(dest, ignore_errors=True)
        raise InputError(f"a model {model_id!r} exists already; pick another --name") from None
    except BaseException:
        shutil.rmtree(dest, ignore_errors=True)
        raise
    return dest


def _copy_files(
    source: Path, files: dict[Path, tuple[int, int, int, int]], target: Path, what: str
) -> None:
    """Copy ``files`` (relative to ``source``, with the ``file_identity`` they had when
    checked) into a new ``target``. No link is followed on the way to a file, and a file
    swapped since it was checked is refused."""
    target.mkdir(parents=True)
    try:
        root = os.open(source, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError as exc:
        raise InputError(f"{what}: cannot open it: {exc.strerror}") from None
    try:
        for rel, identity in files.items():
            out = target / rel
            out.parent.mkdir(parents=True, exist_ok=True)
            try:
                fd = _open_beneath(root, rel)
            except OSError as exc:
                raise InputError(f"{what}: cannot copy {rel}: {exc.strerror}") from None
            with os.fdopen(fd, "rb") as src:
                info = os.fstat(src.fileno())
                if file_identity(info) != identity or not stat.S_ISREG(info.st_mode):
                    raise InputError(f"{what}: {rel} changed while it was being imported")
                with out.open("xb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
    finally:
        os.close(root)


def _open_beneath(root: int, rel: Path) -> int:
    """Open ``rel`` for reading below the directory ``root``, following no link."""
    opened: list[int] = []
    parent = root
    try:
        for part in rel.parts[:-1]:
            parent = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=parent)
            opened.append(parent)
        return os.open(rel.name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=parent)
    finally:
        for fd in opened:
            os.close(fd)


def _dry_run(
    copy: Path, what: str, base_models: dict[str, str], backend: str, max_accuracy_drop: float
) -> BundleInfo:
    """Load the copied bundle as the server would and classify two texts (a short one and
    one as long as the bundle accepts); any failure is an InputError naming the bundle."""
    from tuneforge.inference.export_report import choose_backend
    from tuneforge.inference.loading import check_safe_bundle
    from tuneforge.inference.predictor import Predictor

    def named(message: str) -> str:
        return message.replace(str(copy), what.removeprefix("bundle "))

    try:
        info = read_bundle(copy)
        if info.adapter:
            _check_known_base(info, what, base_models)
        for sub in sorted((copy / CHECKPOINTS).glob("step-*")):  # served as ...:ckpt-step-N
            check_safe_bundle(read_bundle(sub))
        served = choose_backend(copy, max_accuracy_drop) if backend == "auto" else backend
        texts = ["a short text", "word " * info.max_length]
        for name in dict.fromkeys(["torch", served]):
            predictor = Predictor.load(copy, device="cpu", backend=name, threads=1, spin=False)
            probs = predictor.probabilities(texts)
            if probs.shape != (len(texts), len(info.labels)) or not np.isfinite(probs).all():
                raise InputError(
                    f"{what}: its {name} model gives {probs.shape[-1]} scores for "
                    f"{len(info.labels)} labels, or scores that are not numbers"
                )
            predictor.decide(probs)
    except InputError as exc:
        raise InputError(named(str(exc))) from None
    except Exception as exc:  # anything the loaders raise: the bundle cannot be served
        raise InputError(
            f"{what} could not be loaded ({type(exc).__name__}: {named(str(exc))[:300]}); "
            "copy it again from where it was trained"
        ) from None
    return info


def _check_known_base(info: BundleInfo, what: str, base_models: dict[str, str]) -> None:
    """An adapter's base model must be one this server hosts (by spec or directory)."""
    from tuneforge.models.registry import known_base_models, resolve_base_model

    spec = info.manifest.base_model
    target = spec.path or spec.name
    target_dir = Path(target).resolve() if Path(target).is_dir() else None
    for base_spec in base_models.values():
        if target == base_spec:
            return
        if base_spec in known_base_models():
            base_dir = resolve_base_model(base_spec).path.resolve()
        elif Path(base_spec).is_dir():
            base_dir = Path(base_spec).resolve()
        else:
            continue
        if target_dir is not None and target_dir == base_dir:
            return
    raise InputError(
        f"{what} is an adapter over base model {spec.name!r} ({target}), which is not a base "
        f"model of this server ({', '.join(sorted(base_models))}); add that base model to the "
        "server's base_models setting, or import a bundle trained on one of them"
    )
