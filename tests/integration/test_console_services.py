"""The service reads the console added: audit log filters and the config changes of a deployment."""

from __future__ import annotations

from datetime import timedelta

from controlplane.domain import utc_now
from controlplane.services import audit, objects
from controlplane.services import config as config_service
from controlplane.store.unit_of_work import UnitOfWorkFactory

LIFECYCLE = "section: KeyLifecycle\nschema: v1\nspec:\n  jwtKeyTTL: {}h\n"


def _set(uow_factory: UnitOfWorkFactory, scope: str, scope_id: str, hours: int, actor: str) -> None:
    with uow_factory() as uow:
        uploaded = config_service.parse_upload(LIFECYCLE.format(hours), scope)
        config_service.set_config(uow, scope, scope_id, uploaded, actor=actor)


def test_audit_filters_and_deployment_changes(engine):
    uows = UnitOfWorkFactory(engine)
    with uows() as uow:
        td = objects.create_trust_domain(uow, "example.org", "admin:alice")
    with uows() as uow:
        tdd = objects.create_deployment(uow, "prod", td["id"], "admin:alice")
    with uows() as uow:
        east = objects.create_cluster(uow, "east", tdd["id"], "admin:bob_100%")
    with uows() as uow:
        other = objects.create_deployment(uow, "staging", td["id"], "admin:alice")
    start = utc_now()
    _set(uows, "trust-domain", td["id"], 1, "admin:alice")
    _set(uows, "trust-domain-deployment", tdd["id"], 2, "admin:bob_100%")
    _set(uows, "cluster", east["id"], 3, "admin:alice")
    _set(uows, "trust-domain-deployment", other["id"], 4, "admin:alice")

    with uows() as uow:
        by_scope = audit.list_events(uow, scope="trust-domain-deployment", scope_id=tdd["id"])
        assert [(e["action"], e["actor"]) for e in by_scope] == [
            ("config.set", "admin:bob_100%"),
            ("deployment.create", "admin:alice"),
        ]
        # the actor filter is a plain substring: '%' and '_' are not wildcards
        assert {e["actor"] for e in audit.list_events(uow, actor="b_100%")} == {"admin:bob_100%"}
        assert audit.list_events(uow, actor="b%") == []
        assert len(audit.list_events(uow, actor="admin:", limit=3)) == 3

        changes = config_service.deployment_changes(uow, tdd["id"], start)
        # its trust domain, itself and its cluster, newest first; not the other deployment
        assert [(c["scope"], c["version"], c["actor"]) for c in changes] == [
            ("cluster", 1, "admin:alice"),
            ("trust-domain-deployment", 1, "admin:bob_100%"),
            ("trust-domain", 1, "admin:alice"),
        ]
        assert config_service.deployment_changes(uow, tdd["id"], utc_now() + timedelta(1)) == []

        # the version each placement should run, from head rows alone, is the effective version
        targets = config_service.effective_versions(uow, tdd["id"], [east["id"], None])
        assert targets == {
            c: config_service.get_effective(uow, tdd["id"], c)["version"]
            for c in (east["id"], None)
        }
        assert targets[east["id"]] > targets[None] > 0
