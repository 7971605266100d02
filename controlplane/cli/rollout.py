"""Waiting for a config rollout: `spirlctl config set ... --wait` and `spirlctl rollout status`.

Polls `GET /v1/rollouts/{scope}/{id}?version=N` and shows progress: one line rewritten in place
on a terminal, a plain line per change otherwise (`2/3 applied, 1 pending`). Exit codes:
0 done, EXIT_REFUSED when a server refused the version (each refusal is printed with its error),
EXIT_TIMEOUT when the time ran out first.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TextIO

from controlplane.cli.client import ApiClient
from controlplane.cli.output import ago

EXIT_DONE = 0
EXIT_REFUSED = 3
EXIT_TIMEOUT = 4
POLL_SECONDS = 0.5
EXIT_CODES_HELP = (
    "exit status with --wait: 0 when every reachable targeted server applied the version, "
    f"{EXIT_REFUSED} when a server refused it, {EXIT_TIMEOUT} when --timeout ran out first"
)


def summary(status: dict[str, Any]) -> str:
    """`2/3 applied, 1 pending`: what a rollout looks like in one line."""
    counts = status["counts"]
    text = f"{counts['applied']}/{counts['targeted']} applied"
    for name in ("refused", "pending", "unreachable"):
        if counts.get(name):
            text += f", {counts[name]} {name}"
    return text if counts["targeted"] else text + " (no server is targeted)"


@dataclass
class Progress:
    """Prints progress lines: rewritten in place on a terminal, one per change otherwise."""

    out: TextIO
    _last: str | None = field(default=None, init=False)
    _inline: bool = field(default=False, init=False)

    def show(self, status: dict[str, Any]) -> None:
        line = f"rollout of {_what(status)}: {summary(status)}"
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
    """Poll until the rollout is done or refused, or `timeout` seconds pass; the last status."""
    deadline = clock() + timeout
    while True:
        status: dict[str, Any] = client.get(f"/v1/rollouts/{scope}/{scope_id}", version=version)
        version = status["version"]
        if progress is not None:
            progress.show(status)
        if status["phase"] != "in_progress" or clock() >= deadline:
            if progress is not None:
                progress.end()
            return status
        sleep(min(POLL_SECONDS, max(0.0, deadline - clock())))


def exit_code(status: dict[str, Any]) -> int:
    if status["phase"] == "done":
        return EXIT_DONE
    return EXIT_REFUSED if status["phase"] == "refused" else EXIT_TIMEOUT


def report(status: dict[str, Any], timeout: float, out: TextIO, err: TextIO) -> int:
    """The outcome in words (refusals and waits on stderr); returns the exit status."""
    code = exit_code(status)
    what = _what(status)
    servers = status["servers"]
    if code == EXIT_DONE:
        out.write(f"rollout of {what} complete: {summary(status)}\n")
        for s in servers:  # only unreachable servers remain outstanding when done
            out.write(f"  skipped {_who(s)}: unreachable, last contact {_since(s)}\n")
    elif code == EXIT_REFUSED:
        err.write(f"rollout of {what} refused: {summary(status)}\n")
        for s in servers:
            if s["progress"] == "refused":
                err.write(f"  refused by {_who(s)}: {s['error'] or '(no error reported)'}\n")
    else:
        err.write(f"timed out after {timeout:g}s waiting for {what}: {summary(status)}\n")
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


def _what(status: dict[str, Any]) -> str:
    return f"{status['scope']} {status['id']} version {status['version']}"


def _who(server: dict[str, Any]) -> str:
    return f"{server['id']} ({server['name']})"


def _since(server: dict[str, Any]) -> str:
    return ago(server["last_contact_seconds_ago"])
