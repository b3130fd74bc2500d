"""name_lockouts: lockout state kept by name, for unknown names exactly as for accounts

The failures and lock of an account move from ``accounts`` to ``name_lockouts``, keyed by the
name; ``auth_attempts`` counts attempts under evaluation by name too (its rows only live for the
milliseconds of an evaluation, so they are not carried over).

Revision ID: 0005
Revises: 0004
"""

import time

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

# The moment a run of failures without a lock was last added to is not stored before this
# revision: such a run is forgotten one default lock duration after the upgrade.
_DEFAULT_LOCK_SECONDS = 30 * 60

_accounts = sa.table("accounts", sa.column("id"), sa.column("username"), sa.column("failed_attempts"),
                     sa.column("locked_until"))
_name_lockouts = sa.table("name_lockouts", sa.column("name"), sa.column("failed_attempts"),
                          sa.column("locked_until"), sa.column("forget_at"))


def upgrade() -> None:
    op.create_table(
        "name_lockouts",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("failed_attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("locked_until", sa.BigInteger(), nullable=True),
        sa.Column("forget_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    op.create_index("ix_name_lockouts_forget_at", "name_lockouts", ["forget_at"])
    forget_default = int(time.time()) + _DEFAULT_LOCK_SECONDS
    connection = op.get_bind()
    rows = connection.execute(sa.select(_accounts.c.username, _accounts.c.failed_attempts, _accounts.c.locked_until)
                              .where(sa.or_(_accounts.c.failed_attempts > 0,
                                            _accounts.c.locked_until.is_not(None)))).all()
    if rows:
        op.bulk_insert(_name_lockouts, [
            {"name": r.username, "failed_attempts": r.failed_attempts, "locked_until": r.locked_until,
             "forget_at": r.locked_until if r.locked_until is not None else forget_default} for r in rows])
    op.drop_column("accounts", "failed_attempts")
    op.drop_column("accounts", "locked_until")

    op.drop_index("ix_auth_attempts_account_id", table_name="auth_attempts")
    op.drop_table("auth_attempts")
    op.create_table(
        "auth_attempts",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("started_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_auth_attempts_name", "auth_attempts", ["name"])


def downgrade() -> None:
    op.drop_index("ix_auth_attempts_name", table_name="auth_attempts")
    op.drop_table("auth_attempts")
    op.create_table(
        "auth_attempts",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_auth_attempts_account_id", "auth_attempts", ["account_id"])

    op.add_column("accounts", sa.Column("failed_attempts", sa.Integer(), server_default="0", nullable=False))
    op.add_column("accounts", sa.Column("locked_until", sa.BigInteger(), nullable=True))
    connection = op.get_bind()
    # Only names with an account had a place to keep their lockout before this revision.
    for row in connection.execute(sa.select(_name_lockouts)).all():
        connection.execute(sa.update(_accounts).where(_accounts.c.username == row.name)
                           .values(failed_attempts=row.failed_attempts, locked_until=row.locked_until))
    op.drop_index("ix_name_lockouts_forget_at", table_name="name_lockouts")
    op.drop_table("name_lockouts")
