"""service usage: what each service used, day by day (usageCost)

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-05 13:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "service_usage",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("organization_id", sa.Uuid(), nullable=False),
        sa.Column("service_id", sa.Uuid(), nullable=False),
        sa.Column("service_name", sa.String(length=50), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("compute_seconds", sa.Float(), nullable=False),
        sa.Column("compute_unit_seconds", sa.Float(), nullable=False),
        sa.Column("storage_bytes", sa.BigInteger(), nullable=False),
        sa.Column("backup_bytes", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_service_usage_organization_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_service_usage")),
        sa.UniqueConstraint("service_id", "day", name=op.f("uq_service_usage_service_id")),
    )
    with op.batch_alter_table("service_usage", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_service_usage_organization_id"), ["organization_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("service_usage", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_service_usage_organization_id"))
    op.drop_table("service_usage")
