"""The web console in a real browser (headless Chromium) against real processes.

One control plane process, two `spirl-tds` servers on a simulated clock, one browser for the
module. The servers are moved to the point where every key state exists at once (an X.509 CA
key retired and its successor active, a JWT key active and its successor prepared), then the
browser signs in, walks every page and compares what it shows with what the API says, watches
the servers table take a config change live, and proves that only an admin with the CSRF token
can act. Screenshots of the main pages are written to test-artifacts/console/ (printed; git-ignored).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from support.api import console_session, make_topology, ok, put_config
from support.browser import Page, artifacts_dir, start_browser
from support.controlplane import ControlPlane, create_token, start_control_plane
from support.tds import SimClock, Tds, start_tds, wait_for

# One group: the module's fleet and browser start once, on the worker that runs the group
# (tests/unit/test_test_harness.py proves groups stay together), and the tests run in order.
pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("console-browser")]

# Lifetimes chosen so that at minute 55 every state shows: the X.509 CA key made at start is
# retired (its successor active, activation at 5/6 of 1h), the JWT key made at start still
# signs and its successor is prepared (half of 100m), and nothing has expired yet.
LIFECYCLE = "section: KeyLifecycle\nschema: v1\nspec:\n  x509CATTL: 1h\n  jwtKeyTTL: 100m\n"
DEPLOYMENT_LIFECYCLE = (
    "section: KeyLifecycle\nschema: v1\nspec:\n  x509CATTL: 1h\n  jwtKeyTTL: 2h\n"
)


@dataclass
class Fleet:
    cp: ControlPlane
    ids: dict[str, str]
    servers: list[Tds]
    viewer_token: str
    tmp: Path

    def api(self, path: str) -> Any:
        with self.cp.client() as client:
            return ok(client.get(path))

    def servers_api(self) -> list[dict[str, Any]]:
        return list(self.api(f"/v1/trust-domain-deployments/{self.ids['tdd']}/servers")["items"])


def _states(fleet: Fleet) -> dict[str, set[str]]:
    return {s["id"]: {k["state"] for k in s["keys"]} for s in fleet.servers_api()}


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    tmp = tmp_path_factory.mktemp("console")
    cp = start_control_plane(tmp)
    servers: list[Tds] = []
    try:
        with cp.client() as client:
            ids = make_topology(client)
            ok(put_config(client, "trust-domain", ids["td"], LIFECYCLE))
        clock = SimClock(tmp / "clock")
        for name in ("tds-a", "tds-b"):
            servers.append(
                start_tds(
                    cp,
                    tdd_id=ids["tdd"],
                    cluster_id=ids["cluster"],
                    tmp=tmp,
                    name=name,
                    clock=clock,
                )
            )
        fleet = Fleet(cp, ids, servers, create_token(cp.data_dir, "viewer"), tmp)
        wait_for(
            lambda: all(s["applied_version"] for s in fleet.servers_api()), what="servers to apply"
        )
        clock.jump_to(timedelta(minutes=55))
        wait_for(
            lambda: all(v == {"prepared", "active", "retired"} for v in _states(fleet).values()),
            what="every key state on both servers",
        )
        yield fleet
    finally:
        for server in servers:
            server.stop()
        cp.stop()


@pytest.fixture(scope="module")
def page(fleet: Fleet) -> Iterator[Page]:
    shots = artifacts_dir("console")
    print(f"\nconsole screenshots: {shots}")
    driver = start_browser(fleet.tmp / "chromium-profile", fleet.tmp / "chromedriver.log")
    try:
        yield Page(driver, fleet.cp.url, shots)
    finally:
        driver.quit()


def _ids(page: Page, css: str, attribute: str = "data-id") -> set[str]:
    return {str(a[attribute]) for a in page.attributes(css, [attribute])}


def test_admin_walks_every_page_and_sees_what_the_api_says(fleet: Fleet, page: Page) -> None:
    ids, cp = fleet.ids, fleet.cp
    page.open("/ui/")
    assert page.path == "/ui/login?next=%2Fui%2F"  # no session yet
    page.screenshot("0-sign-in")
    page.sign_in(cp.admin_token)
    assert page.path == "/ui/"
    assert cp.admin_token not in page.driver.page_source
    assert cp.admin_token not in str(page.driver.execute_script("return document.cookie"))

    # trust domains -> deployments -> clusters
    assert _ids(page, "li.td") == {td["id"] for td in fleet.api("/v1/trust-domains")["items"]}
    assert _ids(page, "li.tdd") == {
        d["id"] for d in fleet.api("/v1/trust-domain-deployments")["items"]
    }
    assert _ids(page, "li.cluster") == {c["id"] for c in fleet.api("/v1/clusters")["items"]}
    page.screenshot("1-trust-domains")
    page.one(f'li.tdd[data-id="{ids["tdd"]}"] > a').click()
    page.wait(lambda: page.path == f"/ui/deployments/{ids['tdd']}", "the deployment page")

    # servers: state, versions, key manager as the API reports them
    api_servers = {s["id"]: s for s in fleet.servers_api()}
    cells = {
        "applied": "td.applied",
        "desired": "td.desired",
        "state": ".badge.state",
        "km": "td.km",
    }
    shown = page.rows("tr[data-server]", "data-server", cells)
    assert shown == {
        server_id: {
            "applied": str(s["applied_version"]),
            "desired": str(s["desired_version"]),
            "state": s["health"],
            "km": s["key_manager"]["type"],
        }
        for server_id, s in api_servers.items()
    }
    assert page.text("#applied-count") == "2"
    page.screenshot("2-deployment-servers")

    # the key timeline: one bar per key, in its state
    page.one("#timeline-link").click()
    page.wait(lambda: page.all("svg.timeline rect.key"), "the timeline")
    bars = page.attributes("svg.timeline rect.key", ["data-kid", "class"])
    api_keys = {k["kid"]: k for s in api_servers.values() for k in s["keys"]}
    assert len(bars) == len(api_keys) == 8
    assert {b["data-kid"] for b in bars} == set(api_keys)
    for bar in bars:
        classes = str(bar["class"]).split()
        assert {c for c in classes if c.startswith("s-")} == {
            f"s-{api_keys[str(bar['data-kid'])]['state']}"
        }
        assert "m-default" in classes
    # one row per server and key kind
    assert len(page.all("svg.timeline g.row")) == 4
    assert page.one("#clock-note").is_displayed()  # the servers' clocks run 55 minutes ahead
    some_kid = str(bars[0]["data-kid"])
    page.one(f'rect.key[data-kid="{some_kid}"]').click()
    page.wait(lambda: page.all('#key-detail dd[data-field="kid"]'), "the key's details")
    key = api_keys[some_kid]
    assert page.text('#key-detail dd[data-field="kid"]') == some_kid
    assert page.text('#key-detail dd[data-field="state"]') == key["state"]
    assert page.text('#key-detail dd[data-field="key file"]') == key["provider_ref"]
    page.screenshot("3-key-timeline")

    # the cluster: its effective config, section by section
    page.open(f"/ui/clusters/{ids['cluster']}")
    effective = fleet.api(
        f"/v1/effective-config?trust_domain_deployment_id={ids['tdd']}&cluster_id={ids['cluster']}"
    )
    assert _ids(page, "#effective tr[data-section]", "data-section") == set(effective["sections"])
    assert _ids(page, "tr[data-server]", "data-server") == set(api_servers)
    page.screenshot("4-cluster")

    # the trust bundle
    page.open(f"/ui/trust-domains/{ids['td']}")
    page.one("#td-bundle").click()
    public = httpx.get(f"{cp.url}/v1/trust-domains/{ids['td']}/bundle").json()
    assert _ids(page, "#bundle-keys tr[data-kid]", "data-kid") == {
        k["kid"] for k in public["keys"] if "kid" in k
    }
    assert page.text("#bundle-sequence") == str(public["spiffe_sequence"])
    page.screenshot("5-trust-bundle")

    # config: current version, history, the YAML of a version, a side-by-side diff
    with cp.client() as client:
        for n in (2, 3):
            yaml = LIFECYCLE.replace("100m", f"{100 + n}m")
            ok(put_config(client, "trust-domain", ids["td"], yaml))
    page.open(f"/ui/trust-domains/{ids['td']}")
    page.one("#td-config").click()
    current = fleet.api(f"/v1/config/trust-domain/{ids['td']}")
    history = fleet.api(f"/v1/config/trust-domain/{ids['td']}/history")
    assert page.text("#current-version") == str(current["version"]) == "3"
    assert [r.get_attribute("data-version") for r in page.all("#history tr[data-version]")] == [
        str(v["version"]) for v in history["items"]
    ]
    page.screenshot("6-config-history")
    page.one('input[name="from"][value="1"]').click()
    page.one('input[name="to"][value="3"]').click()
    page.one("#diff-button").click()
    page.wait(lambda: "/diff" in page.path, "the diff page")
    diff = fleet.api(f"/v1/config/trust-domain/{ids['td']}/diff?from=1&to=3")
    shown = {
        s.get_attribute("data-section"): s.get_attribute("data-change")
        for s in page.all("section.diff")
    }
    assert (
        shown
        == {s["section"]: s["change"] for s in diff["sections"]}
        == {"KeyLifecycle": "changed"}
    )
    old_line = page.one("section.diff tr.changed td.old").text
    new_line = page.one("section.diff tr.changed td.new").text
    assert "100m" in old_line and "103m" in new_line
    page.screenshot("7-config-diff")
    page.open(f"/ui/config/trust-domain/{ids['td']}/versions/2")
    version = fleet.api(f"/v1/config/trust-domain/{ids['td']}/versions/2")
    assert page.text('section.yaml[data-section="KeyLifecycle"] pre') == (
        version["sections"]["KeyLifecycle"]["yaml"].strip()
    )

    # the audit log, filtered by scope and actor
    page.open("/ui/audit")
    page.one("#filter-scope").send_keys("trust-domain")
    page.one("#filter-scope-id").send_keys(ids["td"])
    page.one("#filter-actor").send_keys("admin:")
    page.one("#filter-button").click()
    page.wait(lambda: "actor=admin" in page.path, "the filtered audit log")
    expected = [
        str(e["id"])
        for e in fleet.api("/v1/audit?limit=500")["items"]
        if e["scope"] == "trust-domain" and e["scope_id"] == ids["td"] and "admin:" in e["actor"]
    ]
    assert [r.get_attribute("data-id") for r in page.all("#audit tr[data-id]")] == expected
    assert len(expected) == 4  # the trust domain's creation and three config versions
    page.screenshot("8-audit-log")


def applied(page: Page) -> dict[str, str | None]:
    """{server id: the applied version its row shows}."""
    rows = page.rows("tr[data-server]", "data-server", {"applied": "td.applied"})
    return {server_id: row["applied"] for server_id, row in rows.items()}


def test_servers_page_shows_a_config_change_live(fleet: Fleet, page: Page) -> None:
    ids, cp = fleet.ids, fleet.cp
    page.sign_in(cp.admin_token)
    page.open(f"/ui/deployments/{ids['tdd']}")
    page.driver.execute_script("window.spirlNoReload = 42;")
    before = applied(page)

    document = fleet.tmp / "deployment-lifecycle.yaml"
    document.write_text(DEPLOYMENT_LIFECYCLE)
    cp.spirlctl("config", "set", "trust-domain-deployment", "--id", ids["tdd"], str(document))
    target = fleet.api(
        f"/v1/effective-config?trust_domain_deployment_id={ids['tdd']}&cluster_id={ids['cluster']}"
    )["version"]
    assert all(v != str(target) for v in before.values())

    page.wait(
        lambda: set(applied(page).values()) == {str(target)}, "both servers to show the new version"
    )
    assert page.driver.execute_script("return window.spirlNoReload") == 42  # updated in place
    assert {s["applied_version"] for s in fleet.servers_api()} == {target}
    page.screenshot("9-servers-after-config-set")


def test_only_an_admin_with_the_csrf_token_can_act(fleet: Fleet, page: Page) -> None:
    ids, cp = fleet.ids, fleet.cp
    scope_url = f"/ui/config/trust-domain/{ids['td']}"

    def version() -> int:
        return int(fleet.api(f"/v1/config/trust-domain/{ids['td']}")["version"])

    start = version()

    # A viewer sees the history but no action, and is refused when it posts one anyway.
    page.sign_in(fleet.viewer_token)
    page.open(scope_url)
    assert page.all("#history tr[data-version]") and not page.all("a.rollback")
    assert "viewer" in page.text("#who")
    page.open(f"{scope_url}/rollback?version=1")
    assert page.text("#error-code") == "forbidden"
    page.sign_out()
    page.open(scope_url)
    assert page.path.startswith("/ui/login")  # signed out means signed out

    with (
        console_session(cp.url, fleet.viewer_token) as (viewer, viewer_csrf),
        console_session(cp.url, cp.admin_token) as (admin, _),
    ):
        refused = viewer.post(f"{scope_url}/rollback", data={"csrf": viewer_csrf, "version": "1"})
        assert refused.status_code == 403 and "admin" in refused.text
        # An admin without the CSRF token (or with another session's) is refused too.
        for form in ({"version": "1"}, {"version": "1", "csrf": viewer_csrf}):
            assert admin.post(f"{scope_url}/rollback", data=form).status_code == 403
    assert version() == start  # nothing was written

    # The admin in the browser: roll back to version 1 after seeing what changes.
    page.sign_in(cp.admin_token)
    page.open(scope_url)
    page.one('#history tr[data-version="1"] a.rollback').click()
    page.wait(lambda: page.all("#rollback-button"), "the rollback confirmation")
    assert (
        page.one('section.diff[data-section="KeyLifecycle"]').get_attribute("data-change")
        == "changed"
    )
    page.screenshot("10-rollback-confirm")
    page.one("#rollback-button").click()
    page.wait(lambda: page.all("#written"), "the rollback to finish")
    assert version() == start + 1
    config = fleet.api(f"/v1/config/trust-domain/{ids['td']}")
    first = fleet.api(f"/v1/config/trust-domain/{ids['td']}/versions/1")
    assert config["sections"]["KeyLifecycle"]["yaml"] == first["sections"]["KeyLifecycle"]["yaml"]
    last = fleet.api("/v1/audit?limit=1")["items"][0]
    assert (last["action"], last["actor"], last["new_version"]) == (
        "config.rollback",
        "admin:admin-token",
        start + 1,
    )
