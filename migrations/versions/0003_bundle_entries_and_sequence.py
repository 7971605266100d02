"""SPIFFE-conformant bundle entries, key not_before, index for expiry

X.509 CA entries lose their `kid` and keep one certificate (X509-SVID spec §6.1). The stored
entries change, so every trust domain whose bundle changed gets the next spiffe_sequence.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01 10:00:00.000000
"""

import json

from alembic import op
import sqlalchemy as sa


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('bundle_keys', schema=None) as batch_op:
        batch_op.add_column(sa.Column('not_before', sa.DateTime(timezone=True), nullable=True))
        batch_op.create_index('ix_bundle_keys_not_after', ['not_after'], unique=False)

    conn = op.get_bind()
    keys = sa.table(
        'bundle_keys',
        sa.column('trust_domain_id', sa.String),
        sa.column('kid', sa.String),
        sa.column('use', sa.String),
        sa.column('jwk_json', sa.Text),
    )
    trust_domains = sa.table(
        'trust_domains', sa.column('id', sa.String), sa.column('bundle_version', sa.Integer)
    )
    changed: set[str] = set()
    rows = conn.execute(
        sa.select(keys.c.trust_domain_id, keys.c.kid, keys.c.jwk_json).where(
            keys.c.use == 'x509-svid'
        )
    ).all()
    for td_id, kid, jwk_json in rows:
        entry = json.loads(jwk_json)
        fixed = {k: v for k, v in entry.items() if k != 'kid'}
        fixed['x5c'] = list(entry.get('x5c') or [])[:1]
        if fixed != entry:
            conn.execute(
                keys.update()
                .where(keys.c.trust_domain_id == td_id, keys.c.kid == kid)
                .values(jwk_json=json.dumps(fixed, sort_keys=True))
            )
            changed.add(td_id)
    for td_id in sorted(changed):
        conn.execute(
            trust_domains.update()
            .where(trust_domains.c.id == td_id)
            .values(bundle_version=trust_domains.c.bundle_version + 1)
        )


def downgrade() -> None:
    # Entries stay in their conformant form: the old code serves them as they are.
    with op.batch_alter_table('bundle_keys', schema=None) as batch_op:
        batch_op.drop_index('ix_bundle_keys_not_after')
        batch_op.drop_column('not_before')
