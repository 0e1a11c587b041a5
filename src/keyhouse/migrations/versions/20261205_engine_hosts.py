"""engine hosts: machines running keyhouse agent, their join tokens, each service's host, and
the scheduler's lease

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-05 15:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import keyhouse.db

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "host_tokens",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", keyhouse.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", keyhouse.db.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_host_tokens")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_host_tokens_token_hash")),
    )
    op.create_table(
        "engine_hosts",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("token_id", sa.Uuid(), nullable=True),
        sa.Column("labels", sa.JSON(), nullable=False),
        sa.Column("memory_gb", sa.Integer(), nullable=False),
        sa.Column("channel", sa.String(length=300), nullable=False),
        sa.Column("advertise", sa.String(length=255), nullable=False),
        sa.Column("ca_pem", sa.Text(), nullable=False),
        sa.Column("version", sa.String(length=64), nullable=False),
        sa.Column("schedulable", sa.Boolean(), nullable=False),
        sa.Column("joined_at", keyhouse.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("last_seen", keyhouse.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_engine_hosts")),
    )
    op.create_table(
        "scheduler_leases",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("holder", sa.String(length=128), nullable=False),
        sa.Column("expires_at", keyhouse.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_scheduler_leases")),
    )
    with op.batch_alter_table("services", schema=None) as batch_op:
        batch_op.add_column(sa.Column("host_id", sa.Uuid(), nullable=True))
        batch_op.create_index(batch_op.f("ix_services_host_id"), ["host_id"], unique=False)
        batch_op.create_foreign_key(
            batch_op.f("fk_services_host_id_engine_hosts"), "engine_hosts", ["host_id"], ["id"]
        )
        batch_op.add_column(sa.Column("moving_to", sa.Uuid(), nullable=True))
        batch_op.add_column(
            sa.Column("generation", sa.Integer(), nullable=False, server_default="0")
        )
        batch_op.add_column(sa.Column("assigned", sa.String(length=64), nullable=True))
        batch_op.add_column(
            sa.Column("observed_generation", sa.Integer(), nullable=False, server_default="0")
        )
        batch_op.create_foreign_key(
            batch_op.f("fk_services_moving_to_engine_hosts"), "engine_hosts", ["moving_to"], ["id"]
        )


def downgrade() -> None:
    with op.batch_alter_table("services", schema=None) as batch_op:
        batch_op.drop_constraint(
            batch_op.f("fk_services_moving_to_engine_hosts"), type_="foreignkey"
        )
        batch_op.drop_column("moving_to")
        batch_op.drop_column("observed_generation")
        batch_op.drop_column("assigned")
        batch_op.drop_column("generation")
        batch_op.drop_constraint(batch_op.f("fk_services_host_id_engine_hosts"), type_="foreignkey")
        batch_op.drop_index(batch_op.f("ix_services_host_id"))
        batch_op.drop_column("host_id")
    op.drop_table("scheduler_leases")
    op.drop_table("engine_hosts")
    op.drop_table("host_tokens")
