"""who may talk to whom: relationships, policy decisions, blocks, reports; messages.original_content, users.suspended_at

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-30 07:00:00


"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import parley.models

revision: str = '0009'
down_revision: str | None = '0008'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('relationships',
    sa.Column('reference', sa.String(length=200), nullable=False),
    sa.Column('user_low_id', sa.String(length=26), nullable=False),
    sa.Column('user_high_id', sa.String(length=26), nullable=False),
    sa.Column('active', sa.Boolean(), nullable=False),
    sa.Column('expires_at', parley.models.UTCDateTime(timezone=True), nullable=True),
    sa.Column('expiry_announced_at', parley.models.UTCDateTime(timezone=True), nullable=True),
    sa.Column('created_at', parley.models.UTCDateTime(timezone=True), nullable=False),
    sa.Column('updated_at', parley.models.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['user_low_id'], ['users.id'], name=op.f('fk_relationships_user_low_id_users'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['user_high_id'], ['users.id'], name=op.f('fk_relationships_user_high_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('reference', name=op.f('pk_relationships'))
    )
    op.create_index('ix_relationships_pair', 'relationships', ['user_low_id', 'user_high_id'], unique=False)
    op.create_index('ix_relationships_user_high_id', 'relationships', ['user_high_id'], unique=False)
    op.create_table('policy_decisions',
    sa.Column('action', sa.String(length=16), nullable=False),
    sa.Column('from_id', sa.String(length=26), nullable=False),
    sa.Column('to_id', sa.String(length=26), nullable=False),
    sa.Column('allow', sa.Boolean(), nullable=False),
    sa.Column('reason', sa.String(length=500), nullable=True),
    sa.Column('decided_at', parley.models.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['from_id'], ['users.id'], name=op.f('fk_policy_decisions_from_id_users'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['to_id'], ['users.id'], name=op.f('fk_policy_decisions_to_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('action', 'from_id', 'to_id', name=op.f('pk_policy_decisions'))
    )
    op.create_table('blocks',
    sa.Column('blocker_id', sa.String(length=26), nullable=False),
    sa.Column('blocked_id', sa.String(length=26), nullable=False),
    sa.Column('created_at', parley.models.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['blocker_id'], ['users.id'], name=op.f('fk_blocks_blocker_id_users'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['blocked_id'], ['users.id'], name=op.f('fk_blocks_blocked_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('blocker_id', 'blocked_id', name=op.f('pk_blocks'))
    )
    op.create_index('ix_blocks_blocked_id', 'blocks', ['blocked_id'], unique=False)
    with op.batch_alter_table('messages') as batch:
        batch.add_column(sa.Column('original_content', sa.Text(), nullable=True))
    with op.batch_alter_table('users') as batch:
        batch.add_column(sa.Column('suspended_at', parley.models.UTCDateTime(timezone=True), nullable=True))
    op.create_table('reports',
    sa.Column('id', sa.String(length=26), nullable=False),
    sa.Column('message_id', sa.String(length=26), nullable=False),
    sa.Column('conversation_id', sa.String(length=26), nullable=False),
    sa.Column('reporter_id', sa.String(length=26), nullable=False),
    sa.Column('reason', sa.String(length=1000), nullable=False),
    sa.Column('status', sa.Enum('open', 'resolved', name='reportstatus', native_enum=False, create_constraint=True, length=16), nullable=False),
    sa.Column('resolution', sa.String(length=1000), nullable=True),
    sa.Column('created_at', parley.models.UTCDateTime(timezone=True), nullable=False),
    sa.Column('resolved_at', parley.models.UTCDateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['message_id'], ['messages.id'], name=op.f('fk_reports_message_id_messages'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['conversation_id'], ['conversations.id'], name=op.f('fk_reports_conversation_id_conversations'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['reporter_id'], ['users.id'], name=op.f('fk_reports_reporter_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_reports'))
    )
    op.create_index('ix_reports_status_id', 'reports', ['status', 'id'], unique=False)
    op.create_index(op.f('ix_reports_message_id'), 'reports', ['message_id'], unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_reports_message_id'), table_name='reports')
    op.drop_index('ix_reports_status_id', table_name='reports')
    op.drop_table('reports')
    with op.batch_alter_table('users') as batch:
        batch.drop_column('suspended_at')
    with op.batch_alter_table('messages') as batch:
        batch.drop_column('original_content')
    op.drop_index('ix_blocks_blocked_id', table_name='blocks')
    op.drop_table('blocks')
    op.drop_table('policy_decisions')
    op.drop_index('ix_relationships_user_high_id', table_name='relationships')
    op.drop_index('ix_relationships_pair', table_name='relationships')
    op.drop_table('relationships')
