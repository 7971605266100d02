"""`wait_for_rollout` and `timeouts` of the config resources: after a write, wait until the servers
applied the new version.

With `wait_for_rollout = true`, create and update poll `GET /v1/rollouts/{scope}/{id}?version=N`
(docs/API.md, Rollouts) for the version they wrote until its phase ends the wait: `done` (every
reachable targeted server applied it; staged rollouts included, stage by stage), `refused` (a
server refused it: waiting cannot help), `halted` or `aborted` (a deployment's staged rollout of
it stopped), or until `timeouts.create` / `timeouts.update` pass. Anything but `done` is an error
diagnostic that names the servers and what to do. The config stays written either way, and the
resource's state records it; a create that fails is marked tainted by Terraform, so its message
says how to keep the written config (`terraform untaint`) rather than have it replaced.

Cost: one GET per poll, every 0.5 s at first, then 1.5 times longer each time up to 5 s, never
past the deadline; each request is bounded by the provider's `request_timeout` (and retried on
429/503 by the client), so a wait overruns its timeout by at most one request. A control plane
that cannot be reached for a moment does not end the wait; one that answers with an error does.

The pure parts (durations, verdicts, messages) are functions of the status JSON, tested alone.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from tf import schema, types
from tf.utils import Diagnostics

from controlplane import rollout_text
from controlplane.rollout_text import FINISHED, STOPPED, stage_text
from controlplane.rollout_text import summary as rollout_summary
from controlplane.terraform.client import ApiClient, ApiError
from controlplane.terraform.common import optional
from controlplane.terraform.tftypes import Field, NestedAttribute

__all__ = [
    "DEFAULT_TIMEOUT",
    "OPERATIONS",
    "failure",
    "finished",
    "schema_attributes",
    "timed_out",
    "timeout_problems",
    "timeout_seconds",
    "wait",
    "wait_after_write",
]

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = "10m"
OPERATIONS = ("create", "update")
FIRST_POLL_SECONDS = 0.5
MAX_POLL_SECONDS = 5.0
BACKOFF = 1.5
MAX_LISTED_SERVERS = 10  # a message names at most this many servers, then says how many more


def schema_attributes() -> list[schema.Attribute]:
    """`wait_for_rollout` and `timeouts`, for every config resource's schema."""
    return [
        optional(
            "wait_for_rollout",
            "When true, create and update return only when every reachable server of the scope "
            "applied the new config version (through every stage of a staged rollout); they fail "
            "naming the servers that refused it, the stage where a staged rollout halted, or, "
            "after `timeouts`, the servers still pending. Default: false (return once the "
            "control plane stored the version).",
            kind=types.Bool(),
        ),
        NestedAttribute(
            "timeouts",
            [
                Field(
                    "create",
                    types.String(),
                    "How long create waits for the rollout, e.g. `90s`, `10m`, `1h30m` (units "
                    f"d, h, m, s). Default: `{DEFAULT_TIMEOUT}`.",
                ),
                Field(
                    "update",
                    types.String(),
                    f"How long update waits for the rollout. Default: `{DEFAULT_TIMEOUT}`.",
                ),
            ],
            'How long `wait_for_rollout` waits, e.g. `timeouts = { update = "20m" }`. Used '
            "only with `wait_for_rollout = true`.",
        ),
    ]


# -- durations ----------------------------------------------------------------------------------


def _parse(text: str) -> float:
    from controlplane.documents import parse_duration

    return parse_duration(text).total_seconds()


def timeout_problems(timeouts: Any) -> list[tuple[str, str]]:
    """(field, reason) for each `timeouts` value that is not a duration (unknown ones pass)."""
    if not isinstance(timeouts, Mapping):
        return []
    problems = []
    for name in OPERATIONS:
        value = timeouts.get(name)
        if not isinstance(value, str):
            continue  # null (the default) or not known until apply
        try:
            _parse(value)
        except ValueError as exc:
            problems.append((name, f"`timeouts.{name}` {exc}, got {value!r}"))
    return problems


def check_timeouts(diags: Diagnostics, config: Mapping[str, Any]) -> bool:
    """An error for each bad duration, at `timeouts` (Terraform shows that attribute's lines;
    it does not resolve a path into the nested value) and naming `timeouts.<operation>`. True
    when there is any."""
    problems = timeout_problems(config.get("timeouts"))
    for _, reason in problems:
        diags.add_error("Invalid timeout", reason, path=["timeouts"])
    return bool(problems)


def timeout_seconds(timeouts: Any, operation: str) -> tuple[str, float]:
    """(text, seconds) of the timeout of `operation`, the default when it is not set."""
    value = timeouts.get(operation) if isinstance(timeouts, Mapping) else None
    text = value if isinstance(value, str) else DEFAULT_TIMEOUT
    return text, _parse(text)


# -- what a status says -------------------------------------------------------------------------


def _who(server: Mapping[str, Any]) -> str:
    return f"{server.get('name')} ({server.get('id')})"


def _listed(lines: Sequence[str]) -> list[str]:
    shown = [f"  - {line}" for line in lines[:MAX_LISTED_SERVERS]]
    if len(lines) > MAX_LISTED_SERVERS:
        shown.append(f"  ... and {len(lines) - MAX_LISTED_SERVERS} more")
    return shown


def _servers(status: Mapping[str, Any], progress: str) -> list[Mapping[str, Any]]:
    return [
        s
        for s in status.get("servers") or []
        if isinstance(s, dict) and s.get("progress") == progress
    ]


def _refusals(status: Mapping[str, Any]) -> list[str]:
    return [
        f"server {_who(s)} refused it: {s.get('error') or '(no error reported)'}"
        for s in _servers(status, "refused")
    ]


def _stopped_deployments(status: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return [
        d
        for d in status.get("deployments") or []
        if isinstance(d, dict) and d.get("phase") in ("halted", "aborted")
    ]


def _written(status: Mapping[str, Any]) -> str:
    return (
        f"The config was written: {status['scope']} {status['id']} is at version "
        f"{status['version']}, and Terraform's state records it."
    )


def _rollout_commands(deployment_id: str) -> list[str]:
    flag = f"--trust-domain-deployment {deployment_id}"
    return [
        f"  spirlctl rollout promote {flag}   # accept the failing server(s) and go on",
        f"  spirlctl rollout resume {flag}    # retry the stage once the cause is fixed",
        f"  spirlctl rollout abort {flag}     # every server back to the stable config",
    ]


def finished(status: Mapping[str, Any]) -> bool:
    """True when waiting longer cannot change the outcome. A refusal in a deployment whose
    staged rollout still holds the version is judged by the control plane's promoter within a
    second or so (halt, or roll back): wait for that verdict, so the message can say it."""
    phase = status.get("phase")
    if phase not in FINISHED:
        return False
    if phase == "refused":
        return not any(
            isinstance(d, dict) and d.get("phase") == "refused" and isinstance(d.get("stage"), dict)
            for d in status.get("deployments") or []
        )
    return True


def failure(status: Mapping[str, Any]) -> tuple[str, str] | None:
    """(summary, detail) of a rollout that ended badly (refused, halted, aborted); else None."""
    phase = status.get("phase")
    if phase not in STOPPED:
        return None
    what = rollout_text.what(status)
    lines = [_written(status), f"Rollout: {rollout_summary(status)}."]
    refusals = _refusals(status)
    if refusals:
        lines += ["Servers that refused it (they keep their previous config):", *_listed(refusals)]
    stopped = _stopped_deployments(status)
    for d in stopped:
        stage = d.get("stage")
        at = f" at {rollout_text.stage_name(d)}" if isinstance(stage, dict) else ""
        why = d.get("halt_reason") or "(no reason recorded)"
        if d["phase"] == "halted":
            lines += [
                f"The staged rollout of deployment {d['id']} halted{at}: {why}. Its servers "
                "keep what they have; servers of later stages keep the stable config.",
                "Fix the configuration and apply again (a new version starts a new rollout), "
                "or decide on the control plane:",
                *_rollout_commands(str(d["id"])),
            ]
        else:
            lines += [
                f"The staged rollout of deployment {d['id']} was aborted{at}: {why}. Every "
                "server of it runs the stable config.",
                "Fix the configuration and apply again, or start it over from its first stage: "
                f"spirlctl rollout resume --trust-domain-deployment {d['id']}",
            ]
    if not stopped:
        lines.append(
            "Fix the configuration and apply again: the state holds this version, so the next "
            "plan shows a change only once the configuration differs."
        )
    if phase == "halted":
        names = ", ".join(f"{d['id']}" for d in stopped)
        summary = f"Rollout of {what} halted (deployment {names})"
    elif phase == "aborted":
        summary = f"Rollout of {what} aborted"
    else:
        summary = f"Rollout of {what} refused by {len(_servers(status, 'refused'))} server(s)"
    return summary, "\n".join(lines)


def timed_out(
    status: Mapping[str, Any], timeout_text: str, operation: str, last_error: str | None = None
) -> tuple[str, str]:
    """(summary, detail) of a wait that ran out of time: the servers still pending, and the
    stage of each staged rollout still holding the version back."""
    what = rollout_text.what(status)
    lines = [_written(status), f"Rollout: {rollout_summary(status)}."]
    pending = [
        f"server {_who(s)}, {s.get('state')}: applied "
        f"{s.get('applied_version') if s.get('applied_version') is not None else 'nothing yet'}, "
        f"needs {status.get('revision')} or later"
        for s in _servers(status, "pending")
    ]
    if pending:
        lines += ["Still pending:", *_listed(pending)]
    for d in status.get("deployments") or []:
        if isinstance(d, dict) and isinstance(d.get("stage"), dict):
            lines.append(f"Deployment {d['id']} holds it back: {stage_text(d)}.")
            if d.get("phase") == "paused":
                lines.append(
                    f"  spirlctl rollout resume --trust-domain-deployment {d['id']}   # it is paused"
                )
    if last_error:
        lines.append(f"The last poll failed: {last_error}")
    lines.append(
        f"Apply does not wait again for this version: follow it with `spirlctl rollout status "
        f"{status['scope']} --id {status['id']} --version {status['version']}`, or give the "
        f'rollout more time with `timeouts = {{ {operation} = "..." }}`.'
    )
    return f"Timed out after {timeout_text} waiting for the rollout of {what}", "\n".join(lines)


def tainted_note(type_name: str) -> str:
    """What a failed create means for the resource: Terraform taints it."""
    return (
        "Because this was a create, Terraform marks the resource tainted, and the next apply "
        "would replace it (remove the config, then write it again). Once the cause is fixed, "
        f"`terraform untaint {type_name}.<name>` keeps it and the next apply updates it in place."
    )


def unreachable_note(status: Mapping[str, Any]) -> tuple[str, str] | None:
    """A warning when a `done` rollout skipped unreachable servers (they get it when back)."""
    skipped = [
        f"server {_who(s)}: last contact {s.get('last_contact_at')}"
        for s in _servers(status, "unreachable")
    ]
    if not skipped:
        return None
    return (
        f"Rollout of {rollout_text.what(status)} skipped {len(skipped)} unreachable server(s)",
        "Every reachable server applied it; these were not heard from within the staleness "
        "window and get it when they are back:\n" + "\n".join(_listed(skipped)),
    )


# -- the wait -----------------------------------------------------------------------------------


def _transient(exc: ApiError) -> bool:
    """Worth polling again: the control plane could not be reached, or had a passing failure."""
    return exc.status == 0 or exc.status >= 500


def wait(
    client: ApiClient,
    scope: str,
    scope_id: str,
    version: int,
    timeout: float,
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> tuple[dict[str, Any] | None, str | None]:
    """Poll until the rollout of `version` ends or `timeout` seconds pass: (the last status, the
    last transient error if the last poll failed). Raises ApiError on any other error."""
    deadline = clock() + timeout
    delay = FIRST_POLL_SECONDS
    status: dict[str, Any] | None = None
    last_line = ""
    while True:
        error = None
        try:
            status = client.rollout_status(scope, scope_id, version)
        except ApiError as exc:
            if not _transient(exc):
                raise
            error = str(exc)
            log.warning("rollout of %s %s version %s: %s", scope, scope_id, version, error)
        if status is not None and error is None:
            line = rollout_summary(status)
            if line != last_line:
                log.info("rollout of %s: %s", rollout_text.what(status), line)
                last_line = line
            if finished(status):
                return status, None
        left = deadline - clock()
        if left <= 0:
            return status, error
        sleep(min(delay, left))
        delay = min(delay * BACKOFF, MAX_POLL_SECONDS)


def wait_after_write(
    diags: Diagnostics,
    client: ApiClient,
    planned: Mapping[str, Any],
    operation: str,
    scope: str,
    scope_id: str,
    version: int,
    path: list[Any],
    type_name: str,
) -> None:
    """When `planned` asks for it, wait for `version`'s rollout; its outcome as diagnostics at
    `path`. Never raises for the control plane: the write is done and must reach the state."""
    after = f"\n{tainted_note(type_name)}" if operation == "create" else ""
    if planned.get("wait_for_rollout") is not True or version <= 0:
        return
    text, seconds = timeout_seconds(planned.get("timeouts"), operation)
    what = f"{scope} {scope_id} version {version}"
    log.info("waiting up to %s for the rollout of %s", text, what)
    try:
        status, last_error = wait(client, scope, scope_id, version, seconds)
    except ApiError as exc:
        diags.add_error(
            f"Cannot follow the rollout of {what}",
            f"The config was written ({what}), but reading its rollout failed: {exc}. "
            f"`spirlctl rollout status {scope} --id {scope_id} --version {version}` shows it."
            + after,
            path=path,
        )
        return
    if status is None:
        diags.add_error(
            f"Timed out after {text} waiting for the rollout of {what}",
            f"The config was written ({what}), but its rollout could not be read: {last_error}."
            + after,
            path=path,
        )
        return
    if status.get("phase") == "done":
        note = unreachable_note(status)
        if note:
            diags.add_warning(*note, path=path)
        log.info("rollout of %s done", what)
        return
    summary, detail = failure(status) or timed_out(status, text, operation, last_error)
    diags.add_error(summary, detail + after, path=path)
