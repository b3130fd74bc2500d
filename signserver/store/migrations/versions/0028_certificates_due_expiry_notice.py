"""certificates: a partial index on (status, not_after, serial) of the certificates that have had
no expiry notice, so that the background pass reads the valid ones due a notice, soonest first,
without walking the ones noticed already (tens of thousands within 30 days at a national scale).

Revision ID: 0028
Revises: 0027
"""

import sqlalchemy as sa
from alembic import op

revision = "0028"
down_revision = "0027"
branch_labels = None
depends_on = None

NOT_NOTICED = "expiry_notice_at IS NULL"


def upgrade() -> None:
    op.create_index("ix_certificates_due_expiry_notice", "certificates", ["status", "not_after", "serial"],
                    sqlite_where=sa.text(NOT_NOTICED), postgresql_where=sa.text(NOT_NOTICED))


def downgrade() -> None:
    op.drop_index("ix_certificates_due_expiry_notice", table_name="certificates")
