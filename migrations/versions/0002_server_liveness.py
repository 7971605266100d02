"""server liveness: time of the last status report; servers indexed by cluster

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30 07:34:20.988404
"""

from alembic import op
import sqlalchemy as sa


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('servers', schema=None) as batch_op:
        batch_op.add_column(sa.Column('last_report_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.create_index(batch_op.f('ix_servers_cluster_id'), ['cluster_id'], unique=False)
    # Servers that reported before this column existed: their last contact was a report.
    op.execute(
        "UPDATE servers SET last_report_at = last_contact_at WHERE status_json <> '{}'"
    )


def downgrade() -> None:
    with op.batch_alter_table('servers', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_servers_cluster_id'))
        batch_op.drop_column('last_report_at')
