"""email: notification threads (batching window, reply tokens), outgoing emails, inbound replies

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01 06:00:00
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0008'
down_revision: str | None = '0007'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        'email_threads',
        sa.Column('user_id', sa.String(length=26), nullable=False),
        sa.Column('conversation_id', sa.String(length=26), nullable=False),
        sa.Column('due_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('notified_up_to', sa.String(length=26), nullable=True),
        sa.Column('reply_token_hash', sa.String(length=64), nullable=True),
        sa.Column('reply_token_encrypted', sa.Text(), nullable=True),
        sa.Column('reply_token_revoked_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['conversation_id'], ['conversations.id'],
                                name=op.f('fk_email_threads_conversation_id_conversations'), ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_email_threads_user_id_users'),
                                ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('user_id', 'conversation_id', name=op.f('pk_email_threads')),
        sa.UniqueConstraint('reply_token_hash', name=op.f('uq_email_threads_reply_token_hash')),
    )
    op.create_index(
        'ix_email_threads_due_at', 'email_threads', ['due_at'], unique=False,
        postgresql_where=sa.text('due_at IS NOT NULL'), sqlite_where=sa.text('due_at IS NOT NULL'),
    )
    op.create_table(
        'outgoing_emails',
        sa.Column('id', sa.String(length=26), nullable=False),
        sa.Column('kind', sa.String(length=40), nullable=False),
        sa.Column('user_id', sa.String(length=26), nullable=True),
        sa.Column('conversation_id', sa.String(length=26), nullable=True),
        sa.Column('recipient', sa.String(length=320), nullable=False),
        sa.Column('message_id', sa.String(length=255), nullable=False),
        sa.Column('subject', sa.String(length=998), nullable=False),
        sa.Column('content', sa.Text(), nullable=False),
        sa.Column('status', sa.Enum('pending', 'sending', 'sent', 'failed', name='emailstatus', native_enum=False,
                                    create_constraint=True, length=16), nullable=False),
        sa.Column('attempts', sa.Integer(), nullable=False),
        sa.Column('next_attempt_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('last_error', sa.String(length=500), nullable=True),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('sent_at', sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_outgoing_emails_user_id_users'),
                                ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_outgoing_emails')),
        sa.UniqueConstraint('message_id', name=op.f('uq_outgoing_emails_message_id')),
    )
    op.create_index(op.f('ix_outgoing_emails_user_id'), 'outgoing_emails', ['user_id'], unique=False)
    op.create_index(
        'ix_outgoing_emails_due', 'outgoing_emails', ['next_attempt_at'], unique=False,
        postgresql_where=sa.text("status IN ('pending', 'sending')"),
        sqlite_where=sa.text("status IN ('pending', 'sending')"),
    )
    op.create_table(
        'inbound_emails',
        sa.Column('message_id', sa.String(length=255), nullable=False),
        sa.Column('user_id', sa.String(length=26), nullable=False),
        sa.Column('conversation_id', sa.String(length=26), nullable=False),
        sa.Column('posted_message_id', sa.String(length=26), nullable=False),
        sa.Column('received_at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['conversation_id'], ['conversations.id'],
                                name=op.f('fk_inbound_emails_conversation_id_conversations'), ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_inbound_emails_user_id_users'),
                                ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('message_id', name=op.f('pk_inbound_emails')),
    )
    op.create_index('ix_inbound_emails_conversation_id_received_at', 'inbound_emails',
                    ['conversation_id', 'received_at'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_inbound_emails_conversation_id_received_at', table_name='inbound_emails')
    op.drop_table('inbound_emails')
    op.drop_index('ix_outgoing_emails_due', table_name='outgoing_emails')
    op.drop_index(op.f('ix_outgoing_emails_user_id'), table_name='outgoing_emails')
    op.drop_table('outgoing_emails')
    op.drop_index('ix_email_threads_due_at', table_name='email_threads')
    op.drop_table('email_threads')
