"""The web console at /ui/: server-rendered pages over the services layer, in the API's process.

`mount()` is the one thing the API application adds to its route table. Pages are Jinja2
templates (package data), a small script and a stylesheet served from the package (no CDN, no
inline script, a strict Content-Security-Policy), so it works offline. Modules: `session`
(cookie sign-in, CSRF), `pages` (what every page shares), `views` and `config_views` (read-only
pages), `actions` (sign-in/out and admin actions), `render` (templates, headers, formatting),
and two pure builders: `timeline` (the key timeline SVG) and `sidebyside` (the diff rows).
"""

from __future__ import annotations

from starlette.routing import Mount, Route, Router
from starlette.staticfiles import StaticFiles

__all__ = ["PREFIX", "mount"]

PREFIX = "/ui"


def mount() -> Mount:
    from controlplane.console import actions, config_views, views
    from controlplane.console.render import SecurityHeaders

    routes = [
        Route("/", views.home, methods=["GET"]),
        Route("/trust-domains/{td_id}", views.trust_domain, methods=["GET"]),
        Route("/trust-domains/{td_id}/bundle", views.bundle, methods=["GET"]),
        Route("/deployments/{tdd_id}", views.deployment, methods=["GET"]),
        Route("/deployments/{tdd_id}/servers/fragment", views.deployment_servers, methods=["GET"]),
        Route("/deployments/{tdd_id}/timeline", views.deployment_timeline, methods=["GET"]),
        Route(
            "/deployments/{tdd_id}/timeline/fragment",
            views.deployment_timeline_svg,
            methods=["GET"],
        ),
        Route("/deployments/{tdd_id}/keys/{kid}", views.deployment_key, methods=["GET"]),
        Route("/clusters/{cluster_id}", views.cluster, methods=["GET"]),
        Route("/config/{scope}/{scope_id}", config_views.config, methods=["GET"]),
        Route(
            "/config/{scope}/{scope_id}/versions/{version}",
            config_views.config_version,
            methods=["GET"],
        ),
        Route("/config/{scope}/{scope_id}/diff", config_views.config_diff, methods=["GET"]),
        Route("/audit", views.audit, methods=["GET"]),
        *actions.ACTION_ROUTES,
        Mount("/static", StaticFiles(packages=[("controlplane.console", "static")])),
    ]
    return Mount(PREFIX, app=SecurityHeaders(Router(routes)))
