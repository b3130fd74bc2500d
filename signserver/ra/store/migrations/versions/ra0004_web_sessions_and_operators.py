"""The pages' tables: their sessions (only each id's SHA-256 is kept), the captcha challenges
already answered (each spent by exactly one submission; removed once expired), the operators'
accounts for signing in to the operators' pages, and the operators' sign-in lockout, kept by name
whether or not an operator has that name (by the name's keyed hash, forgotten 30 minutes after the
last failure).

Revision ID: ra0004
Revises: ra0003
"""

import sqlalchemy as sa
from alembic import op

revision = "ra0004"
down_revision = "ra0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "ra_web_sessions",
        sa.Column("id_hash", sa.String(64), primary_key=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("subject", sa.String(128), nullable=False),
        sa.Column("data", sa.Text, nullable=False),
        sa.Column("csrf_token", sa.String(64), nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("last_seen", sa.BigInteger, nullable=False),
        sa.Column("signed_in_at", sa.BigInteger),
    )
    op.create_index("ix_ra_web_sessions_last_seen", "ra_web_sessions", ["last_seen"])
    op.create_table(
        "ra_web_spent_captchas",
        sa.Column("challenge", sa.String(64), primary_key=True),
        sa.Column("expires_at", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_ra_web_spent_captchas_expires_at", "ra_web_spent_captchas", ["expires_at"])
    op.create_table(
        "ra_operator_accounts",
        sa.Column("name", sa.String(128), primary_key=True),
        sa.Column("password_hash", sa.String(256), nullable=False),
        sa.Column("otp_seed_sealed", sa.LargeBinary, nullable=False),
        sa.Column("last_otp_step", sa.BigInteger),
        sa.Column("disabled_at", sa.BigInteger),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("created_by", sa.String(128), nullable=False),
    )
    op.create_table(
        "ra_operator_lockouts",
        sa.Column("name_hash", sa.String(64), primary_key=True),
        sa.Column("failures", sa.Integer, nullable=False),
        sa.Column("locked_until", sa.BigInteger),
        sa.Column("forget_at", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_ra_operator_lockouts_forget_at", "ra_operator_lockouts", ["forget_at"])


def downgrade() -> None:
    op.drop_index("ix_ra_operator_lockouts_forget_at", "ra_operator_lockouts")
    op.drop_table("ra_operator_lockouts")
    op.drop_table("ra_operator_accounts")
    op.drop_index("ix_ra_web_spent_captchas_expires_at", "ra_web_spent_captchas")
    op.drop_table("ra_web_spent_captchas")
    op.drop_index("ix_ra_web_sessions_last_seen", "ra_web_sessions")
    op.drop_table("ra_web_sessions")
