"""superseded_ca_keys: the OCSP responder's and TSA's keys that renewals replaced, kept apart from
the authorities until the background work removes them from the token (the ``authorities`` table
holds the authorities only, as before).

Going down forgets the keys not yet removed: they stay on the token, and the downgrade names them
in the log for ``signserver hsm delete``.

Revision ID: 0024
Revises: 0023
"""

import logging

import sqlalchemy as sa
from alembic import op

revision = "0024"
down_revision = "0023"
branch_labels = None
depends_on = None

log = logging.getLogger("signserver.store.migrations")  # Alembic loads this file under a name of its own
_superseded = sa.table("superseded_ca_keys", sa.column("key_id"), sa.column("role"))


def upgrade() -> None:
    op.create_table(
        "superseded_ca_keys",
        sa.Column("key_id", sa.String(length=128), nullable=False),
        sa.Column("role", sa.String(length=32), nullable=False),
        sa.Column("certificate", sa.LargeBinary(), nullable=True),
        sa.Column("superseded_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("key_id"),
    )


def downgrade() -> None:
    left = op.get_bind().execute(sa.select(_superseded.c.key_id, _superseded.c.role)
                                 .order_by(_superseded.c.key_id)).all()
    if left:
        log.warning("downgrading the database: %d superseded CA key(s) not yet removed stay on the token, no longer "
                    "named anywhere: %s; remove each with `signserver hsm delete KEY_ID`", len(left),
                    ", ".join(f"{row.key_id} ({row.role})" for row in left))
    op.drop_table("superseded_ca_keys")
