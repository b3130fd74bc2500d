"""signing data packages: holder keys wrapped by a master key and sealed to the holder

Existing credentials keep their keys on the token (key_store "token") and keep working; accounts
get their seal key at their holder's next sign-in. Each account's key algorithm is taken from its
newest credential.

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("accounts", sa.Column("key_algorithm", sa.String(length=16), nullable=False,
                                        server_default="rsa-2048"))
    op.add_column("accounts", sa.Column("seal_public_key", sa.LargeBinary(), nullable=True))
    op.add_column("accounts", sa.Column("seal_key_by_password", sa.LargeBinary(), nullable=True))
    op.add_column("accounts", sa.Column("seal_key_by_recovery", sa.LargeBinary(), nullable=True))
    op.add_column("credentials", sa.Column("key_store", sa.String(length=16), nullable=False,
                                           server_default="token"))
    op.add_column("activation_tokens", sa.Column("sealed_key", sa.LargeBinary(), nullable=True))
    op.add_column("activation_tokens", sa.Column("unspent", sa.Integer(), nullable=False, server_default="0"))
    op.create_index("ix_activation_tokens_expires_at", "activation_tokens", ["expires_at"])
    op.execute("UPDATE accounts SET key_algorithm = COALESCE((SELECT c.key_algorithm FROM credentials c "
               "WHERE c.account_id = accounts.id ORDER BY c.created_at DESC LIMIT 1), 'rsa-2048')")
    op.create_table(
        "signing_packages",
        sa.Column("key_id", sa.String(length=64), nullable=False),
        sa.Column("algorithm", sa.String(length=16), nullable=False),
        sa.Column("public_key", sa.LargeBinary(), nullable=False),
        sa.Column("master_label", sa.String(length=64), nullable=False),
        sa.Column("mechanism", sa.String(length=32), nullable=False),
        sa.Column("wrapped_package_key", sa.LargeBinary(), nullable=True),
        sa.Column("sealed_private_key", sa.LargeBinary(), nullable=True),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("key_id"),
    )
    op.create_index("ix_signing_packages_master_label", "signing_packages", ["master_label"])
    op.create_table(
        "master_keys",
        sa.Column("label", sa.String(length=64), nullable=False),
        sa.Column("check_value", sa.String(length=64), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("retired_at", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("label"),
    )


def downgrade() -> None:
    op.drop_table("master_keys")
    op.drop_index("ix_signing_packages_master_label", table_name="signing_packages")
    op.drop_table("signing_packages")
    op.drop_index("ix_activation_tokens_expires_at", table_name="activation_tokens")
    with op.batch_alter_table("activation_tokens") as batch:
        batch.drop_column("unspent")
        batch.drop_column("sealed_key")
    with op.batch_alter_table("credentials") as batch:
        batch.drop_column("key_store")
    with op.batch_alter_table("accounts") as batch:
        for column in ("seal_key_by_recovery", "seal_key_by_password", "seal_public_key", "key_algorithm"):
            batch.drop_column(column)
