"""jobs: test file, data options, integrations

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30 04:00:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("test_file", sa.String(length=40), nullable=True))
        batch_op.add_column(sa.Column("data_options", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("integrations", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_column("integrations")
        batch_op.drop_column("data_options")
        batch_op.drop_column("test_file")
