"""Checks on the public keys a server reports (issue 9: a leaked server credential must not put
secrets, foreign keys or forever-keys into the public bundle), on real reports from the trust
domain server core."""

from __future__ import annotations

import copy
from datetime import timedelta
from typing import Any

import pytest
from unit.trust_domain_server.tds_fakes import FakeKeyManager

from controlplane.bundles import bundle_document, content_digest, refresh_hint
from controlplane.keymanagers import key_manager_digest
from controlplane.reported_keys import InvalidReport, check_reported_keys
from controlplane.trust_domain_server.clock import ManualClock
from controlplane.trust_domain_server.server import TrustDomainServer

from corpus.bad_reports import REPORT_CASES, T0, TD, ReportCase

MAX = timedelta(days=365)


def _report(trust_domain: str = TD, key_type: str = "ec-p256") -> list[dict[str, Any]]:
    server = TrustDomainServer(
        trust_domain, ManualClock(T0), lambda spec: FakeKeyManager("default"), key_manager_digest
    )
    ext = {"webhook": {"keyType": key_type}} if key_type != "ec-p256" else {}
    spec = {"section": "KeyManager", "spec": {"extensions": ext}}
    server.apply_config({"version": 1, "sections": {"KeyManager": {"document": spec}}})
    server.rotate()
    keys = server.status_report()["keys"]
    return sorted(keys, key=lambda k: k["kind"])  # [jwt, x509-ca]


def _check(keys: object, trust_domain: str = TD) -> list[Any]:
    return check_reported_keys(keys, trust_domain, T0, MAX)


@pytest.mark.parametrize("key_type", ["ec-p256", "ec-p384", "rsa-2048"])
def test_reports_of_the_server_are_accepted_as_conformant_entries(key_type: str) -> None:
    jwt_key, ca_key = _check(_report(key_type=key_type))
    assert jwt_key.entry["use"] == "jwt-svid" and jwt_key.entry["kid"] == jwt_key.kid
    assert "x5c" not in jwt_key.entry
    assert ca_key.entry["use"] == "x509-svid" and "kid" not in ca_key.entry
    assert len(ca_key.entry["x5c"]) == 1 and ca_key.not_before is not None


@pytest.mark.parametrize("case", REPORT_CASES, ids=[c.name for c in REPORT_CASES])
def test_bad_keys_are_refused_with_their_pointer(case: ReportCase) -> None:
    keys = copy.deepcopy(_report())
    case.change(keys)
    with pytest.raises(InvalidReport) as caught:
        _check(keys)
    assert caught.value.pointer == case.pointer, str(caught.value)
    assert case.reason in str(caught.value)


def test_a_ca_certificate_of_another_trust_domain_is_refused() -> None:
    with pytest.raises(InvalidReport) as caught:
        _check(_report(trust_domain="other.org"), trust_domain=TD)
    assert caught.value.pointer == "/keys/1/x5c/0" and "spiffe://example.org" in str(caught.value)


def test_too_many_keys_and_wrong_container() -> None:
    for keys in ({"kid": "x"}, [{}] * 65):
        with pytest.raises(InvalidReport) as caught:
            _check(keys)
        assert caught.value.pointer == "/keys"
    assert _check(None) == [] and _check([]) == []


def test_document_order_and_digest_do_not_depend_on_key_order() -> None:
    entries = [k.entry for k in _check(_report())]
    one = bundle_document(entries, 3, 300)
    assert bundle_document(list(reversed(entries)), 3, 300) == one
    assert [k["use"] for k in one["keys"]] == ["jwt-svid", "x509-svid"]
    assert content_digest(entries, 300) == content_digest(list(reversed(entries)), 300)
    assert content_digest(entries, 300) != content_digest(entries[:1], 300)
    assert content_digest(entries, 300) != content_digest(entries, 100)


def test_refresh_hint() -> None:
    assert refresh_hint([]) == 300
    assert refresh_hint([timedelta(minutes=10), timedelta(hours=24)]) == 100
    assert refresh_hint([timedelta(seconds=3)]) == 1
    assert refresh_hint([timedelta(days=365)]) == 300
