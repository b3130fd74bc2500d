"""accounts.given_name and accounts.surname: the holder's names as the identity documents show
them, which certificates of natural persons carry (ETSI EN 319 412-2).

Existing accounts get empty names: their certificates keep the holder's name alone until an
operator enters the names (`signserver accounts update --given-name ... --surname ...`).

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("accounts") as batch:
        batch.add_column(sa.Column("given_name", sa.String(length=200), nullable=False, server_default=""))
        batch.add_column(sa.Column("surname", sa.String(length=200), nullable=False, server_default=""))


def downgrade() -> None:
    with op.batch_alter_table("accounts") as batch:
        batch.drop_column("surname")
        batch.drop_column("given_name")
