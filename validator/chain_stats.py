"""What a ``ChainPoster`` did: posts by result, errors by kind, post latency, and since when
its errors have gone unanswered. Read by the node into its telemetry (``validator.metrics``,
``validator.health``); the poster counts, on the asyncio side of the bridge.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Mapping
from dataclasses import dataclass

# Upper bounds of the post latency histogram (seconds; one more bucket, +Inf, follows): a
# post on the local chain takes about a second, on a public cluster up to a minute.
POST_SECONDS_BUCKETS = (0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0)
POST_RESULTS = ("confirmed", "failed")
ERROR_KINDS = ("unreachable", "rejected", "landed_error", "waiting", "post", "close",
               "airdrop", "balance")


def error_kind(error: str) -> str:
    """The kind of an error ``validator.chain`` notes, from the words it begins with there:
    each kind's producer writes that prefix ("rpc unreachable" comes from ``_rpc_text``)."""
    for prefix, kind in (("close_epoch", "close"), ("airdrop", "airdrop"),
                         ("balance", "balance"), ("rejected", "rejected"),
                         ("landed with error", "landed_error"),
                         ("waiting for the previous report", "waiting")):
        if error.startswith(prefix):
            return kind
    return "unreachable" if "rpc unreachable" in error else "post"


@dataclass(frozen=True)
class PosterStatistics:
    """What a `ChainPoster` did so far. `post_seconds`: calls of `post` that sent at least one
    transaction, per bucket of `POST_SECONDS_BUCKETS` and then +Inf (not cumulative).
    `failing_since`: when the first error after the last confirmed post was noted (clock of
    the poster), None when no error is open."""

    posts: Mapping[str, int]
    errors: Mapping[str, int]
    post_seconds: tuple[int, ...]
    post_seconds_sum: float
    failing_since: float | None


class PosterCounters:
    """Counted by the poster on the asyncio side, read from the node's trio thread: one lock."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._posts = dict.fromkeys(POST_RESULTS, 0)
        self._errors = dict.fromkeys(ERROR_KINDS, 0)
        self._buckets = [0] * (len(POST_SECONDS_BUCKETS) + 1)
        self._sum = 0.0
        self._failing_since: float | None = None

    def note(self, error: str | None, now: float) -> None:
        with self._lock:
            if error is None:
                self._failing_since = None
                return
            self._errors[error_kind(error)] += 1
            if self._failing_since is None:
                self._failing_since = now

    def posted(self, status: str, seconds: float | None) -> None:
        with self._lock:
            self._posts[status] += 1
            if seconds is not None:
                self._buckets[bisect.bisect_left(POST_SECONDS_BUCKETS, seconds)] += 1
                self._sum += seconds

    def statistics(self) -> PosterStatistics:
        with self._lock:
            return PosterStatistics(dict(self._posts), dict(self._errors),
                                    tuple(self._buckets), self._sum, self._failing_since)
