"""ra_outbox: an index on the recipient of the messages still to go, so that the mailer
(signserver/ra/mailer.py) finds whether an earlier message to an address is still waiting without
reading the given-up ones kept for the operators: a later message waits for it, so that a holder
reads the RA's messages in the order they were written.

Revision ID: ra0012
Revises: ra0011
"""

import sqlalchemy as sa
from alembic import op

revision = "ra0012"
down_revision = "ra0011"
branch_labels = None
depends_on = None

UNSENT = "given_up_at IS NULL"  # a sent message is deleted


def upgrade() -> None:
    op.create_index("ix_ra_outbox_unsent_recipient", "ra_outbox", ["recipient", "id"],
                    sqlite_where=sa.text(UNSENT), postgresql_where=sa.text(UNSENT))


def downgrade() -> None:
    op.drop_index("ix_ra_outbox_unsent_recipient", table_name="ra_outbox")
