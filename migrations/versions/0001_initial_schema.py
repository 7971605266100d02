"""initial schema

Revision ID: 0001
Revises: 
Create Date: 2026-11-23 14:14:12.870583
"""

from alembic import op
import sqlalchemy as sa


revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    
    op.create_table('audit_events',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('actor', sa.String(length=255), nullable=False),
    sa.Column('action', sa.String(length=64), nullable=False),
    sa.Column('scope', sa.String(length=32), nullable=True),
    sa.Column('scope_id', sa.String(length=32), nullable=True),
    sa.Column('old_version', sa.Integer(), nullable=True),
    sa.Column('new_version', sa.Integer(), nullable=True),
    sa.Column('details_json', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_audit_events'))
    )
    with op.batch_alter_table('audit_events', schema=None) as batch_op:
        batch_op.create_index('ix_audit_events_at', ['at'], unique=False)

    op.create_table('config_versions',
    sa.Column('revision', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('scope', sa.String(length=32), nullable=False),
    sa.Column('scope_id', sa.String(length=32), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('actor', sa.String(length=255), nullable=False),
    sa.Column('action', sa.String(length=32), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('revision', name=op.f('pk_config_versions')),
    sa.UniqueConstraint('scope', 'scope_id', 'version', name='uq_config_versions_scope_version')
    )
    op.create_table('tokens',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('token_hash', sa.String(length=64), nullable=False),
    sa.Column('role', sa.String(length=16), nullable=False),
    sa.Column('name', sa.String(length=255), nullable=False),
    sa.Column('deployment_id', sa.String(length=32), nullable=True),
    sa.Column('server_id', sa.String(length=32), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_tokens')),
    sa.UniqueConstraint('token_hash', name=op.f('uq_tokens_token_hash'))
    )
    op.create_table('trust_domains',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('name', sa.String(length=255), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('bundle_version', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_trust_domains')),
    sa.UniqueConstraint('name', name=op.f('uq_trust_domains_name'))
    )
    op.create_table('bundle_keys',
    sa.Column('trust_domain_id', sa.String(length=32), nullable=False),
    sa.Column('kid', sa.String(length=255), nullable=False),
    sa.Column('use', sa.String(length=16), nullable=False),
    sa.Column('jwk_json', sa.Text(), nullable=False),
    sa.Column('not_after', sa.DateTime(timezone=True), nullable=False),
    sa.Column('server_id', sa.String(length=32), nullable=False),
    sa.ForeignKeyConstraint(['trust_domain_id'], ['trust_domains.id'], name=op.f('fk_bundle_keys_trust_domain_id_trust_domains')),
    sa.PrimaryKeyConstraint('trust_domain_id', 'kid', name=op.f('pk_bundle_keys'))
    )
    op.create_table('config_heads',
    sa.Column('scope', sa.String(length=32), nullable=False),
    sa.Column('scope_id', sa.String(length=32), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('revision', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['revision'], ['config_versions.revision'], name=op.f('fk_config_heads_revision_config_versions')),
    sa.PrimaryKeyConstraint('scope', 'scope_id', name=op.f('pk_config_heads'))
    )
    op.create_table('config_sections',
    sa.Column('revision', sa.Integer(), nullable=False),
    sa.Column('section', sa.String(length=64), nullable=False),
    sa.Column('schema', sa.String(length=16), nullable=False),
    sa.Column('document_json', sa.Text(), nullable=False),
    sa.Column('canonical_yaml', sa.Text(), nullable=False),
    sa.Column('digest', sa.String(length=80), nullable=False),
    sa.ForeignKeyConstraint(['revision'], ['config_versions.revision'], name=op.f('fk_config_sections_revision_config_versions')),
    sa.PrimaryKeyConstraint('revision', 'section', name=op.f('pk_config_sections'))
    )
    op.create_table('deployments',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('name', sa.String(length=255), nullable=False),
    sa.Column('trust_domain_id', sa.String(length=32), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['trust_domain_id'], ['trust_domains.id'], name=op.f('fk_deployments_trust_domain_id_trust_domains')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_deployments')),
    sa.UniqueConstraint('trust_domain_id', 'name', name='uq_deployments_td_name')
    )
    with op.batch_alter_table('deployments', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_deployments_trust_domain_id'), ['trust_domain_id'], unique=False)

    op.create_table('clusters',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('name', sa.String(length=255), nullable=False),
    sa.Column('deployment_id', sa.String(length=32), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['deployment_id'], ['deployments.id'], name=op.f('fk_clusters_deployment_id_deployments')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_clusters')),
    sa.UniqueConstraint('deployment_id', 'name', name='uq_clusters_tdd_name')
    )
    with op.batch_alter_table('clusters', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_clusters_deployment_id'), ['deployment_id'], unique=False)

    op.create_table('join_tokens',
    sa.Column('token_hash', sa.String(length=64), nullable=False),
    sa.Column('deployment_id', sa.String(length=32), nullable=False),
    sa.Column('created_by', sa.String(length=255), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('used_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['deployment_id'], ['deployments.id'], name=op.f('fk_join_tokens_deployment_id_deployments')),
    sa.PrimaryKeyConstraint('token_hash', name=op.f('pk_join_tokens'))
    )
    with op.batch_alter_table('join_tokens', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_join_tokens_deployment_id'), ['deployment_id'], unique=False)

    op.create_table('servers',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('name', sa.String(length=255), nullable=False),
    sa.Column('deployment_id', sa.String(length=32), nullable=False),
    sa.Column('cluster_id', sa.String(length=32), nullable=True),
    sa.Column('registered_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('last_contact_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('health', sa.String(length=16), nullable=False),
    sa.Column('status_json', sa.Text(), nullable=False),
    sa.ForeignKeyConstraint(['cluster_id'], ['clusters.id'], name=op.f('fk_servers_cluster_id_clusters')),
    sa.ForeignKeyConstraint(['deployment_id'], ['deployments.id'], name=op.f('fk_servers_deployment_id_deployments')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_servers'))
    )
    with op.batch_alter_table('servers', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_servers_deployment_id'), ['deployment_id'], unique=False)




def downgrade() -> None:
    
    with op.batch_alter_table('servers', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_servers_deployment_id'))

    op.drop_table('servers')
    with op.batch_alter_table('join_tokens', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_join_tokens_deployment_id'))

    op.drop_table('join_tokens')
    with op.batch_alter_table('clusters', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_clusters_deployment_id'))

    op.drop_table('clusters')
    with op.batch_alter_table('deployments', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_deployments_trust_domain_id'))

    op.drop_table('deployments')
    op.drop_table('config_sections')
    op.drop_table('config_heads')
    op.drop_table('bundle_keys')
    op.drop_table('trust_domains')
    op.drop_table('tokens')
    op.drop_table('config_versions')
    with op.batch_alter_table('audit_events', schema=None) as batch_op:
        batch_op.drop_index('ix_audit_events_at')

    op.drop_table('audit_events')

