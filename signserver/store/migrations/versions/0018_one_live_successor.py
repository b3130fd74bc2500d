"""uq_certificates_live_successor: a certificate has at most one successor that is not revoked, so
that two renewals of one certificate running at once cannot both issue one.

A database that already holds two such successors of one certificate is refused with their
serials: an operator revokes the one the holder does not use (reason superseded), then upgrades.

Revision ID: 0018
Revises: 0017
"""

import sqlalchemy as sa
from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None

LIVE_SUCCESSOR = "status = 'valid' AND predecessor_serial IS NOT NULL"


def upgrade() -> None:
    doubled = op.get_bind().execute(sa.text(
        f"SELECT predecessor_serial FROM certificates WHERE {LIVE_SUCCESSOR} "
        "GROUP BY predecessor_serial HAVING COUNT(*) > 1")).scalars().all()
    if doubled:
        raise RuntimeError("certificates renewed twice (revoke one successor of each, then upgrade again): "
                           + ", ".join(sorted(doubled)))
    op.create_index("uq_certificates_live_successor", "certificates", ["predecessor_serial"], unique=True,
                    sqlite_where=sa.text(LIVE_SUCCESSOR), postgresql_where=sa.text(LIVE_SUCCESSOR))


def downgrade() -> None:
    op.drop_index("uq_certificates_live_successor", table_name="certificates")
