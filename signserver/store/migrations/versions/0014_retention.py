"""retention: audit_exports (segments of the log written to files) and audit_anchor (where the live
chain starts once exported records were removed)

Revision ID: 0014
Revises: 0013
"""

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "audit_exports",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("first_seq", sa.BigInteger(), nullable=False),
        sa.Column("last_seq", sa.BigInteger(), nullable=False),
        sa.Column("last_hash", sa.String(length=64), nullable=False),
        sa.Column("seal_number", sa.BigInteger(), nullable=False),
        sa.Column("seal_digest", sa.String(length=64), nullable=False),
        sa.Column("lifecycle_seq", sa.BigInteger(), nullable=True),
        sa.Column("lifecycle_event", sa.String(length=64), nullable=True),
        sa.Column("file_sha256", sa.String(length=64), nullable=False),
        sa.Column("file_name", sa.String(length=1000), nullable=False),
        sa.Column("exported_at", sa.BigInteger(), nullable=False),
    )
    op.create_index("ix_audit_exports_last_seq", "audit_exports", ["last_seq"])
    op.create_table(
        "audit_anchor",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.Column("seal_number", sa.BigInteger(), nullable=False),
        sa.Column("seal_digest", sa.String(length=64), nullable=False),
        sa.Column("lifecycle_seq", sa.BigInteger(), nullable=True),
        sa.Column("lifecycle_event", sa.String(length=64), nullable=True),
        sa.Column("export_sha256", sa.String(length=64), nullable=False),
        sa.Column("pruned_at", sa.BigInteger(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("audit_anchor")
    op.drop_index("ix_audit_exports_last_seq", table_name="audit_exports")
    op.drop_table("audit_exports")
