"""one-time WebSocket tickets

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-21 14:30:00
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import parley.models

revision: str = '0003'
down_revision: str | None = '0002'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('ws_tickets',
    sa.Column('ticket_hash', sa.String(length=64), nullable=False),
    sa.Column('user_id', sa.String(length=26), nullable=False),
    sa.Column('created_at', parley.models.UTCDateTime(timezone=True), nullable=False),
    sa.Column('expires_at', parley.models.UTCDateTime(timezone=True), nullable=False),
    sa.Column('used_at', parley.models.UTCDateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_ws_tickets_user_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('ticket_hash', name=op.f('pk_ws_tickets'))
    )
    op.create_index(op.f('ix_ws_tickets_expires_at'), 'ws_tickets', ['expires_at'], unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_ws_tickets_expires_at'), table_name='ws_tickets')
    op.drop_table('ws_tickets')
