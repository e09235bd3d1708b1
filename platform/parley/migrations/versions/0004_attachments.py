"""attachments: uploads to storage, processed on media workers

Uploads exist before the message they end up in (message_id becomes nullable), belong to their
uploader, and carry their processing status and what processing found.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-21 14:05:00
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import parley.models

revision: str = '0004'
down_revision: str | None = '0003'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('attachments', schema=None) as batch_op:
        batch_op.alter_column('message_id', existing_type=sa.String(length=26), nullable=True)
        batch_op.add_column(sa.Column('uploader_id', sa.String(length=26), nullable=True))
        # Rows from before this migration are external attachments: nothing to process.
        batch_op.add_column(sa.Column(
            'status',
            sa.Enum('processing', 'ready', 'failed', name='attachmentstatus', native_enum=False,
                    create_constraint=True, length=16),
            server_default='ready', nullable=False,
        ))
        batch_op.add_column(sa.Column('storage_key', sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column('width', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('height', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('duration_seconds', sa.Float(), nullable=True))
        batch_op.add_column(sa.Column('codec', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column(
            'thumbnails', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=True
        ))
        batch_op.add_column(sa.Column('failure_reason', sa.String(length=500), nullable=True))
        batch_op.add_column(sa.Column('created_at', parley.models.UTCDateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('processed_at', parley.models.UTCDateTime(timezone=True), nullable=True))
        batch_op.create_foreign_key(
            batch_op.f('fk_attachments_uploader_id_users'), 'users', ['uploader_id'], ['id'], ondelete='CASCADE'
        )
        batch_op.create_index(batch_op.f('ix_attachments_uploader_id'), ['uploader_id'], unique=False)
        batch_op.create_index(
            'ix_attachments_unattached', ['created_at'], unique=False,
            postgresql_where=sa.text('message_id IS NULL'), sqlite_where=sa.text('message_id IS NULL'),
        )


def downgrade() -> None:
    # Uploads not yet in a message cannot survive message_id becoming NOT NULL again.
    op.execute("DELETE FROM attachments WHERE message_id IS NULL")
    with op.batch_alter_table('attachments', schema=None) as batch_op:
        batch_op.drop_index('ix_attachments_unattached', postgresql_where=sa.text('message_id IS NULL'),
                            sqlite_where=sa.text('message_id IS NULL'))
        batch_op.drop_index(batch_op.f('ix_attachments_uploader_id'))
        batch_op.drop_constraint(batch_op.f('fk_attachments_uploader_id_users'), type_='foreignkey')
        batch_op.drop_constraint(batch_op.f('ck_attachments_attachmentstatus'), type_='check')
        for column in ('processed_at', 'created_at', 'failure_reason', 'thumbnails', 'codec', 'duration_seconds',
                       'height', 'width', 'storage_key', 'status', 'uploader_id'):
            batch_op.drop_column(column)
        batch_op.alter_column('message_id', existing_type=sa.String(length=26), nullable=False)
