"""certificates: an index on (status, issued_at, serial), so that ListCertificates of one status
pages in the order issued through the certificates of that status alone: the few revoked among a
million are found without reading the others.

Revision ID: 0027
Revises: 0026
"""

from alembic import op

revision = "0027"
down_revision = "0026"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_certificates_status_issued_at_serial", "certificates", ["status", "issued_at", "serial"])


def downgrade() -> None:
    op.drop_index("ix_certificates_status_issued_at_serial", table_name="certificates")
