"""certificates: an index on (issued_at, serial), the order ListCertificates pages in, so that a page
starts where the previous one ended without reading the rows before it.

Revision ID: 0025
Revises: 0024
"""

from alembic import op

revision = "0025"
down_revision = "0024"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_certificates_issued_at_serial", "certificates", ["issued_at", "serial"])


def downgrade() -> None:
    op.drop_index("ix_certificates_issued_at_serial", table_name="certificates")
