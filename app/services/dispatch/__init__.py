"""Dispatch: fulfilling outbox rows, exactly one platform prescription per ours.

- :mod:`~app.services.dispatch.claim_loop`: :class:`Dispatcher`, the claim loop
  and storing what each attempt came to;
- :mod:`~app.services.dispatch.erx_route`: Region B, the platform call behind
  the circuit breaker (lookup first after an unknown outcome, else issue once);
- :mod:`~app.services.dispatch.email_route`: Region A, the email to the pharmacy;
- :mod:`~app.services.dispatch.issue_request`: stored rows -> ``IssueRequest``;
- :mod:`~app.services.dispatch.outcome`: the attempt's outcome and the one rule
  for "outcome unknown".
"""

from __future__ import annotations

from app.services.dispatch.claim_loop import Dispatcher
from app.services.dispatch.erx_route import make_breaker

__all__ = ["Dispatcher", "make_breaker"]
