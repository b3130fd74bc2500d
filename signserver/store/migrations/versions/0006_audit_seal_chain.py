"""audit_seals: numbered, chained seals (a heartbeat may seal one record several times)

Existing seals keep their rows, numbered in the order of the records they seal, as format 1: they
are still verified, with the pinned seal key. The first new seal names the last of them.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_LEGACY_COLUMNS = ("seq", "hash", "at", "key_id", "signature")


def _columns_before() -> list[sa.Column]:
    return [sa.Column("seq", sa.BigInteger(), autoincrement=False, nullable=False),
            sa.Column("hash", sa.String(length=64), nullable=False),
            sa.Column("at", sa.BigInteger(), nullable=False),
            sa.Column("key_id", sa.String(length=128), nullable=False),
            sa.Column("signature", sa.LargeBinary(), nullable=False)]


def upgrade() -> None:
    # The primary key changes: build the new table beside the old one, copy, swap.
    chained = op.create_table(
        "audit_seals_chained",
        sa.Column("number", sa.BigInteger(), autoincrement=False, nullable=False),
        *_columns_before(),
        sa.Column("format", sa.Integer(), server_default="1", nullable=False),
        sa.Column("prev_seal", sa.String(length=64), server_default="", nullable=False),
        sa.PrimaryKeyConstraint("number"),
    )
    old = sa.table("audit_seals", *(sa.column(name) for name in _LEGACY_COLUMNS))
    connection = op.get_bind()
    rows = connection.execute(sa.select(old).order_by(old.c.seq)).all()
    if rows:
        op.bulk_insert(chained, [{"number": number, "format": 1, "prev_seal": "", **row._mapping}
                                 for number, row in enumerate(rows, start=1)])
    op.drop_table("audit_seals")
    op.rename_table("audit_seals_chained", "audit_seals")
    op.create_index("ix_audit_seals_seq", "audit_seals", ["seq"])


def downgrade() -> None:
    # Only seals made before the chain can be read by the older code; one per record.
    op.drop_index("ix_audit_seals_seq", table_name="audit_seals")
    legacy = op.create_table("audit_seals_legacy", *_columns_before(), sa.PrimaryKeyConstraint("seq"))
    chained = sa.table("audit_seals", sa.column("format"), *(sa.column(name) for name in _LEGACY_COLUMNS))
    rows = op.get_bind().execute(sa.select(*(chained.c[name] for name in _LEGACY_COLUMNS))
                                 .where(chained.c.format == 1)).all()
    if rows:
        op.bulk_insert(legacy, [dict(row._mapping) for row in rows])
    op.drop_table("audit_seals")
    op.rename_table("audit_seals_legacy", "audit_seals")
