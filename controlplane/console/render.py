"""Templates, the console's HTTP headers, and the small formatting helpers pages share.

Templates and static files are package data (`controlplane/console/templates`, `.../static`),
loaded through the package so they work the same from a checkout and from an installed wheel.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import jinja2
from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.responses import Response
from starlette.templating import Jinja2Templates

import controlplane
from controlplane.console.timeline import parse_time

__all__ = [
    "CONTENT_SECURITY_POLICY",
    "SecurityHeaders",
    "ago",
    "duration",
    "render",
    "short_error",
    "state_class",
    "when",
]

# Scripts and styles only from our own static files: no inline script, no inline style, no CDN.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SHORT_ERROR_CHARS = 90


def when(value: str | datetime | None) -> str:
    """An ISO time as 'YYYY-MM-DD HH:MM:SSZ' (UTC), or '-'."""
    at = parse_time(value, naive_as_utc=True)
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ") if at else "-"


def ago(value: str | datetime | None, now: datetime | None = None) -> str:
    """How long ago, coarsely: '4s ago', '3m ago', '2h ago', '5d ago'; '-' for none."""
    at = parse_time(value, naive_as_utc=True)
    if at is None:
        return "-"
    seconds = int(((now or datetime.now(UTC)) - at).total_seconds())
    if seconds < 0:
        return "just now"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit} ago"
    return f"{seconds}s ago"


def duration(seconds: float) -> str:
    """A length of time for people: '45s', '10m 30s', '3h 5m', '2d 4h'."""
    total = int(abs(round(seconds)))
    parts: list[str] = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if total >= size or (unit == "s" and not parts):
            parts.append(f"{total // size}{unit}")
            total %= size
    return " ".join(parts[:2])


def short_error(text: str | None) -> str:
    """The first line of an error, cut to fit a table cell (the full text is shown on demand)."""
    if not text:
        return ""
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line if len(line) <= SHORT_ERROR_CHARS else line[: SHORT_ERROR_CHARS - 1] + "…"


def state_class(state: object) -> str:
    """A CSS class for any server state the data holds (unknown states get a neutral look)."""
    text = "".join(c for c in str(state or "unknown").lower() if c.isalnum() or c == "-")
    return f"st-{text or 'unknown'}"


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("controlplane.console", "templates"),
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters.update(
        when=when, ago=ago, duration=duration, short_error=short_error, state_class=state_class
    )
    env.globals["asset_version"] = controlplane.__version__
    return env


_templates = Jinja2Templates(env=_environment())


def render(
    request: Request, template: str, context: dict[str, Any], status_code: int = 200
) -> Response:
    context.setdefault("user", None)
    context.setdefault("crumbs", [])
    return _templates.TemplateResponse(request, template, context, status_code=status_code)


def fragment(template: str, context: dict[str, Any]) -> str:
    """A partial template rendered to text (the parts the console's script refreshes)."""
    return _templates.get_template(template).render(context)


class SecurityHeaders:
    """ASGI middleware for everything under /ui: a strict CSP, no framing, no sniffing, no caching
    of pages (they show live data and are only for the signed-in user)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        static = scope["path"].startswith("/ui/static/")

        async def send_with_headers(message: Any) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers["content-security-policy"] = CONTENT_SECURITY_POLICY
                headers["x-content-type-options"] = "nosniff"
                headers["x-frame-options"] = "DENY"
                headers["referrer-policy"] = "no-referrer"
                headers["cache-control"] = "no-cache" if static else "no-store"
            await send(message)

        await self.app(scope, receive, send_with_headers)
