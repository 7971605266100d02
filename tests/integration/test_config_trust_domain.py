"""Shared-keys rules are checked against the scope's real trust domain, on every write and dry run.

The issue's cases: example.org's key id regex next to acme.com can never match (refused), and
SPIRE's documented regex is right for a one-label trust domain (accepted).
"""

from __future__ import annotations

import pytest

from support.api import make_topology, ok, put_config, shared_keys_key_manager

REGEX = "/spec/extensions/azureKeyVault/sharedKeys/keyIdExtractionRegex"


def topology(c, td_name: str) -> dict[str, str]:
    """The deployment's and the cluster's id, by scope name."""
    ids = make_topology(c, td_name)
    return {"trust-domain-deployment": ids["tdd"], "cluster": ids["cluster"]}


@pytest.mark.parametrize("scope", ["trust-domain-deployment", "cluster"])
def test_regex_is_checked_against_the_scopes_trust_domain(live_api, scope):
    with live_api.client() as c:
        acme_com = topology(c, "acme.com")[scope]
        acme = topology(c, "acme")[scope]
        for validate_only in (True, False):
            refused = put_config(
                c,
                scope,
                acme_com,
                shared_keys_key_manager("^spire-example-org-(.+)$"),
                validate_only=validate_only,
            )
            assert refused.status_code == 422, refused.text
            (issue,) = refused.json()["errors"]
            assert issue["pointer"] == REGEX and issue["section"] == "KeyManager"
            assert "'spire-acme-com-jwt-signer-a'" in issue["reason"]
            # SPIRE's doc regex: right for a one-label trust domain, wrong for a dotted one.
            spire = shared_keys_key_manager("^spire-[^-]+-(.+)$")
            assert ok(put_config(c, scope, acme, spire, validate_only=validate_only))
            assert put_config(c, scope, acme_com, spire).status_code == 422
        assert ok(c.get(f"/v1/config/{scope}/{acme_com}"))["version"] == 0  # nothing stored
        assert ok(c.get(f"/v1/config/{scope}/{acme}"))["version"] == 1
        good = shared_keys_key_manager("^spire-acme-com-(.+)$")
        assert ok(put_config(c, scope, acme_com, good))["version"] == 1
