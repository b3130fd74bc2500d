"""certificate authority

Revision ID: 0002
Revises: 0001
"""

from alembic import op
import sqlalchemy as sa


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('authorities',
    sa.Column('name', sa.String(length=32), nullable=False),
    sa.Column('key_id', sa.String(length=128), nullable=False),
    sa.Column('certificate', sa.LargeBinary(), nullable=True),
    sa.Column('created_at', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('name')
    )
    op.create_table('crls',
    sa.Column('authority', sa.String(length=32), nullable=False),
    sa.Column('number', sa.BigInteger(), nullable=False),
    sa.Column('this_update', sa.BigInteger(), nullable=False),
    sa.Column('next_update', sa.BigInteger(), nullable=False),
    sa.Column('der', sa.LargeBinary(), nullable=False),
    sa.PrimaryKeyConstraint('authority')
    )
    op.create_table('certificates',
    sa.Column('serial', sa.String(length=64), nullable=False),
    sa.Column('profile', sa.String(length=64), nullable=False),
    sa.Column('account_id', sa.Integer(), nullable=True),
    sa.Column('credential_id', sa.String(length=64), nullable=True),
    sa.Column('subject', sa.String(length=1000), nullable=False),
    sa.Column('not_before', sa.BigInteger(), nullable=False),
    sa.Column('not_after', sa.BigInteger(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('revoked_at', sa.BigInteger(), nullable=True),
    sa.Column('revocation_reason', sa.String(length=32), nullable=True),
    sa.Column('predecessor_serial', sa.String(length=64), nullable=True),
    sa.Column('expiry_notice_at', sa.BigInteger(), nullable=True),
    sa.Column('issued_at', sa.BigInteger(), nullable=False),
    sa.Column('der', sa.LargeBinary(), nullable=False),
    sa.ForeignKeyConstraint(['account_id'], ['accounts.id'], ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['credential_id'], ['credentials.id'], ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('serial')
    )
    with op.batch_alter_table('certificates', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_certificates_account_id'), ['account_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_certificates_credential_id'), ['credential_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_certificates_not_after'), ['not_after'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('certificates', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_certificates_not_after'))
        batch_op.drop_index(batch_op.f('ix_certificates_credential_id'))
        batch_op.drop_index(batch_op.f('ix_certificates_account_id'))

    op.drop_table('certificates')
    op.drop_table('crls')
    op.drop_table('authorities')
