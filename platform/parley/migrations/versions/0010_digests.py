"""digests: users' timezone, digest_hour, digest_weekday and next_digest_at (indexed); digest_items

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-30 07:30:00
"""
from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision: str = '0010'
down_revision: str | None = '0009'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

WEEKDAYS = ('monday', 'tuesday', 'wednesday', 'thursday', 'friday', 'saturday', 'sunday')


def upgrade() -> None:
    with op.batch_alter_table('users') as batch:
        batch.add_column(sa.Column('timezone', sa.String(length=64), nullable=False, server_default='UTC'))
        batch.add_column(sa.Column('digest_hour', sa.Integer(), nullable=False, server_default='8'))
        batch.add_column(sa.Column(
            'digest_weekday',
            sa.Enum(*WEEKDAYS, name='weekday', native_enum=False, create_constraint=True, length=16),
            nullable=False, server_default='monday',
        ))
        batch.add_column(sa.Column('next_digest_at', sa.DateTime(timezone=True), nullable=True))
    # The server defaults stay (existing rows got them; SQLite could only drop them by copying the
    # table): the models give every new row its values anyway.
    op.create_index(
        'ix_users_next_digest_at', 'users', ['next_digest_at'], unique=False,
        postgresql_where=sa.text('next_digest_at IS NOT NULL'), sqlite_where=sa.text('next_digest_at IS NOT NULL'),
    )
    # Everyone's settings are the defaults (UTC, 08:00, Monday): the next digest of a daily user is
    # the next 08:00 UTC, of a weekly one the next Monday's.
    from parley.digest_times import next_digest_at

    bind = op.get_bind()
    now = datetime.now(UTC)
    is_sqlite = bind.dialect.name == 'sqlite'
    for frequency in ('daily', 'weekly'):
        due = next_digest_at(now, enabled=True, frequency=frequency, zone='UTC', hour=8, weekday='monday')
        assert due is not None
        value = due.replace(tzinfo=None) if is_sqlite else due
        bind.execute(
            sa.text(
                "UPDATE users SET next_digest_at = :due WHERE email_digest = :frequency AND kind = 'user' "
                "AND email IS NOT NULL AND email <> ''"
            ),
            {'due': value, 'frequency': frequency},
        )
    op.create_table(
        'digest_items',
        sa.Column('user_id', sa.String(length=26), nullable=False),
        sa.Column('message_id', sa.String(length=26), nullable=False),
        sa.Column('email_id', sa.String(length=26), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['message_id'], ['messages.id'], name=op.f('fk_digest_items_message_id_messages'),
                                ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_digest_items_user_id_users'),
                                ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('user_id', 'message_id', name=op.f('pk_digest_items')),
    )


def downgrade() -> None:
    op.drop_table('digest_items')
    op.drop_index('ix_users_next_digest_at', table_name='users')
    with op.batch_alter_table('users') as batch:
        batch.drop_column('next_digest_at')
        batch.drop_column('digest_weekday')
        batch.drop_column('digest_hour')
        batch.drop_column('timezone')
