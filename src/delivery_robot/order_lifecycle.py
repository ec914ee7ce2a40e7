"""The order lifecycle: the one place that says which state changes are legal.

The numeric values are the wire values of `delivery_interfaces/OrderStatus.STATE_*` (a test
keeps the two in step), so the coordinator, the tablet and the store all speak the same states.
"""

from __future__ import annotations

from enum import IntEnum


class OrderState(IntEnum):
    REQUESTED = 0
    ASSIGNED = 1
    TO_PICKUP = 2
    AWAITING_LOAD = 3
    IN_TRANSIT = 4
    AWAITING_RECIPIENT = 5
    DELIVERED = 6
    CANCELLED = 7
    FAILED = 8
    RETURNING = 9

    @property
    def label(self) -> str:
        """The lower-case name used in the JSON API and logs, e.g. "awaiting_load"."""
        return self.name.lower()

    @classmethod
    def from_label(cls, label: str) -> OrderState:
        try:
            return cls[label.upper()]
        except KeyError:
            known = ", ".join(state.label for state in cls)
            raise ValueError(f"unknown order state {label!r}; known states: {known}") from None


TERMINAL_STATES: frozenset[OrderState] = frozenset(
    {OrderState.DELIVERED, OrderState.CANCELLED, OrderState.FAILED}
)

# States in which the goods are inside a robot: such an order is never silently reassigned.
GOODS_ON_BOARD_STATES: frozenset[OrderState] = frozenset(
    {OrderState.IN_TRANSIT, OrderState.AWAITING_RECIPIENT, OrderState.RETURNING}
)

_S = OrderState
LEGAL_TRANSITIONS: dict[OrderState, frozenset[OrderState]] = {
    # An assigned order can go back to requested when its robot drops out before loading.
    _S.REQUESTED: frozenset({_S.ASSIGNED, _S.CANCELLED, _S.FAILED}),
    _S.ASSIGNED: frozenset({_S.TO_PICKUP, _S.REQUESTED, _S.CANCELLED, _S.FAILED}),
    _S.TO_PICKUP: frozenset({_S.AWAITING_LOAD, _S.REQUESTED, _S.CANCELLED, _S.FAILED}),
    _S.AWAITING_LOAD: frozenset({_S.IN_TRANSIT, _S.REQUESTED, _S.CANCELLED, _S.FAILED}),
    # Once loaded, a cancel brings the goods back to the shop (returning), never drops them.
    _S.IN_TRANSIT: frozenset({_S.AWAITING_RECIPIENT, _S.RETURNING, _S.FAILED}),
    _S.AWAITING_RECIPIENT: frozenset({_S.DELIVERED, _S.RETURNING, _S.FAILED}),
    _S.RETURNING: frozenset({_S.FAILED, _S.CANCELLED}),
    _S.DELIVERED: frozenset(),
    _S.CANCELLED: frozenset(),
    _S.FAILED: frozenset(),
}


class IllegalTransition(ValueError):
    """A state change the lifecycle forbids; the message says what would have been legal."""

    def __init__(self, current: OrderState, wanted: OrderState) -> None:
        allowed = sorted(state.label for state in LEGAL_TRANSITIONS[current])
        hint = ", ".join(allowed) if allowed else f"none: {current.label} is final"
        super().__init__(
            f"illegal order transition {current.label} -> {wanted.label} (allowed: {hint})"
        )
        self.current = current
        self.wanted = wanted


def can_transition(current: OrderState, wanted: OrderState) -> bool:
    return wanted in LEGAL_TRANSITIONS[current]


def check_transition(current: OrderState, wanted: OrderState) -> OrderState:
    """Return `wanted` if the lifecycle allows it from `current`, else raise IllegalTransition."""
    if not can_transition(current, wanted):
        raise IllegalTransition(current, wanted)
    return wanted


def is_terminal(state: OrderState) -> bool:
    return state in TERMINAL_STATES
