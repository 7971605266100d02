"""Waiting for a config rollout and driving staged rollouts: `spirlctl config set ... --wait`,
`spirlctl rollout status`, and `spirlctl rollout promote|pause|resume|abort`.

A version's rollout: polls `GET /v1/rollouts/{scope}/{id}?version=N` and shows progress, one
line rewritten in place on a terminal, a plain line per change otherwise (`2/3 applied, 1
pending`, then the stage of each deployment whose staged rollout still holds it back). A
deployment's staged rollout: polls `GET /v1/trust-domain-deployments/{id}/rollout` and ends
with a table of its stages. Exit codes: 0 done, EXIT_REFUSED when a server refused the version
or a staged rollout halted or was aborted (each reason is printed), EXIT_TIMEOUT when the time
ran out first.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TextIO

from controlplane.cli.client import ApiClient
from controlplane.cli.output import ago, table
from controlplane.rollout_text import FINISHED, STOPPED, duration, stage_text, summary, what

EXIT_DONE = 0
EXIT_REFUSED = 3
EXIT_TIMEOUT = 4
POLL_SECONDS = 0.5
EXIT_CODES_HELP = (
    "exit status with --wait: 0 when every reachable targeted server applied the version, "
    f"{EXIT_REFUSED} when a server refused it or a staged rollout of it halted or was aborted, "
    f"{EXIT_TIMEOUT} when --timeout ran out first"
)
# Phases that end a wait; any other (in_progress, paused, one added later) means not yet.
DEPLOYMENT_FINISHED = ("done", "none", "halted", "aborted")


@dataclass
class Progress:
    """Prints progress lines: rewritten in place on a terminal, one per change otherwise."""

    out: TextIO
    _last: str | None = field(default=None, init=False)
    _inline: bool = field(default=False, init=False)

    def line(self, line: str) -> None:
        if self.out.isatty():
            self.out.write("\r\x1b[K" + line)
            self.out.flush()
            self._inline = True
        elif line != self._last:
            self.out.write(line + "\n")
            self.out.flush()
        self._last = line

    def end(self) -> None:
        if self._inline:
            self.out.write("\n")
            self.out.flush()
            self._inline = False


def _poll(
    fetch: Callable[[], dict[str, Any]],
    finished: Callable[[dict[str, Any]], bool],
    line: Callable[[dict[str, Any]], str],
    progress: Progress | None,
    timeout: float,
    clock: Callable[[], float],
    sleep: Callable[[float], None],
) -> dict[str, Any]:
    """Fetch every POLL_SECONDS, showing `line(status)`, until `finished` or the timeout."""
    deadline = clock() + timeout
    while True:
        status = fetch()
        if progress is not None:
            progress.line(line(status))
        if finished(status) or clock() >= deadline:
            if progress is not None:
                progress.end()
            return status
        sleep(min(POLL_SECONDS, max(0.0, deadline - clock())))


def wait_for_rollout(
    client: ApiClient,
    scope: str,
    scope_id: str,
    version: int | None,
    timeout: float,
    progress: Progress | None,
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, Any]:
    """Poll until the rollout is done, refused, halted or aborted, or `timeout` seconds pass;
    the last status."""
    asked = {"version": version}

    def fetch() -> dict[str, Any]:
        status: dict[str, Any] = client.get(f"/v1/rollouts/{scope}/{scope_id}", **asked)
        asked["version"] = status["version"]  # follow the version the first answer named
        return status

    return _poll(
        fetch,
        lambda s: s["phase"] in FINISHED,
        lambda s: f"rollout of {what(s)}: {summary(s)}",
        progress,
        timeout,
        clock,
        sleep,
    )


def exit_code(status: dict[str, Any]) -> int:
    if status["phase"] in ("done", "none"):
        return EXIT_DONE
    return EXIT_REFUSED if status["phase"] in STOPPED else EXIT_TIMEOUT


def report(status: dict[str, Any], timeout: float, out: TextIO, err: TextIO) -> int:
    """The outcome in words (refusals and waits on stderr); returns the exit status."""
    code = exit_code(status)
    rollout = what(status)
    servers = status["servers"]
    if code == EXIT_DONE:
        out.write(f"rollout of {rollout} complete: {summary(status)}\n")
        for s in servers:  # only unreachable servers remain outstanding when done
            out.write(f"  skipped {_who(s)}: unreachable, last contact {_since(s)}\n")
    elif code == EXIT_REFUSED:
        err.write(f"rollout of {rollout} {status['phase']}: {summary(status)}\n")
        for s in servers:
            if s["progress"] == "refused":
                err.write(f"  refused by {_who(s)}: {s['error'] or '(no error reported)'}\n")
        for d in status.get("deployments") or []:
            if d.get("halt_reason") and d["phase"] in STOPPED:
                err.write(f"  {d['phase']} in {d['id']}: {d['halt_reason']}\n")
    else:
        err.write(f"timed out after {timeout:g}s waiting for {rollout}: {summary(status)}\n")
        for s in servers:
            if s["progress"] == "pending":
                err.write(
                    f"  pending on {_who(s)} ({s['state']}): applied "
                    f"{s['applied_version'] if s['applied_version'] is not None else '-'}, "
                    f"needs {status['revision']} or later\n"
                )
    if status["current_version"] != status["version"]:
        out.write(
            f"note: {status['scope']} {status['id']} is now at version "
            f"{status['current_version']}; servers holding it count as having applied this one\n"
        )
    return code


def _who(server: dict[str, Any]) -> str:
    return f"{server['id']} ({server['name']})"


def _since(server: dict[str, Any]) -> str:
    return ago(server["last_contact_seconds_ago"])


# -- a deployment's staged rollout ----------------------------------------------------------------


def deployment_line(status: dict[str, Any]) -> str:
    """`rollout of deployment tdd-… (prod): stage 1/3 canary (baking, 8m20s left): 1/4 applied`."""
    head = f"rollout of deployment {status['trust_domain_deployment_id']} ({status['name']})"
    if status["phase"] == "none":
        return f"{head}: no rollout policy, changes reach every server at once"
    counts = status["counts"]
    progress = f"{counts['applied']}/{counts['servers']} applied"
    if status["phase"] == "done":
        return f"{head}: done"
    return f"{head}: {stage_text(status)}: {progress}"


def wait_for_deployment(
    client: ApiClient,
    deployment_id: str,
    timeout: float,
    progress: Progress | None,
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, Any]:
    """Poll a deployment's staged rollout until it is done, halted or aborted (or has no
    policy), or `timeout` seconds pass; the last status."""
    return _poll(
        lambda: client.get(f"/v1/trust-domain-deployments/{deployment_id}/rollout"),
        lambda s: s["phase"] in DEPLOYMENT_FINISHED,
        deployment_line,
        progress,
        timeout,
        clock,
        sleep,
    )


STAGE_HEADERS = ["STAGE", "SELECTS", "BAKE", "STATE", "SERVERS", "APPLIED", "REFUSED"]
STAGE_HEADERS += ["UNHEALTHY", "UNREACHABLE"]


def _selects(select: dict[str, Any]) -> str:
    if "servers" in select:
        return f"{select['servers']} server(s)"
    if "percent" in select:
        return f"{select['percent']}%"
    if "clusters" in select:
        return "clusters " + ",".join(select["clusters"])
    return "every server"


def report_deployment(status: dict[str, Any], timeout: float, out: TextIO, err: TextIO) -> int:
    """The staged rollout in words and a table of its stages; returns the exit status."""
    code = exit_code(status)
    out.write(deployment_line(status) + "\n")
    if status["phase"] == "none":
        return code
    for change in status["changes"]:
        out.write(
            f"  changes {change['scope']} {change['id']}: version {change['from_version']} -> "
            f"{change['to_version']}\n"
        )
    if status.get("waiting_for") and status["phase"] == "in_progress":
        out.write(f"  waiting for: {status['waiting_for']}\n")
    rows = [
        [
            s["name"],
            _selects(s["select"]),
            duration(s["bake_seconds"]) if s["bake_seconds"] else "-",
            s["state"],
            *(
                str(s["counts"][k])
                for k in ("servers", "applied", "refused", "unhealthy", "unreachable")
            ),
        ]
        for s in status["stages"]
    ]
    out.write(table(rows, STAGE_HEADERS))
    halt = status.get("halt")
    if halt and status["phase"] in ("halted", "aborted"):
        err.write(f"rollout {status['phase']}: {halt['reason']}\n")
    elif status["phase"] == "aborted":
        err.write("rollout aborted: every server runs the stable config\n")
    if code == EXIT_TIMEOUT:
        err.write(f"timed out after {timeout:g}s: the rollout is {status['phase']}\n")
    return code
