"""``tuneforge serve``, ``tuneforge worker`` and ``tuneforge keys``: thin over server/ and jobs/."""

from __future__ import annotations

import json
import logging
import signal
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table as RichTable

from tuneforge.errors import InputError

keys_app = typer.Typer(help="Create, list and revoke API keys.", no_args_is_help=True)
models_app = typer.Typer(help="Host bundles trained with `tuneforge train`.", no_args_is_help=True)
out = Console()

DataDirOpt = Annotated[
    Path,
    typer.Option(
        "--data-dir",
        envvar="TUNEFORGE_DATA_DIR",
        help="Data directory: uploaded files, bundles, jobs and (by default) the SQLite file.",
    ),
]
DatabaseOpt = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        envvar="TUNEFORGE_DATABASE_URL",
        help="SQLAlchemy URL (default: sqlite file DATA_DIR/tuneforge.db).",
    ),
]
DEFAULT_DATA_DIR = Path("tuneforge-data")


def _base_models(pairs: list[str]) -> dict[str, str]:
    table = {}
    for pair in pairs:
        name, sep, spec = pair.partition("=")
        if not sep or not name or not spec:
            raise InputError(f"--base-model takes NAME=PATH_OR_HUB_ID, got {pair!r}")
        table[name] = spec
    return table


def serve(
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    data_dir: DataDirOpt = DEFAULT_DATA_DIR,
    database_url: DatabaseOpt = None,
    workers: Annotated[
        int, typer.Option(help="Local job workers (0: jobs wait for `tuneforge worker`).")
    ] = 1,
    base_model: Annotated[
        list[str] | None,
        typer.Option(help="Extra base model NAME=PATH_OR_HUB_ID (repeatable)."),
    ] = None,
    max_upload_mb: Annotated[float, typer.Option(help="Upload size limit in MiB.")] = 512,
    rate_limit: Annotated[
        int, typer.Option(help="Requests per minute per API key (0: unlimited).")
    ] = 600,
    lease_seconds: Annotated[
        float, typer.Option(help="Job lease; a dead worker's job is retried after it.")
    ] = 30.0,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "info",
) -> None:
    """Run the API server (OpenAI-compatible fine-tuning and inference) with local workers."""
    import uvicorn

    from tuneforge.server.app import create_app
    from tuneforge.server.settings import Settings

    settings = Settings(
        data_dir=data_dir,
        database_url=database_url,
        workers=workers,
        base_models=_base_models(base_model or []),
        max_upload_bytes=int(max_upload_mb * 1024 * 1024),
        rate_limit_per_minute=rate_limit,
        lease_seconds=lease_seconds,
    )
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    uvicorn.run(create_app(settings), host=host, port=port, log_level=log_level)


def worker(
    data_dir: DataDirOpt = DEFAULT_DATA_DIR,
    database_url: DatabaseOpt = None,
    lease_seconds: Annotated[
        float, typer.Option(help="Job lease; renewed every third of it while training.")
    ] = 30.0,
    max_jobs: Annotated[
        int | None, typer.Option(help="Exit after this many jobs (default: run until stopped).")
    ] = None,
) -> None:
    """Run a job worker against the server's database and data directory."""
    from tuneforge.jobs.db import make_engine, migrate, sqlite_url
    from tuneforge.jobs.worker import Worker, WorkerSettings

    url = database_url or sqlite_url(data_dir / "tuneforge.db")
    engine = make_engine(url)
    migrate(engine)
    w = Worker(engine, url, data_dir.resolve(), WorkerSettings(lease_seconds=lease_seconds))
    signal.signal(signal.SIGTERM, lambda *_: w.stop())
    signal.signal(signal.SIGINT, lambda *_: w.stop())
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    print(f"worker {w.id} polling {url}", file=sys.stderr, flush=True)
    w.run(max_jobs=max_jobs)


def _sessions(data_dir: Path, database_url: str | None):
    from tuneforge.jobs.db import make_engine, migrate, session_factory, sqlite_url

    engine = make_engine(database_url or sqlite_url(data_dir / "tuneforge.db"))
    migrate(engine)
    return session_factory(engine)


@keys_app.command("create")
def keys_create(
    project: Annotated[str, typer.Option(help="The project the key acts for.")],
    scopes: Annotated[
        str, typer.Option(help="Comma-separated: train, infer, admin.")
    ] = "train,infer",
    name: Annotated[str, typer.Option(help="A note to recognise the key by.")] = "",
    data_dir: DataDirOpt = DEFAULT_DATA_DIR,
    database_url: DatabaseOpt = None,
) -> None:
    """Create a key; it is printed once, as the last line of stdout, and stored hashed."""
    from tuneforge.server.auth import create_key

    with _sessions(data_dir, database_url).begin() as session:
        row, secret = create_key(session, project, scopes.split(","), name)
        key_id, key_scopes = row.id, row.scopes
    print(f"created {key_id} for project {project} with scopes {key_scopes}", file=sys.stderr)
    print(secret, flush=True)


@keys_app.command("list")
def keys_list(
    project: Annotated[str | None, typer.Option(help="Only this project's keys.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines instead of a table.")] = False,
    data_dir: DataDirOpt = DEFAULT_DATA_DIR,
    database_url: DatabaseOpt = None,
) -> None:
    """List keys (id, project, scopes, prefix, state); secrets are never shown."""
    from sqlalchemy import select

    from tuneforge.jobs.tables import ApiKey

    with _sessions(data_dir, database_url)() as session:
        q = select(ApiKey).order_by(ApiKey.created_at)
        if project:
            q = q.where(ApiKey.project == project)
        rows = list(session.scalars(q))
    records = [
        {
            "id": r.id,
            "project": r.project,
            "name": r.name,
            "scopes": r.scopes,
            "prefix": r.prefix,
            "created_at": r.created_at,
            "revoked": r.revoked_at is not None,
        }
        for r in rows
    ]
    if as_json:
        for rec in records:
            print(json.dumps(rec))
        return
    table = RichTable("id", "project", "name", "scopes", "prefix", "revoked")
    for rec in records:
        table.add_row(
            rec["id"],
            rec["project"],
            rec["name"],
            rec["scopes"],
            rec["prefix"] + "…",
            "yes" if rec["revoked"] else "",
        )
    out.print(table)


@keys_app.command("revoke")
def keys_revoke(
    key_id: Annotated[str, typer.Argument(help="The key's id (from `keys list`).")],
    data_dir: DataDirOpt = DEFAULT_DATA_DIR,
    database_url: DatabaseOpt = None,
) -> None:
    """Revoke a key: requests with it get 401 from then on."""
    from tuneforge.server.auth import revoke_key

    with _sessions(data_dir, database_url).begin() as session:
        if not revoke_key(session, key_id):
            raise InputError(f"no API key with id {key_id!r}; see `tuneforge keys list`")
    print(f"revoked {key_id}")


@models_app.command("import")
def models_import(
    bundle: Annotated[Path, typer.Argument(help="A bundle written by `tuneforge train`.")],
    project: Annotated[str, typer.Option(help="The project that may use the model.")],
    name: Annotated[
        str | None, typer.Option(help="Model id to serve it as (default: the folder name).")
    ] = None,
    data_dir: DataDirOpt = DEFAULT_DATA_DIR,
    database_url: DatabaseOpt = None,
) -> None:
    """Copy a bundle into the server's data directory and register it as a model."""
    import re
    import shutil
    import time

    from tuneforge.bundle import read_bundle
    from tuneforge.jobs.ids import new_id
    from tuneforge.jobs.layout import DataDir
    from tuneforge.jobs.tables import FineTunedModel

    info = read_bundle(bundle)
    model_id = name or bundle.resolve().name
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,200}", model_id):
        raise InputError(f"invalid model id {model_id!r}: use letters, digits, '_.:-'")
    sessions = _sessions(data_dir, database_url)
    layout = DataDir(data_dir.resolve())
    layout.create()
    with sessions() as session:
        if session.get(FineTunedModel, model_id) is not None:
            raise InputError(f"a model {model_id!r} exists already; pick another --name")
    folder = new_id("import-", 12)
    dest = layout.models / folder
    tmp = layout.models / f".{folder}.partial"
    shutil.copytree(info.path, tmp, ignore=shutil.ignore_patterns(".*"))
    tmp.rename(dest)
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
    print(model_id)
