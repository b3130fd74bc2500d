"""The renewal's application document: the PDF the RA generates, and the one the holder signed.

Revision ID: ra0002
Revises: ra0001
"""

import sqlalchemy as sa
from alembic import op

revision = "ra0002"
down_revision = "ra0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("ra_renewals") as batch:
        batch.add_column(sa.Column("application_sha256", sa.String(64), nullable=False, server_default=""))
    op.create_table(
        "ra_applications",
        sa.Column("renewal_id", sa.String(32), sa.ForeignKey("ra_renewals.id"), primary_key=True),
        sa.Column("agreed_at", sa.BigInteger, nullable=False),
        sa.Column("document", sa.LargeBinary, nullable=False),
        sa.Column("document_sha256", sa.String(64), nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("signed_document", sa.LargeBinary),
        sa.Column("signed_sha256", sa.String(64), nullable=False),
        sa.Column("signed_at", sa.BigInteger),
        sa.Column("signed_with", sa.String(32), nullable=False),
        sa.Column("signer", sa.Text, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("ra_applications")
    with op.batch_alter_table("ra_renewals") as batch:
        batch.drop_column("application_sha256")
