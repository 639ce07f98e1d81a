"""Rate-limit response headers: the IETF draft's structured fields and the legacy names.

draft-ietf-httpapi-ratelimit-headers: ``RateLimit-Policy: "default";q=100;w=60`` (quota and
window of each policy) and ``RateLimit: "default";r=42;t=18`` (units remaining, seconds until
more are available), one list member per policy. The legacy ``X-RateLimit-Limit``,
``-Remaining`` and ``-Reset`` (delta seconds) describe the first policy only.
"""

from __future__ import annotations

from collections.abc import Sequence

from plugins.ratelimit.gcra import Limit, LimitState, seconds_until_available, whole_seconds

#: Every header name this plugin may set; an upstream response carrying one keeps its own.
HEADER_NAMES = ("RateLimit-Policy", "RateLimit", "X-RateLimit-Limit", "X-RateLimit-Remaining",
                "X-RateLimit-Reset")


def reset_seconds(limit: Limit, state: LimitState) -> int:
    """Whole seconds until at least one unit of ``limit`` is available (``t``)."""
    return whole_seconds(seconds_until_available(limit, state))


def policy_header(names: Sequence[str], limits: Sequence[Limit]) -> str:
    """The ``RateLimit-Policy`` value for these policies (it never changes for a caller)."""
    return ", ".join(f'"{name}";q={limit.quota};w={limit.window}'
                     for name, limit in zip(names, limits, strict=True))


def rate_limit_headers(names: Sequence[str], limits: Sequence[Limit],
                       states: Sequence[LimitState], policy: str | None = None
                       ) -> dict[str, str]:
    """Headers describing each policy (``names[i]`` is ``limits[i]``, now in ``states[i]``);
    ``policy`` is :func:`policy_header` of the same, when already known."""
    if not limits:
        return {}
    if len(limits) == 1:  # the usual plan, a request limit alone: no lists to join
        only, now = limits[0], states[0]
        left = str(min(only.quota, max(0, now.remaining)))
        after = str(reset_seconds(only, now))
        return {
            "RateLimit-Policy": policy or policy_header(names, limits),
            "RateLimit": f'"{names[0]}";r={left};t={after}',
            "X-RateLimit-Limit": str(only.quota),
            "X-RateLimit-Remaining": left,
            "X-RateLimit-Reset": after,
        }
    values: list[str] = []
    legacy: tuple[int, int] | None = None
    for name, limit, state in zip(names, limits, states, strict=True):
        remaining = min(limit.quota, max(0, state.remaining))
        reset = reset_seconds(limit, state)
        values.append(f'"{name}";r={remaining};t={reset}')
        if legacy is None:
            legacy = (remaining, reset)
    assert legacy is not None
    return {
        "RateLimit-Policy": policy or policy_header(names, limits),
        "RateLimit": ", ".join(values),
        "X-RateLimit-Limit": str(limits[0].quota),
        "X-RateLimit-Remaining": str(legacy[0]),
        "X-RateLimit-Reset": str(legacy[1]),
    }
