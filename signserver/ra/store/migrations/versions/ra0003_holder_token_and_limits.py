"""The holder's token (hashed), the limits on e-mail codes, registry lookups and face comparisons,
at most one open renewal per certificate, and outbox messages that expire unsent.

Revision ID: ra0003
Revises: ra0002
"""

import sqlalchemy as sa
from alembic import op

revision = "ra0003"
down_revision = "ra0002"
branch_labels = None
depends_on = None

OPEN_RENEWAL = sa.text("state NOT IN ('activated', 'completed_in_person', 'refused')")


def upgrade() -> None:
    with op.batch_alter_table("ra_renewals") as batch:
        batch.add_column(sa.Column("holder_token_hash", sa.String(64), nullable=False, server_default=""))
        batch.add_column(sa.Column("holder_token_expires", sa.BigInteger))
        batch.add_column(sa.Column("registry_lookups", sa.Integer, nullable=False, server_default="0"))
        batch.add_column(sa.Column("face_comparisons", sa.Integer, nullable=False, server_default="0"))
    # Fails when two renewals of one certificate are already open: close one of them first.
    op.create_index("ux_ra_renewals_open_serial", "ra_renewals", ["serial"], unique=True,
                    sqlite_where=OPEN_RENEWAL, postgresql_where=OPEN_RENEWAL)
    op.create_table(
        "ra_code_limits",
        sa.Column("renewal_id", sa.String(32), sa.ForeignKey("ra_renewals.id"), nullable=False),
        sa.Column("address", sa.String(320), nullable=False),
        sa.Column("codes_sent", sa.Integer, nullable=False),
        sa.Column("failures", sa.Integer, nullable=False),
        sa.Column("blocked_at", sa.BigInteger),
        sa.PrimaryKeyConstraint("renewal_id", "address", name="pk_ra_code_limits"),
    )
    with op.batch_alter_table("ra_outbox") as batch:
        batch.add_column(sa.Column("discard_after", sa.BigInteger))


def downgrade() -> None:
    with op.batch_alter_table("ra_outbox") as batch:
        batch.drop_column("discard_after")
    op.drop_table("ra_code_limits")
    op.drop_index("ux_ra_renewals_open_serial", "ra_renewals")
    with op.batch_alter_table("ra_renewals") as batch:
        for column in ("face_comparisons", "registry_lookups", "holder_token_expires", "holder_token_hash"):
            batch.drop_column(column)
