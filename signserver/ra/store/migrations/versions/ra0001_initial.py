"""The RA's first tables: holders, renewals, e-mail verifications, audit trail, outbox.

Revision ID: ra0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "ra0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "ra_holders",
        sa.Column("account", sa.String(128), primary_key=True),
        sa.Column("id_type", sa.String(32), nullable=False),
        sa.Column("id_number", sa.String(64), nullable=False),
        sa.Column("name", sa.String(256), nullable=False),
        sa.Column("birth_date", sa.String(10), nullable=False),
        sa.Column("emails", sa.Text, nullable=False),
        sa.Column("updated_at", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "ra_renewals",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("serial", sa.String(64), nullable=False),
        sa.Column("account", sa.String(128), nullable=False),
        sa.Column("profile", sa.String(64), nullable=False),
        sa.Column("expires", sa.BigInteger, nullable=False),
        sa.Column("state", sa.String(32), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("subject_name", sa.String(256), nullable=False),
        sa.Column("emails", sa.Text, nullable=False),
        sa.Column("confirmed_by", sa.String(128), nullable=False),
        sa.Column("notice_sent_at", sa.BigInteger),
        sa.Column("consent_reference", sa.String(64), nullable=False),
        sa.Column("consent_at", sa.BigInteger),
        sa.Column("registry_checked_at", sa.BigInteger),
        sa.Column("face_score", sa.Float),
        sa.Column("agreement_at", sa.BigInteger),
        sa.Column("resume_step", sa.String(32), nullable=False),
        sa.Column("activation_reference", sa.String(64), nullable=False),
        sa.Column("new_serial", sa.String(64), nullable=False),
        sa.Column("new_expires", sa.BigInteger),
        sa.Column("help_code", sa.String(16), nullable=False),
        sa.Column("refusal", sa.Text, nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_ra_renewals_serial", "ra_renewals", ["serial"])
    op.create_index("ix_ra_renewals_state", "ra_renewals", ["state"])
    op.create_table(
        "ra_email_verifications",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("renewal_id", sa.String(32), sa.ForeignKey("ra_renewals.id"), nullable=False),
        sa.Column("address", sa.String(320), nullable=False),
        sa.Column("code_hash", sa.LargeBinary, nullable=False),
        sa.Column("salt", sa.LargeBinary, nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("expires_at", sa.BigInteger, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("verified_at", sa.BigInteger),
    )
    op.create_index("ix_ra_email_verifications_renewal", "ra_email_verifications", ["renewal_id", "address"])
    op.create_table(
        "ra_audit_trail",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("at", sa.BigInteger, nullable=False),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("renewal_id", sa.String(32), nullable=False),
        sa.Column("detail", sa.Text, nullable=False),
        sa.Column("previous_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
    )
    op.create_table(
        "ra_outbox",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("recipient", sa.String(320), nullable=False),
        sa.Column("subject", sa.Text, nullable=False),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("next_attempt_at", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    for table in ("ra_outbox", "ra_audit_trail", "ra_email_verifications", "ra_renewals", "ra_holders"):
        op.drop_table(table)
