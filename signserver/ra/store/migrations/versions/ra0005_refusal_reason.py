"""A renewal's refusal keeps its stable reason beside its sentence, so that a page says it in the
holder's language without reading the sentence. Refusals recorded before keep an empty reason
(the page then gives its general sentence).

Revision ID: ra0005
Revises: ra0004
"""

import sqlalchemy as sa
from alembic import op

revision = "ra0005"
down_revision = "ra0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("ra_renewals") as batch:
        batch.add_column(sa.Column("refusal_reason", sa.String(32), nullable=False, server_default=""))


def downgrade() -> None:
    with op.batch_alter_table("ra_renewals") as batch:
        batch.drop_column("refusal_reason")
