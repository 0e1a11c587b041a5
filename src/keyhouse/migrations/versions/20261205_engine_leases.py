"""engine leases: one process runs each service's engine

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-05 07:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import keyhouse.db

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "engine_leases",
        sa.Column("service_id", sa.Uuid(), nullable=False),
        sa.Column("holder", sa.String(length=128), nullable=False),
        sa.Column("home", sa.String(length=64), nullable=False),
        sa.Column("expires_at", keyhouse.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["service_id"],
            ["services.id"],
            name=op.f("fk_engine_leases_service_id_services"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("service_id", name=op.f("pk_engine_leases")),
    )


def downgrade() -> None:
    op.drop_table("engine_leases")
