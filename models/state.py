"""Request states, spelled as DESIGN §1 spells them, and the one transition table."""

from __future__ import annotations

import enum


class State(enum.StrEnum):
    awaiting_confirmation = "awaiting_confirmation"
    pending_acceptance = "pending_acceptance"
    active = "active"
    rejected = "rejected"
    expired = "expired"
    declined = "declined"
    cancelled = "cancelled"
    lapsed = "lapsed"


class Action(enum.StrEnum):
    """What moves a request: a party's keyword, an admin, or a scheduled check."""

    confirm = "confirm"
    cancel = "cancel"
    accept = "accept"
    decline = "decline"
    expire = "expire"
    lapse = "lapse"


OPEN = frozenset({State.awaiting_confirmation, State.pending_acceptance})
# A second request for an account domain in one of these states is refused (DESIGN §1).
BLOCKING = OPEN | {State.active}

TRANSITIONS: dict[tuple[State, Action], State] = {
    (State.awaiting_confirmation, Action.confirm): State.pending_acceptance,
    (State.awaiting_confirmation, Action.cancel): State.cancelled,
    (State.awaiting_confirmation, Action.lapse): State.lapsed,
    (State.pending_acceptance, Action.cancel): State.cancelled,
    (State.pending_acceptance, Action.accept): State.active,
    (State.pending_acceptance, Action.decline): State.declined,
    (State.pending_acceptance, Action.expire): State.expired,
}


def next_state(state: State, action: Action) -> State | None:
    """The state `action` leads to from `state`, or None when it does not apply."""
    return TRANSITIONS.get((state, action))
