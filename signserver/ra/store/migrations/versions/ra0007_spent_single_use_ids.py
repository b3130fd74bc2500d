"""The table of spent captcha challenges holds the operators' form ids too: it becomes
ra_web_spent_single_use_ids (its key column single_use_id), its rows kept, so that an id spent
before the upgrade stays spent after it.

Revision ID: ra0007
Revises: ra0006
"""

import sqlalchemy as sa
from alembic import op

revision = "ra0007"
down_revision = "ra0006"
branch_labels = None
depends_on = None


def _move(old: str, old_key: str, new: str, new_key: str) -> None:
    """Create ``new`` keyed by ``new_key``, copy ``old``'s rows into it, drop ``old``: the same on
    SQLite and PostgreSQL (a rename of a table, its key and its index in one portable step)."""
    op.create_table(
        new,
        sa.Column(new_key, sa.String(64), primary_key=True),
        sa.Column("expires_at", sa.BigInteger, nullable=False),
    )
    op.execute(f"INSERT INTO {new} ({new_key}, expires_at) SELECT {old_key}, expires_at FROM {old}")
    op.drop_index(f"ix_{old}_expires_at", table_name=old)
    op.drop_table(old)
    op.create_index(f"ix_{new}_expires_at", new, ["expires_at"])


def upgrade() -> None:
    _move("ra_web_spent_captchas", "challenge", "ra_web_spent_single_use_ids", "single_use_id")


def downgrade() -> None:
    _move("ra_web_spent_single_use_ids", "single_use_id", "ra_web_spent_captchas", "challenge")
