"""The provider's API client against a live control plane: errors become clear, typed failures."""

from __future__ import annotations

from typing import Any

import pytest

from controlplane.terraform.client import ApiClient, ApiError, ConflictError, NotFoundError
from controlplane.terraform.common import api_error_detail

pytestmark = pytest.mark.terraform

KL = "section: KeyLifecycle\nschema: v1\nspec: {jwtKeyTTL: 12h}\n"


def test_client_errors(control_plane: Any) -> None:
    client = ApiClient(control_plane.url, control_plane.admin_token)
    try:
        td = client.post("/v1/trust-domains", {"name": "example.org"})
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
