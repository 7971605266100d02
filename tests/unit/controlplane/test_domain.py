"""Pure domain rules: no database, no network."""

from __future__ import annotations

import pytest

from controlplane.domain import (
    CLUSTER,
    DEPLOYMENT,
    TRUST_DOMAIN,
    NotFound,
    ScopeConfig,
    StoredSection,
    VersionConflict,
    check_scope,
    effective_config,
    new_id,
)
from controlplane.store.unit_of_work import Change


def _section(name: str, marker: str) -> StoredSection:
    return StoredSection(
        name=name,
        schema="v1",
        document={"section": name, "marker": marker},
        canonical_yaml=f"marker: {marker}\n",
        digest=f"sha256:{marker}",
    )


def _layer(scope: str, revision: int, **sections: str) -> ScopeConfig:
    return ScopeConfig(
        scope=scope,
        scope_id=f"{scope}-1",
        version=revision,
        revision=revision,
        sections={name: _section(name, marker) for name, marker in sections.items()},
    )


def test_most_specific_scope_wins_per_section():
    effective = effective_config(
        [
            _layer(TRUST_DOMAIN, 3, KeyLifecycle="td", KeyManager="td"),
            _layer(DEPLOYMENT, 5, KeyManager="tdd"),
            _layer(CLUSTER, 4, KeyLifecycle="cluster"),
        ]
    )
    assert effective.sections["KeyManager"].scope == DEPLOYMENT
    assert effective.sections["KeyManager"].section.document["marker"] == "tdd"
    assert effective.sections["KeyLifecycle"].scope == CLUSTER
    assert effective.version == 5


def test_effective_version_grows_when_any_layer_changes():
    before = effective_config([_layer(TRUST_DOMAIN, 7), _layer(DEPLOYMENT, 2, KeyManager="a")])
    after = effective_config([_layer(TRUST_DOMAIN, 9), _layer(DEPLOYMENT, 2, KeyManager="a")])
    assert after.version > before.version
    assert effective_config([]).version == 0


def test_version_conflict_names_both_versions():
    error = VersionConflict(CLUSTER, "c-1", expected=3, current=5)
    assert "version 5" in str(error) and "version 3" in str(error)
    assert (error.status, error.expected_version, error.current_version) == (409, 3, 5)


def test_scope_names_and_ids():
    assert check_scope(CLUSTER) == CLUSTER
    with pytest.raises(NotFound, match="trust-domain, trust-domain-deployment, cluster"):
        check_scope("galaxy")
    assert new_id("deployment").startswith("tdd-") and new_id("deployment") != new_id("deployment")


def test_change_payload_round_trip():
    change = Change("config", "cluster/c-1", 42)
    assert Change.from_payload(change.to_payload()) == change


def test_name_rules_take_the_whole_string() -> None:
    from controlplane.domain import object_name_problem, trust_domain_name_problem

    assert trust_domain_name_problem("example.org") is None
    assert trust_domain_name_problem("acme") is None
    for bad in ("example.org\n", "Example.org", "", "a" * 256, None, "spiffe://example.org"):
        assert trust_domain_name_problem(bad) is not None, bad
    assert object_name_problem("prod-1", "cluster") is None
    for bad in ("prod\n", "-prod", "", "a" * 64, 7):
        assert object_name_problem(bad, "cluster") is not None, bad
