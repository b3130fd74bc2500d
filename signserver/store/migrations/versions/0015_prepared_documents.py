"""prepared_documents: the two-step flow's prepared documents as data, so that CompleteSignature
finishes on any worker of any node (the prepared PDF is a file in the spool directory the row names).

Revision ID: 0015
Revises: 0014
"""

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "prepared_documents",
        sa.Column("id_hash", sa.String(length=64), nullable=False),
        sa.Column("application_id", sa.Integer(), nullable=False),
        sa.Column("credential_id", sa.String(length=64), nullable=False),
        sa.Column("certificate_sha256", sa.LargeBinary(), nullable=False),
        sa.Column("level", sa.String(length=8), nullable=False),
        sa.Column("md_algorithm", sa.String(length=16), nullable=False),
        sa.Column("document_digest", sa.LargeBinary(), nullable=False),
        sa.Column("reserved_start", sa.BigInteger(), nullable=False),
        sa.Column("reserved_end", sa.BigInteger(), nullable=False),
        sa.Column("signing_time", sa.BigInteger(), nullable=False),
        sa.Column("post_sign", sa.Text(), nullable=True),
        sa.Column("file_name", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("expires_at", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["application_id"], ["applications.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["credential_id"], ["credentials.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id_hash"),
        sa.UniqueConstraint("file_name"),
    )
    op.create_index("ix_prepared_documents_application_id", "prepared_documents", ["application_id"])
    op.create_index("ix_prepared_documents_expires_at", "prepared_documents", ["expires_at"])


def downgrade() -> None:
    op.drop_index("ix_prepared_documents_expires_at", table_name="prepared_documents")
    op.drop_index("ix_prepared_documents_application_id", table_name="prepared_documents")
    op.drop_table("prepared_documents")
