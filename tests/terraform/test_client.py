"""The provider's API client against a live control plane: errors become clear, typed failures."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from http_fakes import fake_server

from controlplane.terraform.client import (
    ApiClient,
    ApiError,
    ConflictError,
    NotControlPlaneError,
    NotFoundError,
    retry_delay,
)
from controlplane.terraform.common import api_error_detail

from support.api import KEY_MANAGER_AZURE, make_topology, ok, put_config

pytestmark = [pytest.mark.terraform, pytest.mark.xdist_group("tf-client")]

KL = "section: KeyLifecycle\nschema: v1\nspec: {jwtKeyTTL: 12h}\n"


def test_client_errors(shared_control_plane: Any) -> None:
    control_plane = shared_control_plane
    client = ApiClient(control_plane.url, control_plane.admin_token)
    try:
        td = client.post("/v1/trust-domains", {"name": "client.example.org"})
        assert td["id"].startswith("td-")
        assert client.get_config("trust-domain", td["id"])["version"] == 0

        first = client.put_config("trust-domain", td["id"], KL, prune=True, expected_version=0)
        assert first["version"] == 1
        with pytest.raises(ConflictError) as conflict:
            client.put_config(
                "trust-domain", td["id"], KL.replace("12h", "6h"), prune=True, expected_version=0
            )
        assert (conflict.value.expected_version, conflict.value.current_version) == (0, 1)

        with pytest.raises(ApiError) as invalid:
            client.put_config(
                "trust-domain", td["id"], KL.replace("12h", "soon"), prune=True, expected_version=1
            )
        assert invalid.value.status == 422
        assert "KeyLifecycle /spec/jwtKeyTTL:" in api_error_detail(invalid.value)

        with pytest.raises(NotFoundError):
            client.get("/v1/clusters/c-doesnotexist")
    finally:
        client.close()

    bad = ApiClient(control_plane.url, "not-a-token-" + "x" * 20)
    try:
        with pytest.raises(ApiError) as denied:
            bad.get("/v1/trust-domains")
        assert denied.value.status == 401
        assert "token" in str(denied.value) and "not-a-token" not in str(denied.value)
        assert "not-a-token" not in repr(bad)
    finally:
        bad.close()

    unreachable = ApiClient("http://127.0.0.1:9", "t")  # discard port: nothing listens
    with pytest.raises(ApiError) as down:
        unreachable.get("/v1/trust-domains")
    assert down.value.status == 0 and "cannot reach the control plane" in str(down.value)


def test_only_the_control_plane_says_not_found(shared_control_plane: Any) -> None:
    """A 404 is `NotFoundError` (drop the state) only with the control plane's header and JSON
    `not_found`; a wrong prefix, another service's JSON 404 or a proxy's HTML page is not."""
    cp = shared_control_plane
    real = ApiClient(cp.url, cp.admin_token)
    with pytest.raises(NotFoundError):
        real.get("/v1/clusters/c-000000000000")
    real.close()
    with fake_server("json404") as other, fake_server("html404") as proxy:
        for endpoint, error in (
            (cp.url + "/api", "no_route"),
            (other.url, "not_control_plane"),
            (proxy.url, "not_control_plane"),
        ):
            client = ApiClient(endpoint, cp.admin_token)
            with pytest.raises(ApiError) as wrong:
                client.get("/v1/clusters/c-000000000000")
            client.close()
            assert not isinstance(wrong.value, NotFoundError), endpoint
            assert wrong.value.code == error and wrong.value.status == 404
            assert endpoint in str(wrong.value)


def test_a_success_from_elsewhere_is_not_believed(shared_control_plane: Any) -> None:
    # A proxy forwarding the body but dropping the header: the answer is refused too.
    with fake_server("forward", upstream=shared_control_plane.url) as proxy:
        proxy.keep_headers = {"content-type"}
        client = ApiClient(proxy.url, shared_control_plane.admin_token)
        with pytest.raises(NotControlPlaneError):
            client.get("/v1/trust-domains")
        client.close()


def test_retries_busy_answers_then_gives_up(shared_control_plane: Any) -> None:
    with fake_server("unavailable", upstream=shared_control_plane.url) as proxy:
        proxy.failures = 2
        client = ApiClient(proxy.url, shared_control_plane.admin_token, retries=2)
        assert "items" in client.get("/v1/trust-domains")
        assert proxy.failed == 2
        proxy.status, proxy.failures, proxy.failed = 429, 5, 0
        with pytest.raises(ApiError) as busy:
            client.get("/v1/trust-domains")
        assert busy.value.status == 429 and proxy.failed == 3  # one try and two retries
        client.close()
    with fake_server("hang") as silent:
        client = ApiClient(silent.url, "t", timeout=0.2)
        with pytest.raises(ApiError) as late:
            client.get("/v1/trust-domains")
        assert late.value.code == "timeout" and "within 0.2s" in str(late.value)
        client.close()


def test_retry_delay() -> None:
    assert retry_delay("3", 0) == 3.0
    assert retry_delay("3600", 0) == 30.0  # capped
    for attempt, base in enumerate((0.5, 1, 2, 4)):
        # No (or an unreadable) Retry-After: exponential back-off with jitter.
        for header in (None, "Wed, 21 Oct 2015 07:28:00 GMT", "-1", "1e9"):
            assert 0.75 * base <= retry_delay(header, attempt) <= 1.25 * base
    assert retry_delay(None, 20) == 30.0


def test_config_section_writes_around_other_writers(shared_control_plane: Any) -> None:
    """spirl_config_section against the live control plane, in-process: a write to another
    section between its read and its PUT (a real 409) is retried; a change to its own section
    since Terraform read it is a conflict, and nothing is written."""
    from tf.iface import UpdateContext
    from tf.utils import Diagnostics

    from controlplane.terraform.provider import SpirlProvider
    from controlplane.terraform.section_resource import ConfigSectionResource

    cp = shared_control_plane
    with cp.client() as admin:
        tdd = make_topology(admin, "sections.example.org")["tdd"]
        ok(put_config(admin, "trust-domain-deployment", tdd, KL))
    provider = SpirlProvider()
    provider.configure_provider(Diagnostics(), {"endpoint": cp.url, "token": cp.admin_token})
    resource = ConfigSectionResource(provider)
    state = {
        "id": f"trust-domain-deployment/{tdd}/KeyLifecycle",
        "scope": "trust-domain-deployment",
        "scope_id": tdd,
        "section": "KeyLifecycle",
        "yaml": KL,
    }
    client = provider.client
    put_config_now = client.put_config
    cut_in: list[str] = []  # what another writer PUTs between our read and our write, once

    def another_writer_first(*args: Any, **kwargs: Any) -> Any:
        if cut_in:
            with cp.client() as admin:
                ok(put_config(admin, "trust-domain-deployment", tdd, cut_in.pop()))
        return put_config_now(*args, **kwargs)

    client.put_config = another_writer_first  # type: ignore[method-assign]
    ctx = UpdateContext(Diagnostics(), "spirl_config_section")

    cut_in.append(KEY_MANAGER_AZURE)  # another section: retried, both stay
    planned = {**state, "yaml": KL.replace("12h", "6h")}
    assert resource.update(ctx, state, planned) == {
        **planned,
        "wait_for_rollout": None,  # not asked to wait
        "timeouts": None,
    }
    with cp.client() as admin:
        stored = ok(admin.get(f"/v1/config/trust-domain-deployment/{tdd}"))
    assert stored["version"] == 3 and set(stored["sections"]) == {"KeyManager", "KeyLifecycle"}
    assert "6h" in stored["sections"]["KeyLifecycle"]["yaml"]

    cut_in.append(KL.replace("12h", "13h"))  # our own section: a conflict, nothing written
    assert resource.update(ctx, planned, {**state, "yaml": KL.replace("12h", "1h")}) is None
    assert "changed on the control plane since Terraform last read it" in str(ctx.diagnostics)
    with cp.client() as admin:
        stored = ok(admin.get(f"/v1/config/trust-domain-deployment/{tdd}"))
    assert stored["version"] == 4 and "13h" in stored["sections"]["KeyLifecycle"]["yaml"]
    client.close()


def test_destroying_a_join_token_where_revocation_does_not_exist_warns_and_forgets() -> None:
    """A control plane from before join tokens could be revoked has no DELETE route: destroy
    still succeeds (the token is forgotten), with a warning that it stays valid."""
    from tf.iface import DeleteContext
    from tf.utils import Diagnostics

    from controlplane.terraform.join_token import JoinTokenResource

    with fake_server("no_route") as old:
        client = ApiClient(old.url, "t0k")
        try:
            ctx = DeleteContext(diagnostics=Diagnostics(), type_name="spirl_join_token")
            state = {
                "trust_domain_deployment_id": "tdd-0123456789ab",
                "id": "jt-0123456789abcdef",
                "expires_at": "2030-01-01T00:00:00+00:00",
            }
            JoinTokenResource(SimpleNamespace(client=client)).delete(ctx, state)  # type: ignore[arg-type]
        finally:
            client.close()
        assert old.requests == 1
    [warning] = ctx.diagnostics.diagnostics
    assert warning.severity == "warning" and "2030-01-01" in warning.detail
