"""Rules of the `Rollout` section that JSON Schema cannot express (see schemas/Rollout.v1.json).

Stages are cumulative, so a stage must admit more than the ones before it: a count or a
percentage smaller than an earlier one of the same kind, or a cluster named twice, would admit
nobody new. That the clusters belong to the deployment is checked by the control plane, which
knows them (services/rollouts.py).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from . import pointer
from .durations import parse_duration

__all__ = ["MAX_BAKE", "SELECTORS", "rollout_v1"]

Problems = list[tuple[str, str]]

SELECTORS = ("servers", "percent", "clusters")
MAX_BAKE = timedelta(days=7)


def rollout_v1(spec: Any, trust_domain: str | None = None) -> Problems:
    if not isinstance(spec, dict) or not isinstance(spec.get("stages"), list):
        return []
    problems: Problems = []
    names: dict[str, int] = {}
    largest: dict[str, tuple[int, int]] = {}  # selector -> (value, stage index)
    clusters: dict[str, int] = {}
    stages = spec["stages"]
    for index, stage in enumerate(stages):
        if not isinstance(stage, dict):
            continue
        where = pointer.join("/spec/stages", index)
        chosen = [key for key in SELECTORS if key in stage]
        if len(chosen) != 1:
            got = ", ".join(chosen) or "none"
            problems.append((where, f"set exactly one of servers, percent or clusters; got: {got}"))
        name = stage.get("name")
        if isinstance(name, str):
            if name in names:
                problems.append(
                    (where + "/name", f"stage {names[name] + 1} is already named {name!r}")
                )
            names.setdefault(name, index)
        for key in ("servers", "percent"):
            value = stage.get(key)
            if not isinstance(value, int) or isinstance(value, bool):
                continue
            earlier = largest.get(key)
            if earlier is not None and value <= earlier[0]:
                problems.append(
                    (
                        f"{where}/{key}",
                        f"must be more than {earlier[0]}, the {key} of stage {earlier[1] + 1}: "
                        "stages are cumulative, so this one would admit nobody new",
                    )
                )
            largest[key] = (max(value, earlier[0] if earlier else value), index)
        if stage.get("percent") == 100 and index < len(stages) - 1:
            problems.append(
                (
                    f"{where}/percent",
                    "100 admits every server: only the last stage may say 100",
                )
            )
        members = stage.get("clusters")
        if isinstance(members, list):
            for position, cluster in enumerate(members):
                if not isinstance(cluster, str):
                    continue
                if clusters.get(cluster, index) != index:
                    problems.append(
                        (
                            pointer.join(where, "clusters", position),
                            f"cluster {cluster} is already in stage {clusters[cluster] + 1}",
                        )
                    )
                clusters.setdefault(cluster, index)
        bake = stage.get("bake")
        if isinstance(bake, str):
            try:
                if parse_duration(bake) > MAX_BAKE:
                    problems.append((where + "/bake", "must be at most 7d"))
            except ValueError as exc:
                problems.append((where + "/bake", f"{exc} (leave bake out for no wait)"))
    return problems
