"""outbox: a partial index on the recipient of the messages still to go, so that the sender
(signserver/notify/sender.py) finds whether an earlier message to an address is still waiting
without reading the sent ones retention keeps: a later message waits for it, so that a holder reads
a lock's e-mail before its unlock's.

Revision ID: 0032
Revises: 0031
"""

import sqlalchemy as sa
from alembic import op

revision = "0032"
down_revision = "0031"
branch_labels = None
depends_on = None

UNSENT = "sent_at IS NULL AND given_up_at IS NULL"


def upgrade() -> None:
    op.create_index("ix_outbox_unsent_recipient", "outbox", ["recipient", "id"],
                    sqlite_where=sa.text(UNSENT), postgresql_where=sa.text(UNSENT))


def downgrade() -> None:
    op.drop_index("ix_outbox_unsent_recipient", table_name="outbox")
