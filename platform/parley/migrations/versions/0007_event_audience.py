"""events.audience: the user ids an event concerns, written with it; redispatch_at, dispatch_count

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30 06:00:00
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = '0007'
down_revision: str | None = '0006'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    json_type = sa.JSON().with_variant(postgresql.JSONB(), 'postgresql')
    with op.batch_alter_table('events') as batch:
        batch.add_column(sa.Column('audience', json_type, nullable=True))
        batch.add_column(sa.Column('redispatch_at', sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column('dispatch_count', sa.Integer(), server_default='0', nullable=False))
    # Existing events concern their conversation's two members, or the one user they named.
    build = 'jsonb_build_array' if op.get_bind().dialect.name == 'postgresql' else 'json_array'
    op.execute(
        f"UPDATE events SET audience = COALESCE("
        f" (SELECT {build}(c.initiator_id, c.recipient_id) FROM conversations c WHERE c.id = events.conversation_id),"
        f" CASE WHEN user_id IS NOT NULL THEN {build}(user_id) END, {build}())"
    )
    with op.batch_alter_table('events') as batch:
        batch.alter_column('audience', existing_type=json_type, nullable=False)
        batch.drop_column('user_id')
    op.create_index(
        'ix_events_redispatch_at', 'events', ['redispatch_at'], unique=False,
        postgresql_where=sa.text('redispatch_at IS NOT NULL'), sqlite_where=sa.text('redispatch_at IS NOT NULL'),
    )


def downgrade() -> None:
    op.drop_index('ix_events_redispatch_at', table_name='events')
    with op.batch_alter_table('events') as batch:
        batch.drop_column('redispatch_at')
        batch.add_column(sa.Column('user_id', sa.String(length=26), nullable=True))
        batch.drop_column('dispatch_count')
        batch.drop_column('audience')
