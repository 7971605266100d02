"""staged rollouts: one rollout state per deployment with a Rollout policy

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30 10:06:43.487155
"""

from alembic import op
import sqlalchemy as sa


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('rollouts',
    sa.Column('deployment_id', sa.String(length=32), nullable=False),
    sa.Column('policy_json', sa.Text(), nullable=True),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('stage', sa.Integer(), nullable=False),
    sa.Column('admitted_json', sa.Text(), nullable=True),
    sa.Column('stable_json', sa.Text(), nullable=False),
    sa.Column('target_json', sa.Text(), nullable=False),
    sa.Column('generation', sa.Integer(), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('started_by', sa.String(length=255), nullable=False),
    sa.Column('stage_started_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('ready_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('halt_json', sa.Text(), nullable=True),
    sa.Column('accepted_json', sa.Text(), nullable=True),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['deployment_id'], ['deployments.id'], name=op.f('fk_rollouts_deployment_id_deployments')),
    sa.PrimaryKeyConstraint('deployment_id', name=op.f('pk_rollouts'))
    )


def downgrade() -> None:
    op.drop_table('rollouts')
