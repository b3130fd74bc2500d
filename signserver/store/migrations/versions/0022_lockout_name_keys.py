"""The lockout keeps names as keyed hashes: ``name_lockouts.name`` and ``auth_attempts.name``
become ``name_key`` (HMAC-SHA256 of the name, under a key sealed in the new ``sealed_keys``).

The names stored so far cannot be hashed here (the key is made and opened in the HSM, by the
server): their rows are dropped, in both directions. A row lasts at most the lock's duration (30
minutes by default) and an attempt's row a minute, so what is lost is at most the current runs of
failures and locks: a name locked at the upgrade may be tried again at once, with five new tries.

Revision ID: 0022
Revises: 0021
"""

import sqlalchemy as sa
from alembic import op

revision = "0022"
down_revision = "0021"
branch_labels = None
depends_on = None


def _lockout_tables(column: str) -> None:
    """The lockout's two tables, empty, keyed by ``column`` (``name_key`` now, ``name`` before)."""
    op.create_table(
        "name_lockouts",
        sa.Column(column, sa.String(length=64), nullable=False),
        sa.Column("failed_attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("locked_until", sa.BigInteger(), nullable=True),
        sa.Column("forget_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint(column),
    )
    op.create_index("ix_name_lockouts_forget_at", "name_lockouts", ["forget_at"])
    op.create_table(
        "auth_attempts",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column(column, sa.String(length=64), nullable=False),
        sa.Column("started_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(f"ix_auth_attempts_{column}", "auth_attempts", [column])


def _drop_lockout_tables(column: str) -> None:
    op.drop_index(f"ix_auth_attempts_{column}", table_name="auth_attempts")
    op.drop_table("auth_attempts")
    op.drop_index("ix_name_lockouts_forget_at", table_name="name_lockouts")
    op.drop_table("name_lockouts")


def upgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    if sqlite:
        # SQLite keeps a dropped row's bytes in the file until their page is reused: zeroed now.
        op.execute("PRAGMA secure_delete = ON")
    _drop_lockout_tables("name")
    if sqlite:
        op.execute("PRAGMA secure_delete = OFF")  # SQLite's default, which the server runs with
    _lockout_tables("name_key")
    op.create_table(
        "sealed_keys",
        sa.Column("purpose", sa.String(length=32), nullable=False),
        sa.Column("sealed", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("purpose"),
    )


def downgrade() -> None:
    op.drop_table("sealed_keys")
    _drop_lockout_tables("name_key")
    _lockout_tables("name")
