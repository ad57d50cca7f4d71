"""Alembic environment: runs on the connection that ``tuneforge.jobs.db.migrate`` passes."""

from alembic import context

from tuneforge.jobs.tables import Base

config = context.config
target_metadata = Base.metadata
connection = config.attributes.get("connection")
if connection is None:  # pragma: no cover - `alembic` CLI use: build an engine from the URL
    from tuneforge.jobs.db import make_engine

    url = config.get_main_option("sqlalchemy.url")
    if url is None:
        raise SystemExit("set sqlalchemy.url in alembic.ini (or run `tuneforge serve`)")
    engine = make_engine(url)
    with engine.begin() as connection:
        context.configure(connection=connection, target_metadata=target_metadata)
        with context.begin_transaction():
            context.run_migrations()
else:
    context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()
