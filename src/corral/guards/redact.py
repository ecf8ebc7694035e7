"""Loaded secrets never reach a prompt: the guard chain's outermost step.

A secret Corral has loaded (a provider's API key, a value of the secrets file, an app's
`register_secret`) can find its way into a message: a tool's error text or result quoting it, a
payload built from the environment. Sent, it would be in the provider's logs and possibly its
training data, and the model could repeat it. `RedactStep` replaces every loaded secret in the
messages about to be sent with `[REDACTED]`, counts the replacements on the call
(`ModelCall.secrets_redacted`, the model span's `secrets_redacted` attribute) and emits a
`secret_redacted` guard event (an alert: some code path puts secrets into prompts; the
`corral_agent_secrets_redacted` metric counts them).

Cheap on the hot path: one pattern matching every loaded value (`corral.secrets.secret_pattern`,
built once per set of secrets), one search per message; with nothing loaded the step is a plain
function that hands the call on. Only message text is scanned: a tool call's arguments are the
model's own words, and the model only knows what it was sent.

Its whole reach: the step, first in `Guards.steps` (so the cache key, the cached answer, every
fallback model and every retry see the redacted request).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable
from dataclasses import replace

from corral.guards.step import GuardEvent, ModelCall, Next
from corral.model import ModelResponse
from corral.secrets import secret_pattern

__all__ = ["REDACTED", "RedactStep"]

REDACTED = "[REDACTED]"


class RedactStep:
    """Replaces loaded secret values in a call's messages before anything else sees them."""

    def __call__(self, call: ModelCall, next: Next) -> Awaitable[ModelResponse]:
        pattern = secret_pattern()
        if pattern is None:
            return next(call)
        messages = call.request.messages
        for position, message in enumerate(messages):
            if pattern.search(message.content) is not None:
                return self._redacted(call, next, pattern, position)
        return next(call)

    async def _redacted(
        self, call: ModelCall, next: Next, pattern: re.Pattern[str], first: int
    ) -> ModelResponse:
        messages = list(call.request.messages)
        count = 0
        touched = 0
        for position in range(first, len(messages)):
            message = messages[position]
            content, found = pattern.subn(REDACTED, message.content)
            if found:
                messages[position] = replace(message, content=content)
                count += found
                touched += 1
        call.request = replace(call.request, messages=tuple(messages))
        call.secrets_redacted += count
        await call.emit(
            GuardEvent(
                kind="secret_redacted",
                detail={"secrets": count, "messages": touched},
                alert=True,
            )
        )
        return await next(call)
