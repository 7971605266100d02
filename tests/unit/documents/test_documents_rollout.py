"""The `Rollout` section: what is valid, and every error at its JSON Pointer."""

from __future__ import annotations

import pytest

from controlplane.documents import DocumentValidationError, parse_sections

TDD = "trust-domain-deployment"


def issues(text: str, scope: str = TDD) -> dict[str, str]:
    with pytest.raises(DocumentValidationError) as caught:
        parse_sections(text, scope=scope)
    return {i.pointer: i.reason for i in caught.value.issues}


def test_a_full_policy_is_valid_and_canonical():
    text = """\
section: Rollout
schema: v1
spec:
  onFailure: rollback
  stages:
    - {name: canary, servers: 1, bake: 10m}
    - {name: east, clusters: [c-1a2b3c4d5e6f]}
    - {percent: 50, bake: 1h}
    - {servers: 20}
"""
    [section] = parse_sections(text, scope=TDD)
    assert section.name == "Rollout" and section.document["spec"]["stages"][0]["bake"] == "10m"
    assert section.canonical_yaml.startswith("section: Rollout\nschema: v1\nspec:\n")


def test_only_at_the_deployment_scope():
    text = "section: Rollout\nschema: v1\nspec:\n  stages: [{servers: 1}]\n"
    for scope in ("trust-domain", "cluster"):
        assert "/section" in issues(text, scope)


def test_every_problem_at_its_pointer():
    found = issues("""\
section: Rollout
schema: v1
spec:
  onFailure: retry
  stages:
    - {name: canary, servers: 2, percent: 10, bake: 8d}
    - {name: canary, servers: 2}
    - {percent: 100}
    - {clusters: [c-1], bake: 0s}
    - {clusters: [c-1, c-2]}
    - {}
    - {servers: 0, name: "bad name!"}
""")
    assert set(found) == {
        "/spec/onFailure",
        "/spec/stages/0",
        "/spec/stages/0/bake",
        "/spec/stages/1/name",
        "/spec/stages/1/servers",
        "/spec/stages/2/percent",
        "/spec/stages/3/bake",
        "/spec/stages/4/clusters/0",
        "/spec/stages/5",
        "/spec/stages/6/servers",
        "/spec/stages/6/name",
    }
    assert "exactly one of servers, percent or clusters" in found["/spec/stages/0"]
    assert "at most 7d" in found["/spec/stages/0/bake"]
    assert "stages are cumulative" in found["/spec/stages/1/servers"]
    assert "only the last stage" in found["/spec/stages/2/percent"]
    assert "already in stage 4" in found["/spec/stages/4/clusters/0"]
    assert "leave bake out" in found["/spec/stages/3/bake"]


def test_stages_are_required_and_bounded():
    assert "/spec/stages" in issues("section: Rollout\nschema: v1\nspec: {}\n")
    many = "".join(f"    - {{servers: {i + 1}}}\n" for i in range(11))
    assert "/spec/stages" in issues(f"section: Rollout\nschema: v1\nspec:\n  stages:\n{many}")
