"""On PostgreSQL, the primary key of ``audit_seals`` has the name schema.py gives it.

Migration 0006 built the chained table as ``audit_seals_chained`` and renamed it, which left its
primary key (and that key's index) named ``audit_seals_chained_pkey``, where a database made from
schema.py has ``audit_seals_pkey``: a later migration naming the key would fail on every database
that was upgraded. SQLite's primary keys have no name: nothing changes there.

Revision ID: 0021
Revises: 0020
"""

from alembic import op

revision = "0021"
down_revision = "0020"
branch_labels = None
depends_on = None


def _rename(old: str, new: str) -> None:
    # Only where the old name is there: a database made otherwise has the right one already.
    op.execute(f"""
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_constraint
                WHERE conname = '{old}' AND conrelid = to_regclass('audit_seals')) THEN
        ALTER TABLE audit_seals RENAME CONSTRAINT {old} TO {new};
    END IF;
END
$$""")


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        _rename("audit_seals_chained_pkey", "audit_seals_pkey")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        _rename("audit_seals_pkey", "audit_seals_chained_pkey")
