"""The web console over HTTP, in process, on both databases: sign-in, headers, actions, data.

What a browser shows and does is proven in tests/e2e/test_console_browser.py; here are the
rules a browser cannot see or would not break: cookie flags, the CSRF and role checks on every
action, the Content-Security-Policy and the absence of inline script, the token never echoed.
"""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from typing import Any

import httpx
import pytest

import controlplane

from support.api import (
    KEY_LIFECYCLE,
    console_session,
    make_topology,
    ok,
    put_config,
    register_server,
    status_report,
)

SCOPE = "trust-domain"


def _post_status(url: str, server: dict[str, Any], report: dict[str, Any]) -> httpx.Response:
    return httpx.post(
        f"{url}/v1/servers/{server['server_id']}/status",
        json=report,
        headers={"Authorization": f"Bearer {server['credential']}"},
    )


@pytest.fixture
def world(live_api) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    """A topology with two config versions and a server that reported one key."""
    with live_api.client() as c:
        ids = make_topology(c)
        ok(put_config(c, SCOPE, ids["td"], KEY_LIFECYCLE))
        ok(put_config(c, SCOPE, ids["td"], KEY_LIFECYCLE.replace("12h", "6h")))
        server = register_server(c, ids["tdd"], ids["cluster"], name="tds-a")
    report = status_report("kid-1", datetime.now(UTC) + timedelta(hours=1))
    report["health"], report["error"] = "UNHEALTHY", "refused: " + "x" * 300
    assert _post_status(live_api.url, server, report).status_code == 204
    return {**ids, "server": server}


def _pages(ids: dict[str, Any]) -> list[str]:
    return [
        "/ui/",
        f"/ui/trust-domains/{ids['td']}",
        f"/ui/trust-domains/{ids['td']}/bundle",
        f"/ui/deployments/{ids['tdd']}",
        f"/ui/deployments/{ids['tdd']}/servers/fragment",
        f"/ui/deployments/{ids['tdd']}/timeline",
        f"/ui/deployments/{ids['tdd']}/timeline/fragment",
        f"/ui/deployments/{ids['tdd']}/keys/kid-1",
        f"/ui/clusters/{ids['cluster']}",
        f"/ui/config/{SCOPE}/{ids['td']}",
        f"/ui/config/{SCOPE}/{ids['td']}/versions/1",
        f"/ui/config/{SCOPE}/{ids['td']}/diff?from=1&to=2",
        f"/ui/config/{SCOPE}/{ids['td']}/rollback?version=1",
        f"/ui/audit?scope={SCOPE}&actor=admin",
    ]


class _Inline(HTMLParser):
    """Collects what a strict CSP would block: inline scripts, handlers, styles, foreign sources."""

    def __init__(self) -> None:
        super().__init__()
        self.problems: list[str] = []
        self.scripts: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        names = dict(attrs)
        if tag == "script":
            if not (names.get("src") or "").startswith("/ui/static/"):
                self.problems.append(f"script {names}")
            self.scripts.append(names.get("src") or "")
        if tag == "style" or "style" in names:
            self.problems.append(f"inline style on <{tag}>")
        for name, value in attrs:
            if name.startswith("on"):
                self.problems.append(f"handler {name} on <{tag}>")
            if name in ("src", "href") and value and re.match(r"^(https?:)?//", value):
                self.problems.append(f"external {name}={value}")


def test_pages_need_a_session(live_api, world):
    with httpx.Client(base_url=live_api.url) as anonymous:
        page = anonymous.get(f"/ui/deployments/{world['tdd']}?x=1")
        assert page.status_code == 303
        assert (
            page.headers["location"]
            == f"/ui/login?next=%2Fui%2Fdeployments%2F{world['tdd']}%3Fx%3D1"
        )
        live = anonymous.get(
            f"/ui/deployments/{world['tdd']}/servers/fragment", headers={"X-Console-Refresh": "1"}
        )
        assert live.status_code == 401  # the page's script sends the user to sign in
        assert anonymous.get("/ui", follow_redirects=True).url.path == "/ui/login"


def test_sign_in_takes_only_user_tokens_and_sets_a_strict_cookie(live_api, world, caplog):
    caplog.set_level(logging.DEBUG, logger="controlplane")

    def attempt(token: str, next_url: str = "/ui/") -> httpx.Response:
        with httpx.Client(base_url=live_api.url) as client:
            nonce = re.search(r'login_nonce" value="([^"]+)"', client.get("/ui/login").text)
            assert nonce is not None
            return client.post(
                "/ui/login", data={"token": token, "login_nonce": nonce.group(1), "next": next_url}
            )

    unknown = attempt("spirl_not-a-token")
    assert unknown.status_code == 401 and "spirl_console=" not in unknown.headers.get(
        "set-cookie", ""
    )
    server = attempt(world["server"]["credential"])
    assert server.status_code == 403 and "spirl_console=" not in server.headers.get(
        "set-cookie", ""
    )

    signed = attempt(live_api.viewer_token, next_url="//evil.example/ui/")
    assert signed.status_code == 303 and signed.headers["location"] == "/ui/"  # no open redirect
    cookie = next(
        c for c in signed.headers.get_list("set-cookie") if c.startswith("spirl_console=")
    )
    flags = {part.strip().lower() for part in cookie.split(";")[1:]}
    assert {"httponly", "path=/ui", "samesite=strict"} <= flags

    # Another site cannot post the sign-in form: without the form's nonce cookie it is refused.
    forged = httpx.post(
        f"{live_api.url}/ui/login",
        data={"token": live_api.admin_token, "login_nonce": "guess", "next": "/ui/"},
    )
    assert forged.status_code == 403 and "spirl_console=" not in forged.headers.get(
        "set-cookie", ""
    )

    # The token is never echoed: not in any page, not in the logs.
    with console_session(live_api.url, live_api.admin_token) as (client, _):
        for path in _pages(world):
            assert live_api.admin_token not in client.get(path).text, path
    # What the server logs (the test's own HTTP client logs the cookies it sends, so it is left out).
    ours = [r for r in caplog.records if r.name.startswith(("controlplane", "uvicorn"))]
    logged = "\n".join(r.getMessage() + str(r.__dict__) for r in ours)
    assert "console sign-in" in logged
    assert live_api.admin_token not in logged and live_api.viewer_token not in logged


def test_every_page_has_a_strict_csp_and_no_inline_script(live_api, world):
    scripts: set[str] = set()
    with console_session(live_api.url, live_api.admin_token) as (client, _):
        for path in _pages(world):
            response = client.get(path)
            assert response.status_code == 200, (path, response.text[:500])
            csp = response.headers["content-security-policy"]
            assert "script-src 'self'" in csp and "default-src 'none'" in csp
            assert "unsafe-inline" not in csp and "frame-ancestors 'none'" in csp
            assert response.headers["cache-control"] == "no-store"
            checker = _Inline()
            checker.feed(response.text)
            assert checker.problems == [], (path, checker.problems)
            scripts.update(checker.scripts)
        assert scripts == {f"/ui/static/console.js?v={controlplane.__version__}"}
        for asset, kind in (("console.js", "javascript"), ("console.css", "text/css")):
            static = client.get(f"/ui/static/{asset}")
            assert static.status_code == 200 and kind in static.headers["content-type"]
            assert static.headers["x-content-type-options"] == "nosniff"


def test_servers_table_shows_any_state_and_the_error_in_full_on_demand(live_api, world):
    with console_session(live_api.url, live_api.viewer_token) as (client, _):
        rows = client.get(f"/ui/deployments/{world['tdd']}/servers/fragment").text
    row = rows[rows.index(f'id="server-{world["server"]["server_id"]}"') :]
    assert 'class="badge state st-unhealthy">UNHEALTHY<' in row
    short = re.search(r"<summary>([^<]*)</summary>", row)
    assert short is not None and len(short.group(1)) == 90  # one short line in the table
    assert "refused: " + "x" * 300 in row  # the full text behind it


def _version(live_api, td: str) -> int:  # type: ignore[no-untyped-def]
    with live_api.client() as c:
        return int(ok(c.get(f"/v1/config/{SCOPE}/{td}"))["version"])


def test_actions_need_an_admin_and_the_csrf_token(live_api, world):
    td, url = world["td"], f"/ui/config/{SCOPE}/{world['td']}/rollback"
    with (
        console_session(live_api.url, live_api.viewer_token) as (viewer, viewer_csrf),
        console_session(live_api.url, live_api.admin_token) as (admin, admin_csrf),
    ):
        # A viewer sees the history but no rollback, and is refused with a valid CSRF token.
        history = viewer.get(f"/ui/config/{SCOPE}/{td}").text
        assert 'data-version="1"' in history and "rollback?version" not in history
        assert "rollback?version=1" in admin.get(f"/ui/config/{SCOPE}/{td}").text
        assert viewer.get(f"{url}?version=1").status_code == 403
        refused = viewer.post(url, data={"csrf": viewer_csrf, "version": "1"})
        assert refused.status_code == 403 and "admin" in refused.text
        # An admin without the token, with another session's, or without a form is refused.
        for form in ({"version": "1"}, {"version": "1", "csrf": viewer_csrf}, {}):
            assert admin.post(url, data=form).status_code == 403, form
        assert admin.post(url, json={"version": 1, "csrf": admin_csrf}).status_code == 400
        # No session at all (another site's form post arrives without the SameSite cookie).
        assert (
            httpx.post(
                f"{live_api.url}{url}", data={"csrf": admin_csrf, "version": "1"}
            ).status_code
            == 403
        )
        assert _version(live_api, td) == 2  # nothing was written

        stale = admin.post(url, data={"csrf": admin_csrf, "version": "1", "expected_version": "1"})
        assert stale.status_code == 409 and _version(live_api, td) == 2
        done = admin.post(url, data={"csrf": admin_csrf, "version": "1", "expected_version": "2"})
        assert done.status_code == 303 and done.headers["location"].endswith("?written=3")
        assert _version(live_api, td) == 3
    with live_api.client() as c:
        event = ok(c.get("/v1/audit?limit=1"))["items"][0]
    assert (event["action"], event["actor"], event["new_version"]) == (
        "config.rollback",
        "admin:test-admin",
        3,
    )


def test_sign_out_needs_the_csrf_token_and_ends_the_session(live_api, world):
    with console_session(live_api.url, live_api.admin_token) as (client, csrf):
        assert client.post("/ui/logout").status_code == 403
        assert client.get("/ui/").status_code == 200  # still signed in
        out = client.post("/ui/logout", data={"csrf": csrf})
        assert out.status_code == 303 and out.headers["location"] == "/ui/login"
        assert client.get("/ui/").status_code == 303


def test_bad_input_gets_an_error_page_not_a_crash(live_api, world):
    with console_session(live_api.url, live_api.viewer_token) as (client, _):
        for path, status in (
            ("/ui/config/nowhere/x", 404),
            (f"/ui/config/{SCOPE}/td-000000000000", 404),
            (f"/ui/config/{SCOPE}/{world['td']}/versions/99", 404),
            (f"/ui/config/{SCOPE}/{world['td']}/diff?from=1&to=x", 400),
            ("/ui/audit?scope=galaxy", 400),
            ("/ui/deployments/tdd-000000000000/timeline", 404),
            (f"/ui/deployments/{world['tdd']}/keys/kid-none", 404),
        ):
            page = client.get(path)
            assert page.status_code == status, path
            assert 'id="error-code"' in page.text and "text/html" in page.headers["content-type"]


ROLLOUT_POLICY = """\
section: Rollout
schema: v1
spec:
  stages:
    - {name: canary, servers: 1, bake: 1h}
"""


def test_the_deployment_page_shows_the_staged_rollout_and_admins_promote_or_abort(live_api):
    with live_api.client() as c:
        ids = make_topology(c)
        ok(put_config(c, "trust-domain-deployment", ids["tdd"], ROLLOUT_POLICY))
        servers = [register_server(c, ids["tdd"], name=n) for n in ("a", "b")]
        ok(put_config(c, "trust-domain-deployment", ids["tdd"], KEY_LIFECYCLE))
    page_url = f"/ui/deployments/{ids['tdd']}"
    promote, abort = f"{page_url}/rollout/promote", f"{page_url}/rollout/abort"

    def phase() -> str:
        with live_api.client() as c:
            return str(ok(c.get(f"/v1/trust-domain-deployments/{ids['tdd']}/rollout"))["phase"])

    with (
        console_session(live_api.url, live_api.viewer_token) as (viewer, viewer_csrf),
        console_session(live_api.url, live_api.admin_token) as (admin, admin_csrf),
    ):
        seen = viewer.get(page_url).text
        assert 'id="rollout-phase">in_progress<' in seen and ">canary</strong>" in seen
        assert 'data-stage="1"' in seen and "promote-form" not in seen  # no buttons for viewers
        assert viewer.post(promote, data={"csrf": viewer_csrf}).status_code == 403
        page = admin.get(page_url).text
        assert (
            'id="promote-form"' in page and "Promote to all" in page and 'id="abort-form"' in page
        )
        # The servers table gives each server its own target: b stays on the stable config.
        rows = admin.get(f"{page_url}/servers/fragment").text
        targets = dict(
            re.findall(r'id="server-(tds-[0-9a-f]+)".*?class="num target">(\d+)<', rows, re.S)
        )
        assert targets[servers[0]["server_id"]] > targets[servers[1]["server_id"]]
        assert admin.post(promote, data={}).status_code == 403  # no CSRF token
        assert phase() == "in_progress"
        moved = admin.post(promote, data={"csrf": admin_csrf})
        assert moved.status_code == 303 and moved.headers["location"].endswith("#rollout")
        assert ">all</strong>" in admin.get(page_url).text
        assert admin.post(abort, data={"csrf": admin_csrf}).status_code == 303
        assert phase() == "aborted"
        after = admin.get(page_url).text
        assert 'id="rollout-phase">aborted<' in after and "promote-form" not in after
        refused = admin.post(abort, data={"csrf": admin_csrf})  # nothing left to abort
        assert refused.status_code == 409 and "aborted" in refused.text
    with live_api.client() as c:
        events = ok(c.get("/v1/audit", params={"limit": 5}))["items"]
    assert [(e["action"], e["actor"], e["details"]["reason"]) for e in events[:2]] == [
        ("rollout.abort", "admin:test-admin", "from the web console"),
        ("rollout.promote", "admin:test-admin", "from the web console"),
    ]
