"""backups: a service's backups and its backup configuration

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-05 12:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import keyhouse.db

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "backups",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("service_id", sa.Uuid(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("type", sa.String(length=16), nullable=False),
        sa.Column("base_id", sa.Uuid(), nullable=True),
        sa.Column("chain_id", sa.Uuid(), nullable=True),
        sa.Column("trigger", sa.String(length=16), nullable=False),
        sa.Column("runner", sa.String(length=128), nullable=True),
        sa.Column("requested_at", keyhouse.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("started_at", keyhouse.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("finished_at", keyhouse.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("error", sa.String(length=1024), nullable=True),
        sa.ForeignKeyConstraint(
            ["service_id"],
            ["services.id"],
            name=op.f("fk_backups_service_id_services"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_backups")),
    )
    with op.batch_alter_table("backups", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_backups_service_id"), ["service_id"], unique=False)
    with op.batch_alter_table("services", schema=None) as batch_op:
        batch_op.add_column(sa.Column("backup_period_hours", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("backup_retention_hours", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("backup_start_time", sa.String(length=5), nullable=True))
        batch_op.add_column(sa.Column("backup_note", sa.String(length=512), nullable=True))
        batch_op.add_column(sa.Column("restore_from", sa.Uuid(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("services", schema=None) as batch_op:
        batch_op.drop_column("restore_from")
        batch_op.drop_column("backup_note")
        batch_op.drop_column("backup_start_time")
        batch_op.drop_column("backup_retention_hours")
        batch_op.drop_column("backup_period_hours")
    with op.batch_alter_table("backups", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_backups_service_id"))
    op.drop_table("backups")
