"""Failed logins, counted per client address: after `attempts` failures within `window_s`, that
address is refused (HTTP 429 with `Retry-After`) until its oldest failure leaves the window.

API tokens are 256-bit random, so guessing one is hopeless anyway; the limit keeps a guessing
script from filling the logs and loading the database, and the log line (in
`corral.server._login`) tells an operator that someone is trying. Counts live in this process; a
successful login clears its address's count. Behind a reverse proxy every client shares the
proxy's address unless uvicorn is told to trust its `X-Forwarded-For` (`--forwarded-allow-ips`).
"""

from __future__ import annotations

from collections import deque

from corral.clock import Clock
from corral.errors import UsageError

__all__ = ["LoginThrottle"]


class LoginThrottle:
    """Counts failed logins per client and says when a client must wait.

    Args:
        clock: Where time is read (`monotonic()`).
        attempts: Failures allowed per client within `window_s`.
        window_s: How long a failure counts.
        max_clients: Clients tracked at once; past this, the oldest are forgotten (memory stays
            bounded when many addresses fail).
    """

    def __init__(
        self,
        clock: Clock,
        *,
        attempts: int = 5,
        window_s: float = 60.0,
        max_clients: int = 10_000,
    ) -> None:
        if attempts < 1 or not window_s > 0 or max_clients < 1:
            raise UsageError(
                f"a login throttle needs attempts >= 1 (got {attempts}), window_s > 0 (got "
                f"{window_s}) and max_clients >= 1 (got {max_clients})"
            )
        self._clock = clock
        self._attempts = attempts
        self._window_s = window_s
        self._max_clients = max_clients
        self._failures: dict[str, deque[float]] = {}

    def retry_after_s(self, client: str) -> float:
        """Seconds `client` must wait before its next attempt (0: it may try now)."""
        failures = self._recent(client)
        if len(failures) < self._attempts:
            return 0.0
        return failures[0] + self._window_s - self._clock.monotonic()

    def failed(self, client: str) -> None:
        """Count one failed login from `client`."""
        failures = self._recent(client)
        failures.append(self._clock.monotonic())
        self._failures.pop(client, None)
        self._failures[client] = failures  # the most recently failing client goes last
        while len(self._failures) > self._max_clients:
            del self._failures[next(iter(self._failures))]

    def succeeded(self, client: str) -> None:
        """Forget `client`'s failures (it logged in)."""
        self._failures.pop(client, None)

    def _recent(self, client: str) -> deque[float]:
        failures = self._failures.get(client) or deque(maxlen=self._attempts)
        cutoff = self._clock.monotonic() - self._window_s
        while failures and failures[0] <= cutoff:
            failures.popleft()
        if not failures:
            self._failures.pop(client, None)
        return failures
