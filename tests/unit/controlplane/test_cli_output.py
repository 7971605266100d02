"""spirlctl output: readable tables by default, JSON and YAML for scripts."""

from __future__ import annotations

import io
import json

import yaml

from controlplane.api.metrics import Metrics
from controlplane.cli.output import emit
from controlplane.cli.spirlctl import build_parser

ROWS = [
    {"id": "td-1", "name": "example.org", "meta": {"n": 1}},
    {"id": "td-22", "name": "b.org", "meta": None},
]


def test_table_aligns_columns_and_shows_missing_values():
    out = io.StringIO()
    emit(ROWS, "table", columns=[("ID", "id"), ("NAME", "name"), ("N", "meta.n")], out=out)
    lines = out.getvalue().splitlines()
    assert lines[0].split() == ["ID", "NAME", "N"]
    assert lines[1].index("example.org") == lines[2].index("b.org") == lines[0].index("NAME")
    assert lines[2].split()[-1] == "-"


def test_a_table_cell_never_carries_a_terminal_escape_or_a_line_break():
    """Errors and names come from servers and other users (stored before the control plane
    cleaned them, or through older versions)."""
    out = io.StringIO()
    rows = [{"id": "tds-1", "error": "\x1b]0;owned\x07bad\nline \u202eevil", "tags": ["a\rb"]}]
    emit(rows, "table", columns=[("ID", "id"), ("ERROR", "error"), ("TAGS", "tags")], out=out)
    text = out.getvalue()
    assert text.count("\n") == 2  # the header's and the row's line ends, no other
    assert all(line.isprintable() for line in text.splitlines())
    assert " ]0;owned bad line  evil" in text and "a b" in text


def test_json_and_yaml_are_parseable():
    for fmt, load in (("json", json.loads), ("yaml", yaml.safe_load)):
        out = io.StringIO()
        emit(ROWS, fmt, out=out)
        assert load(out.getvalue()) == ROWS


def test_help_lists_every_command_group():
    text = build_parser().format_help()
    for group in ("login", "trust-domain", "cluster", "config", "rollout", "audit", "terraform"):
        assert group in text


def test_metrics_text_format():
    metrics = Metrics()
    metrics.describe("spirl_x_total", "counter", "things")
    metrics.inc("spirl_x_total", (("scope", 'a"b'),))
    metrics.observe_latency((("route", "/r"),), 0.02)
    text = metrics.render()
    assert "# TYPE spirl_x_total counter" in text and 'spirl_x_total{scope="a\\"b"} 1' in text
    assert 'spirl_http_request_duration_seconds_bucket{route="/r",le="0.025"} 1' in text
    assert 'spirl_http_request_duration_seconds_bucket{route="/r",le="0.01"} 0' in text
