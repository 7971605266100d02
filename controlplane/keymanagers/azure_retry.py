"""Back-off for Key Vault throttling (429) and unavailability (503).

Microsoft's throttling guidance (learn.microsoft.com "Azure Key Vault throttling guidance")
asks clients to back off exponentially on 429: wait 1 s, then 2, 4, 8, 16 s, retrying until the
request succeeds. Real 429s often carry no Retry-After header; when one is given it is honoured.
Waits get a little random jitter so servers throttled together do not retry in lockstep, and
the total wait of one call is bounded by its deadline: a sign waiting for an SVID, or a key
generation the rotator retries at its next tick anyway, must not hang for minutes.

Cost: nothing unless a call is throttled; then only the waits.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

__all__ = ["BACKOFF_SCHEDULE", "Backoff"]

BACKOFF_SCHEDULE = (1.0, 2.0, 4.0, 8.0, 16.0)
_JITTER = 0.2  # +-20 %


@dataclass
class Backoff:
    """The waits of one call: `next_wait(retry_after)` gives the next one, or None when the
    deadline (total seconds of waiting allowed) would be passed."""

    deadline: float
    rng: random.Random = field(default_factory=random.Random)
    attempt: int = 0
    waited: float = 0.0

    def next_wait(self, retry_after: float | None) -> float | None:
        if retry_after is not None:
            # The service's own figure, plus a little jitter upwards only.
            wait = retry_after * (1 + self.rng.uniform(0, _JITTER / 2))
        else:
            base = BACKOFF_SCHEDULE[min(self.attempt, len(BACKOFF_SCHEDULE) - 1)]
            wait = base * (1 + self.rng.uniform(-_JITTER, _JITTER))
        if self.waited + wait > self.deadline:
            return None
        self.attempt += 1
        self.waited += wait
        return wait
