"""A rollout status in words, the same for `spirlctl` and the Terraform provider.

Pure: takes the JSON of `GET /v1/rollouts/{scope}/{id}` (or one deployment's staged rollout in
it) and returns one line. Kept outside `controlplane.cli` so the provider, which must start fast
and never imports the CLI, describes a rollout exactly as `spirlctl ... --wait` does.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["FINISHED", "STOPPED", "duration", "stage_name", "stage_text", "summary", "what"]

# Phases of `GET /v1/rollouts/...` that end a wait; any other (in_progress, paused, one added
# later) means not yet.
STOPPED = ("refused", "halted", "aborted")
FINISHED = ("done", *STOPPED)


def duration(seconds: float) -> str:
    """`45s`, `4m12s`, `3h5m`, `2d4h`: the two largest units."""
    total = max(0, int(seconds))
    parts = [(total // 86400, "d"), (total % 86400 // 3600, "h"), (total % 3600 // 60, "m")]
    parts.append((total % 60, "s"))
    first = next((i for i, (n, _) in enumerate(parts) if n), len(parts) - 1)
    shown = [f"{n}{unit}" for n, unit in parts[first : first + 2] if n] or ["0s"]
    return "".join(shown)


def summary(status: Mapping[str, Any]) -> str:
    """`2/3 applied, 1 pending`: what a rollout looks like in one line."""
    counts = status["counts"]
    text = f"{counts['applied']}/{counts['targeted']} applied"
    for name in ("refused", "pending", "unreachable"):
        if counts.get(name):
            text += f", {counts[name]} {name}"
    if not counts["targeted"]:
        text += " (no server is targeted)"
    for deployment in status.get("deployments") or []:
        if deployment.get("stage"):
            text += f"; {deployment['id']} {stage_text(deployment)}"
    return text


def what(status: Mapping[str, Any]) -> str:
    """`deployment tdd-1a2b version 7`: the version a rollout status is about."""
    return f"{status['scope']} {status['id']} version {status['version']}"


def stage_name(staged: Mapping[str, Any]) -> str:
    """`stage 1/3 canary`."""
    stage = staged["stage"]
    return f"stage {stage['number']}/{stage['of']} {stage['name']}"


def stage_text(staged: Mapping[str, Any]) -> str:
    """`stage 1/3 canary (baking, 8m20s left)`, `stage 2/3 half (halted)`."""
    text = stage_name(staged)
    phase = staged["phase"]
    left = staged.get("bake_seconds_left")
    if phase not in ("in_progress", "done"):
        text += f" ({phase})"
    elif left is not None:
        text += f" (baking, {duration(left)} left)"
    return text
