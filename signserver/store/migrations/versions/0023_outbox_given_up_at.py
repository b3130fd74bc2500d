"""``outbox.given_up_at``: a message given up is marked by when it was, not by a ``next_attempt_at``
no clock reaches (2**62, which every reader of the outbox had to know).

The messages given up before this revision get their queueing time as ``given_up_at`` (when they
were given up was not kept) and their queueing time as ``next_attempt_at``; the downgrade puts the
old mark back.

Revision ID: 0023
Revises: 0022
"""

import sqlalchemy as sa
from alembic import op

revision = "0023"
down_revision = "0022"
branch_labels = None
depends_on = None

_GIVEN_UP = 2 ** 62  # the old mark, in next_attempt_at
_outbox = sa.table("outbox", sa.column("created_at"), sa.column("next_attempt_at"), sa.column("given_up_at"))


def upgrade() -> None:
    op.add_column("outbox", sa.Column("given_up_at", sa.BigInteger(), nullable=True))
    op.execute(_outbox.update().where(_outbox.c.next_attempt_at >= _GIVEN_UP)
               .values(given_up_at=_outbox.c.created_at, next_attempt_at=_outbox.c.created_at))


def downgrade() -> None:
    op.execute(_outbox.update().where(_outbox.c.given_up_at.is_not(None)).values(next_attempt_at=_GIVEN_UP))
    with op.batch_alter_table("outbox") as batch:
        batch.drop_column("given_up_at")
