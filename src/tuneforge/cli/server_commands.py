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

# Every option defaults to None (= not given): the server's Settings resolve each value as
# flag > environment (TUNEFORGE_*) > config file > default, so a default lives only there.
DataDirOpt = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        help="Data directory: uploaded files, bundles, jobs and (by default) the SQLite file "
        "(env TUNEFORGE_DATA_DIR; default: tuneforge-data).",
        show_default=False,
    ),
]
DatabaseOpt = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        help="SQLAlchemy URL (env TUNEFORGE_DATABASE_URL; default: sqlite file "
        "DATA_DIR/tuneforge.db).",
        show_default=False,
    ),
]
ConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--config",
        help="Settings file (YAML or JSON, keys as in docs/api.md) (env TUNEFORGE_CONFIG); "
        "environment variables and flags override it.",
        show_default=False,
        metavar="FILE",
    ),
]


def _base_models(pairs: list[str] | None) -> dict[str, str] | None:
    if not pairs:
        return None
    table = {}
    for pair in pairs:
        name, sep, spec = pair.partition("=")
        if not sep or not name or not spec:
            raise InputError(f"--base-model takes NAME=PATH_OR_HUB_ID, got {pair!r}")
        table[name] = spec
    return table


def serve_settings(
    *,
    config: Path | None = None,
    max_upload_mb: float | None = None,
    base_model: list[str] | None = None,
    **flags: object,
):
    """The settings ``serve`` runs with (flags given > environment > config file > default)."""
    from tuneforge.server.settings import load_settings

    upload = None if max_upload_mb is None else int(max_upload_mb * 1024 * 1024)
    return load_settings(
        {
            **flags,
            "config_file": config,
            "max_upload_bytes": upload,
            "base_models": _base_models(base_model),
        }
    )


def serve(
    host: Annotated[
        str | None, typer.Option(help="Interface to bind (env TUNEFORGE_HOST; default: 127.0.0.1).")
    ] = None,
    port: Annotated[
        int | None, typer.Option(help="TCP port (env TUNEFORGE_PORT; default: 8000).")
    ] = None,
    data_dir: DataDirOpt = None,
    database_url: DatabaseOpt = None,
    workers: Annotated[
        int | None,
        typer.Option(
            help="Local job workers, 0: jobs wait for `tuneforge worker` "
            "(env TUNEFORGE_WORKERS; default: 1)."
        ),
    ] = None,
    base_model: Annotated[
        list[str] | None,
        typer.Option(
            help="Extra base model NAME=PATH_OR_HUB_ID (repeatable) (env TUNEFORGE_BASE_MODELS, "
            "JSON)."
        ),
    ] = None,
    max_upload_mb: Annotated[
        float | None,
        typer.Option(
            help="Upload size limit in MiB (env TUNEFORGE_MAX_UPLOAD_BYTES, in bytes; "
            "default: 512 MiB)."
        ),
    ] = None,
    rate_limit: Annotated[
        int | None,
        typer.Option(
            help="Requests per minute per API key to training, files, jobs, models and admin "
            "endpoints, 0: unlimited (env TUNEFORGE_RATE_LIMIT_PER_MINUTE; default: 600)."
        ),
    ] = None,
    inference_rate_limit: Annotated[
        int | None,
        typer.Option(
            help="Requests per minute per API key to /v1/chat/completions and /v1/classify, "
            "0: unlimited (env TUNEFORGE_INFERENCE_RATE_LIMIT_PER_MINUTE; default: 60000)."
        ),
    ] = None,
    lease_seconds: Annotated[
        float | None,
        typer.Option(
            help="Job lease; a dead worker's job is retried after it "
            "(env TUNEFORGE_LEASE_SECONDS; default: 30)."
        ),
    ] = None,
    log_level: Annotated[
        str | None, typer.Option(help="uvicorn log level (env TUNEFORGE_LOG_LEVEL; default: info).")
    ] = None,
    config: ConfigOpt = None,
) -> None:
    """Run the API server (OpenAI-compatible fine-tuning and inference) with local workers.

    Every setting is also an environment variable TUNEFORGE_<NAME> and a key of --config;
    a flag beats the environment, the environment beats the file.
    """
    import uvicorn

    from tuneforge.jobs.db import check_database
    from tuneforge.server.app import create_app

    settings = serve_settings(
        config=config,
        max_upload_mb=max_upload_mb,
        base_model=base_model,
        host=host,
        port=port,
        data_dir=data_dir,
        database_url=database_url,
        workers=workers,
        rate_limit_per_minute=rate_limit,
        inference_rate_limit_per_minute=inference_rate_limit,
        lease_seconds=lease_seconds,
        log_level=log_level,
    )
    # Refuse a database file that is not tuneforge's before uvicorn starts (exit 2 with the
    # reason); the app checks again when it migrates in its lifespan.
    check_database(settings.resolved_database_url())
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    print(
        f"serving on http://{settings.host}:{settings.port} (data {settings.data_dir}, "
        f"database {settings.masked_database_url()}, {settings.workers} worker(s))",
        file=sys.stderr,
        flush=True,
    )
    uvicorn.run(
        create_app(settings), host=settings.host, port=settings.port, log_level=settings.log_level
    )


def worker(
    data_dir: DataDirOpt = None,
    database_url: DatabaseOpt = None,
    lease_seconds: Annotated[
        float | None,
        typer.Option(
            help="Job lease; renewed every third of it while training "
            "(env TUNEFORGE_LEASE_SECONDS; default: 30)."
        ),
    ] = None,
    max_jobs: Annotated[
        int | None, typer.Option(help="Exit after this many jobs (default: run until stopped).")
    ] = None,
    config: ConfigOpt = None,
) -> None:
    """Run a job worker against the server's database and data directory."""
    from tuneforge.jobs.db import make_engine, migrate
    from tuneforge.jobs.worker import Worker, WorkerSettings
    from tuneforge.server.settings import load_settings

    settings = load_settings(
        {
            "data_dir": data_dir,
            "database_url": database_url,
            "lease_seconds": lease_seconds,
            "config_file": config,
        }
    )
    url = settings.resolved_database_url()
    engine = make_engine(url)
    migrate(engine)
    w = Worker(
        engine,
        url,
        settings.data_dir.resolve(),
        WorkerSettings(
            lease_seconds=settings.lease_seconds, min_free_bytes=settings.min_free_bytes()
        ),
    )
    signal.signal(signal.SIGTERM, lambda *_: w.stop())
    signal.signal(signal.SIGINT, lambda *_: w.stop())
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    print(f"worker {w.id} polling {settings.masked_database_url()}", file=sys.stderr, flush=True)
    w.run(max_jobs=max_jobs)


def _settings(data_dir: Path | None, database_url: str | None, config: Path | None):
    from tuneforge.server.settings import load_settings

    return load_settings(
        {"data_dir": data_dir, "database_url": database_url, "config_file": config}
    )


def _sessions(data_dir: Path | None, database_url: str | None, config: Path | None = None):
    from tuneforge.jobs.db import make_engine, migrate, session_factory

    engine = make_engine(_settings(data_dir, database_url, config).resolved_database_url())
    migrate(engine)
    return session_factory(engine)


@keys_app.command("create")
def keys_create(
    project: Annotated[str, typer.Option(help="The project the key acts for.")],
    scopes: Annotated[
        str, typer.Option(help="Comma-separated: train, infer, admin.")
    ] = "train,infer",
    name: Annotated[str, typer.Option(help="A note to recognise the key by.")] = "",
    data_dir: DataDirOpt = None,
    database_url: DatabaseOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Create a key; it is printed once, as the last line of stdout, and stored hashed."""
    from tuneforge.server.auth import create_key

    with _sessions(data_dir, database_url, config).begin() as session:
        row, secret = create_key(session, project, scopes.split(","), name)
        key_id, key_scopes = row.id, row.scopes
    print(f"created {key_id} for project {project} with scopes {key_scopes}", file=sys.stderr)
    print(secret, flush=True)


@keys_app.command("list")
def keys_list(
    project: Annotated[str | None, typer.Option(help="Only this project's keys.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines instead of a table.")] = False,
    data_dir: DataDirOpt = None,
    database_url: DatabaseOpt = None,
    config: ConfigOpt = None,
) -> None:
    """List keys (id, project, scopes, prefix, state); secrets are never shown."""
    from sqlalchemy import select

    from tuneforge.jobs.tables import ApiKey

    with _sessions(data_dir, database_url, config)() as session:
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
    data_dir: DataDirOpt = None,
    database_url: DatabaseOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Revoke a key: requests with it get 401 from then on."""
    from tuneforge.server.auth import revoke_key

    with _sessions(data_dir, database_url, config).begin() as session:
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
    data_dir: DataDirOpt = None,
    database_url: DatabaseOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Check a bundle, copy it into the server's data directory and register it as a model.

    Refused (exit 2, nothing left behind): links of any kind, code, pickle weights,
    ``auto_map``, broken weights, a malformed manifest, an adapter over a base model the
    server does not host, a bundle that does not load and run.
    """
    import os

    from tuneforge.jobs.layout import DataDir
    from tuneforge.server.services.models import check_project_name, import_bundle
    from tuneforge.server.state import base_model_table

    check_project_name(project)
    settings = _settings(data_dir, database_url, config)
    model_id = name if name is not None else Path(os.path.abspath(bundle)).name
    import_bundle(
        DataDir(settings.data_dir.resolve()),
        _sessions(settings.data_dir, settings.database_url),
        base_model_table(settings),
        bundle,
        project,
        model_id,
        backend=settings.backend,
        max_accuracy_drop=settings.max_accuracy_drop,
    )
    print(model_id)
