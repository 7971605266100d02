"""The key timeline builder: report data in, SVG out (parsed back as XML to check it)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta

from controlplane.console.timeline import (
    ConfigMarker,
    ServerKeys,
    TimelineKey,
    build_timeline,
    key_details,
    servers_from_reports,
)

SVG = "{http://www.w3.org/2000/svg}"
T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)


def key(
    kid: str, kind: str, state: str, created: datetime | None, hours: float, **kw: str
) -> TimelineKey:
    return TimelineKey(
        kid=kid,
        kind=kind,
        state=state,
        key_manager=kw.get("manager", "default"),
        created=created,
        expires=(created or T0) + hours * HOUR,
        provider_ref=kw.get("ref", ""),
    )


def parse(svg: str) -> ET.Element:
    return ET.fromstring(svg)  # also proves the markup is well-formed


def bars(root: ET.Element) -> dict[str, ET.Element]:
    return {
        r.get("data-kid", ""): r
        for r in root.iter(f"{SVG}rect")
        if "key" in r.get("class", "").split()
    }


def classes(el: ET.Element) -> set[str]:
    return set(el.get("class", "").split())


def migration() -> list[ServerKeys]:
    """Two servers mid-migration: default keys draining, Key Vault keys taking over."""
    ref = "https://vault.example/keys/spire-key-{}/0123abcd"
    return [
        ServerKeys(
            "tds-1",
            "tds-a",
            (
                key("x509-old", "x509-ca", "retired", T0, 24),
                key(
                    "x509-new",
                    "x509-ca",
                    "active",
                    T0 + 12 * HOUR,
                    24,
                    manager="azureKeyVault",
                    ref=ref.format(1),
                ),
                key("jwt-cur", "jwt", "active", T0 + 2 * HOUR, 24),
                key(
                    "jwt-next",
                    "jwt",
                    "prepared",
                    T0 + 14 * HOUR,
                    24,
                    manager="azureKeyVault",
                    ref=ref.format(2),
                ),
            ),
        ),
        ServerKeys("tds-2", "tds-b", (key("x509-b", "x509-ca", "active", T0, 24),)),
    ]


def test_one_bar_per_key_shaded_by_state_and_coloured_by_key_manager():
    root = parse(build_timeline(migration(), [], T0 + 21 * HOUR))
    found = bars(root)
    assert set(found) == {"x509-old", "x509-new", "jwt-cur", "jwt-next", "x509-b"}
    assert {"s-retired", "m-default"} <= classes(found["x509-old"])
    assert {"s-active", "m-akv"} <= classes(found["x509-new"])
    assert {"s-prepared", "m-akv"} <= classes(found["jwt-next"])
    # one row per server and key kind, in name order, X.509 CA first
    rows = [
        (g.get("data-server"), g.get("data-kind"))
        for g in root.iter(f"{SVG}g")
        if g.get("class") == "row"
    ]
    assert rows == [("tds-1", "x509-ca"), ("tds-1", "jwt"), ("tds-2", "x509-ca")]


def test_bars_run_from_creation_to_expiry_on_one_time_axis():
    found = bars(parse(build_timeline(migration(), [], T0 + 21 * HOUR)))
    x = {k: float(r.get("x", 0)) for k, r in found.items()}
    width = {k: float(r.get("width", 0)) for k, r in found.items()}
    assert x["x509-old"] == x["x509-b"] < x["jwt-cur"] < x["x509-new"] < x["jwt-next"]
    # equal lifetimes, equal lengths; the axis is linear: 12h later starts 12h of width later
    assert abs(width["x509-old"] - width["x509-new"]) < 0.2
    assert abs((x["x509-new"] - x["x509-old"]) - width["x509-old"] / 2) < 0.2


def test_overlapping_keys_of_a_row_stack_in_lanes_and_successive_ones_share_a_lane():
    server = ServerKeys(
        "tds-1",
        "a",
        (
            key("k1", "jwt", "retired", T0, 10),
            key("k2", "jwt", "active", T0 + 5 * HOUR, 10),  # overlaps k1
            key("k3", "jwt", "prepared", T0 + 10 * HOUR, 10),  # starts when k1 ends
        ),
    )
    found = bars(parse(build_timeline([server], [], T0 + 9 * HOUR)))
    y = {k: r.get("y") for k, r in found.items()}
    assert y["k1"] == y["k3"] != y["k2"]


def test_now_line_and_config_change_markers():
    now = T0 + 21 * HOUR
    markers = [
        ConfigMarker(T0 + 12 * HOUR, "deployment version 2"),
        ConfigMarker(T0 + 12 * HOUR + timedelta(seconds=1), "cluster version 3"),  # same pixel
        ConfigMarker(T0 + 20 * HOUR, "deployment version 3"),
        ConfigMarker(T0 - 30 * 24 * HOUR, "long ago"),  # outside the picture
    ]
    root = parse(build_timeline(migration(), markers, now))
    groups = [g for g in root.iter(f"{SVG}g") if g.get("class") == "marker"]
    assert [g.get("data-count") for g in groups] == ["2", "1"]
    titles = [g.find(f"{SVG}title").text or "" for g in groups]  # type: ignore[union-attr]
    assert "deployment version 2" in titles[0] and "cluster version 3" in titles[0]
    assert not any("long ago" in t for t in titles)
    now_group = next(g for g in root.iter(f"{SVG}g") if g.get("class") == "now")
    now_x = float(now_group.find(f"{SVG}line").get("x1", 0))  # type: ignore[union-attr]
    found = bars(root)
    # "Now" (T0+21h) is after the new CA key's start and inside the next JWT key's bar.
    next_x = float(found["jwt-next"].get("x", 0))
    assert float(found["x509-new"].get("x", 0)) < now_x
    assert next_x < now_x < next_x + float(found["jwt-next"].get("width", 0))


def test_hover_names_kid_state_and_dates_and_details_add_the_key_vault_key_id():
    servers = migration()
    found = bars(parse(build_timeline(servers, [], T0 + 21 * HOUR)))
    title = found["x509-new"].find(f"{SVG}title").text or ""  # type: ignore[union-attr]
    assert title.splitlines() == [
        "x509-new: active, azureKeyVault",
        "created 2025-03-02 00:00:00Z",
        "expires 2025-03-03 00:00:00Z",
    ]
    details = dict(key_details(servers[0], servers[0].keys[1]))
    assert details["Key Vault key id"] == "https://vault.example/keys/spire-key-1/0123abcd"
    assert (details["kid"], details["server"], details["kind"]) == (
        "x509-new",
        "tds-a (tds-1)",
        "X.509 CA",
    )
    assert (details["created"], details["expires"]) == (
        "2025-03-02 00:00:00Z",
        "2025-03-03 00:00:00Z",
    )


def test_values_are_escaped():
    hostile = '"><script>alert(1)</script>'
    server = ServerKeys(
        "tds-1", hostile, (key(hostile, hostile, hostile, T0, 1, manager=hostile, ref=hostile),)
    )
    svg = build_timeline([server], [ConfigMarker(T0, hostile)], T0)
    assert "<script>" not in svg
    found = bars(parse(svg))
    assert set(found) == {hostile}
    assert {"s-other", "m-other"} <= classes(found[hostile])  # unknown state and manager


def test_a_key_without_a_creation_time_starts_at_the_left_edge():
    old_style = ServerKeys(
        "tds-1",
        "a",
        (key("k", "jwt", "active", None, 5), key("n", "jwt", "prepared", T0 + HOUR, 5)),
    )
    found = bars(parse(build_timeline([old_style], [], T0 + 2 * HOUR)))
    assert "open" in classes(found["k"]) and "open" not in classes(found["n"])
    assert float(found["k"].get("x", 0)) < float(found["n"].get("x", 0))


def test_no_keys_still_draws_the_servers_and_says_so():
    svg = build_timeline([ServerKeys("tds-1", "a", ())], [], T0)
    root = parse(svg)
    assert not bars(root)
    assert [g.get("data-kind") for g in root.iter(f"{SVG}g") if g.get("class") == "row"] == ["none"]
    assert "no keys reported" in svg


def test_the_picture_reaches_back_to_a_recent_config_change():
    keys = (key("k", "jwt", "active", T0, 10),)
    near = ConfigMarker(T0 - 2 * HOUR, "the change that made these keys")
    root = parse(build_timeline([ServerKeys("tds-1", "a", keys)], [near], T0 + HOUR))
    assert [g.get("data-count") for g in root.iter(f"{SVG}g") if g.get("class") == "marker"] == [
        "1"
    ]


def test_servers_from_reports_reads_the_inventory_and_skips_keys_without_expiry():
    servers = servers_from_reports(
        [
            {
                "id": "tds-1",
                "name": "a",
                "keys": [
                    {
                        "kid": "k1",
                        "kind": "jwt",
                        "state": "active",
                        "key_manager": {"type": "azureKeyVault", "digest": "sha256:x"},
                        "not_before": "2025-03-01T12:00:00+00:00",
                        "not_after": "2025-03-02T12:00:00+00:00",
                        "provider_ref": "https://vault.example/keys/k1/v",
                        "key_type": "ec-p256",
                    },
                    {"kid": "k2", "kind": "jwt", "state": "active", "not_after": "not a time"},
                    {
                        "kid": "k3",
                        "kind": "x509-ca",
                        "state": "active",
                        "not_after": "2025-03-02T12:00:00Z",
                    },
                ],
            },
            {"id": "tds-2", "name": "b", "keys": None},
        ]
    )
    assert [s.server_id for s in servers] == ["tds-1", "tds-2"]
    k1, k3 = servers[0].keys
    assert (k1.kid, k1.key_manager, k1.created, k1.provider_ref) == (
        "k1",
        "azureKeyVault",
        T0,
        "https://vault.example/keys/k1/v",
    )
    assert (k3.kid, k3.created, k3.key_manager) == ("k3", None, "unknown")
    assert servers[1].keys == ()
