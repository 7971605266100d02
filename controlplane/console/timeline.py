"""The key timeline: an SVG picture of every key a deployment's servers hold.

One row per server and key kind; each key is a bar from its creation to its expiry, shaded by
state (prepared, active, retired) and coloured by the key manager that holds it; a "now" line,
and a marker for each config change. Overlapping keys of one row (the next key is prepared
while the current one signs) stack in lanes inside the row.

Pure: report data in, SVG markup out (every value escaped), so it is unit-tested without a
browser and costs one pass over the keys. Colours and shades come from CSS classes (the
console's stylesheet; the page's Content-Security-Policy allows no inline style). Each bar's
`<title>` (kid, state, key manager, dates) is the tooltip on hover; a click shows `key_details`
(with the key manager's id for the key, e.g. the Key Vault key id) in a panel.

Cost: about 220 bytes per key, so 100 servers with 6 keys each stay near 160 KB.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from html import escape
from typing import Any

from controlplane.fleet import key_manager_type

__all__ = [
    "KEY_KINDS",
    "KEY_MANAGER_CLASSES",
    "KEY_STATES",
    "ConfigMarker",
    "Layout",
    "ServerKeys",
    "TimelineKey",
    "build_timeline",
    "key_details",
    "servers_from_reports",
]

KEY_KINDS = {"x509-ca": "X.509 CA", "jwt": "JWT"}
KEY_STATES = ("prepared", "active", "retired")
KEY_MANAGER_CLASSES = {"default": "m-default", "azureKeyVault": "m-akv", "webhook": "m-webhook"}
# What each key manager calls the id of a key (shown on hover).
PROVIDER_REF_LABELS = {"azureKeyVault": "Key Vault key id", "webhook": "key URL"}
# Candidate axis steps; the smallest that gives at most Layout.max_ticks ticks is used.
_TICK_STEPS = [
    timedelta(seconds=s)
    for s in (10, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400)
] + [timedelta(days=d) for d in (2, 7, 14, 30, 90, 180, 365)]
_MAX_MARKER_LABELS = 6


@dataclass(frozen=True)
class TimelineKey:
    kid: str
    kind: str
    state: str
    key_manager: str  # the key manager's type: default, azureKeyVault, webhook, ...
    expires: datetime
    created: datetime | None = None  # None: the server did not report it (older servers)
    provider_ref: str = ""  # e.g. the Key Vault key id
    key_type: str = ""


@dataclass(frozen=True)
class ServerKeys:
    server_id: str
    name: str
    keys: tuple[TimelineKey, ...]


@dataclass(frozen=True)
class ConfigMarker:
    at: datetime
    label: str


@dataclass(frozen=True)
class Layout:
    width: int = 1000
    label_width: int = 200
    lane_height: int = 14
    bar_height: int = 10
    row_padding: int = 6
    axis_height: int = 30
    max_ticks: int = 8


def servers_from_reports(servers: Iterable[Mapping[str, Any]]) -> list[ServerKeys]:
    """The timeline's input from the servers' key inventories (as `list_servers` returns them).

    Keys with a missing or unreadable expiry are left out: a bar needs an end.
    """
    out = []
    for server in servers:
        keys = []
        for key in server.get("keys") or []:
            expires = parse_time(key.get("not_after"))
            if expires is None or not isinstance(key.get("kid"), str):
                continue
            manager = key.get("key_manager")
            keys.append(
                TimelineKey(
                    kid=key["kid"],
                    kind=str(key.get("kind") or "?"),
                    state=str(key.get("state") or "?"),
                    key_manager=key_manager_type(manager) or "unknown",
                    expires=expires,
                    created=parse_time(key.get("not_before")),
                    provider_ref=str(key.get("provider_ref") or ""),
                    key_type=str(key.get("key_type") or ""),
                )
            )
        out.append(ServerKeys(str(server["id"]), str(server.get("name") or ""), tuple(keys)))
    return out


def parse_time(value: object, *, naive_as_utc: bool = False) -> datetime | None:
    """An RFC 3339 time string as a datetime, or None. A time without a zone is None (a key
    time must say where it is), or UTC with `naive_as_utc` (the control plane's own times)."""
    if isinstance(value, datetime):
        return value
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is not None:
        return parsed
    return parsed.replace(tzinfo=UTC) if naive_as_utc else None


def build_timeline(
    servers: Sequence[ServerKeys],
    markers: Sequence[ConfigMarker],
    now: datetime,
    layout: Layout = Layout(),
) -> str:
    """The SVG markup of the timeline (a complete `<svg>` element)."""
    keys = [k for s in servers for k in s.keys]
    start, end = _window(keys, now, markers)
    plot_left, plot_width = layout.label_width, layout.width - layout.label_width - 10
    span = (end - start).total_seconds()

    def x(at: datetime) -> float:
        offset = (at - start).total_seconds() / span
        return round(plot_left + min(max(offset, 0.0), 1.0) * plot_width, 1)

    body: list[str] = []
    y = layout.axis_height
    for server in sorted(servers, key=lambda s: (s.name, s.server_id)):
        for kind, kind_keys in _rows(server):
            lanes = _lanes(kind_keys, start)
            height = max(len(lanes), 1) * layout.lane_height + layout.row_padding
            label = f"{server.name or server.server_id} · {KEY_KINDS.get(kind, kind)}"
            body.append(
                f'<g class="row" data-server="{_e(server.server_id)}" data-kind="{_e(kind)}">'
                f'<rect class="bg" x="0" y="{y}" width="{layout.width}" height="{height}"/>'
                f'<text x="6" y="{y + height / 2 + 4:.0f}">{_e(_clip(label, 30))}</text>'
            )
            for lane_index, lane in enumerate(lanes):
                bar_y = y + layout.row_padding / 2 + lane_index * layout.lane_height
                for key in lane:
                    left = x(key.created) if key.created else plot_left
                    width = max(x(key.expires) - left, 2.0)
                    body.append(
                        f'<rect class="{_bar_class(key)}" data-kid="{_e(key.kid)}" x="{left}" '
                        f'y="{bar_y:.0f}" width="{width:.1f}" height="{layout.bar_height}">'
                        f"<title>{_e(_hover(key))}</title></rect>"
                    )
            body.append("</g>")
            y += height
    if not keys:
        body.append(
            f'<text class="empty" x="{plot_left}" y="{y + 20}">'
            "no keys reported by the servers of this deployment</text>"
        )
        y += 30
    height = y + 6
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="timeline" '
        f'viewBox="0 0 {layout.width} {height}" width="{layout.width}" height="{height}" '
        'role="img" aria-label="Key timeline">',
        *_axis(start, end, x, layout, height),
        *body,
        *_markers(markers, start, end, x, layout, height),
        f'<g class="now"><line x1="{x(now)}" x2="{x(now)}" y1="14" y2="{height}"/>'
        f'<text x="{x(now) + 3}" y="12">now</text><title>now: {_when(now)}</title></g>',
        "</svg>",
    ]
    return "".join(parts)


def _window(
    keys: Sequence[TimelineKey], now: datetime, markers: Sequence[ConfigMarker]
) -> tuple[datetime, datetime]:
    """From the oldest creation (or now) to the latest expiry (or now), with a margin; reaching
    back to the last config change when it is near (it is often why the keys look as they do)."""
    starts = [k.created for k in keys if k.created is not None] + [now]
    ends = [k.expires for k in keys] + [now]
    start, end = min(starts), max(ends)
    if end - start < timedelta(minutes=1):
        start, end = now - timedelta(minutes=30), now + timedelta(minutes=30)
    past = [m.at for m in markers if m.at <= now]
    if past and start - (end - start) / 2 <= max(past) < start:
        start = max(past)
    margin = (end - start) * 0.03
    return start - margin, end + margin


def _rows(server: ServerKeys) -> list[tuple[str, list[TimelineKey]]]:
    """(kind, keys) per row: known kinds first; a server without keys still gets one row."""
    kinds = [k for k in KEY_KINDS if any(key.kind == k for key in server.keys)]
    kinds += sorted({key.kind for key in server.keys} - set(KEY_KINDS))
    if not kinds:
        return [("none", [])]
    return [(kind, [k for k in server.keys if k.kind == kind]) for kind in kinds]


def _lanes(keys: list[TimelineKey], start: datetime) -> list[list[TimelineKey]]:
    """Greedy interval packing: a key goes in the first lane whose last key ended before it."""
    lanes: list[list[TimelineKey]] = []
    for key in sorted(keys, key=lambda k: (k.created or start, k.expires, k.kid)):
        begin = key.created or start
        for lane in lanes:
            if lane[-1].expires <= begin:
                lane.append(key)
                break
        else:
            lanes.append([key])
    return lanes


def _bar_class(key: TimelineKey) -> str:
    state = key.state if key.state in KEY_STATES else "other"
    manager = KEY_MANAGER_CLASSES.get(key.key_manager, "m-other")
    open_start = " open" if key.created is None else ""
    return f"key s-{state} {manager}{open_start}"


def _hover(key: TimelineKey) -> str:
    """The short text shown on hover; a click shows `key_details` (kept out of the picture: at
    hundreds of keys, every Key Vault key id inline would double the page)."""
    created = _when(key.created) if key.created else "not reported"
    return f"{key.kid}: {key.state}, {key.key_manager}\ncreated {created}\nexpires {_when(key.expires)}"


def key_details(server: ServerKeys, key: TimelineKey) -> list[tuple[str, str]]:
    """(label, value) lines describing one key, e.g. for the panel a click on its bar opens."""
    lines = [
        ("kid", key.kid),
        ("server", f"{server.name} ({server.server_id})"),
        ("kind", KEY_KINDS.get(key.kind, key.kind)),
        ("state", key.state),
        ("key manager", key.key_manager),
    ]
    if key.key_type:
        lines.append(("key type", key.key_type))
    if key.provider_ref:
        lines.append((PROVIDER_REF_LABELS.get(key.key_manager, "key file"), key.provider_ref))
    lines.append(("created", _when(key.created) if key.created else "not reported"))
    lines.append(("expires", _when(key.expires)))
    return lines


def _axis(
    start: datetime, end: datetime, x: Callable[[datetime], float], layout: Layout, height: int
) -> list[str]:
    step = next((s for s in _TICK_STEPS if (end - start) / s <= layout.max_ticks), _TICK_STEPS[-1])
    fmt = "%H:%M:%S" if step < timedelta(minutes=1) else "%H:%M"
    if end - start > timedelta(days=1):
        fmt = "%b %d %H:%M" if step < timedelta(days=1) else "%b %d"
    first = datetime.fromtimestamp(
        (start.timestamp() // step.total_seconds() + 1) * step.total_seconds(), UTC
    )
    out = ['<g class="axis">']
    tick = first
    while tick < end:
        out.append(
            f'<line x1="{x(tick)}" x2="{x(tick)}" y1="{layout.axis_height - 6}" y2="{height}"/>'
            f'<text x="{x(tick)}" y="{layout.axis_height - 10}">{tick.strftime(fmt)}</text>'
        )
        tick += step
    out.append(
        f'<text class="caption" x="6" y="{layout.axis_height - 10}">server · key (UTC)</text>'
    )
    out.append("</g>")
    return out


def _markers(
    markers: Sequence[ConfigMarker],
    start: datetime,
    end: datetime,
    x: Callable[[datetime], float],
    layout: Layout,
    height: int,
) -> list[str]:
    """One dashed line per config change; changes closer than 4 px share one line."""
    buckets: dict[int, list[ConfigMarker]] = {}
    for marker in sorted(markers, key=lambda m: m.at):
        if start <= marker.at <= end:
            buckets.setdefault(int(x(marker.at) // 4), []).append(marker)
    out = ['<g class="markers">']
    for group in buckets.values():
        at = x(group[0].at)
        labels = [f"{_when(m.at)} {m.label}" for m in group[-_MAX_MARKER_LABELS:]]
        if len(group) > _MAX_MARKER_LABELS:
            labels.insert(0, f"{len(group)} config changes, the last {_MAX_MARKER_LABELS}:")
        out.append(
            f'<g class="marker" data-count="{len(group)}">'
            f'<line x1="{at}" x2="{at}" y1="{layout.axis_height - 4}" y2="{height}"/>'
            f'<path d="M{at - 4},{layout.axis_height - 8}h8l-4,6z"/>'
            f"<title>{_e(chr(10).join(labels))}</title></g>"
        )
    out.append("</g>")
    return out


def _when(at: datetime) -> str:
    # isoformat, not strftime: called twice per key, and several times faster
    return at.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "seconds") + "Z"


def _clip(text: str, length: int) -> str:
    return text if len(text) <= length else text[: length - 1] + "…"


def _e(value: str) -> str:
    return escape(value, quote=True)
