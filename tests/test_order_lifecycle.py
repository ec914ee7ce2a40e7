from __future__ import annotations

import pytest

from delivery_robot.order_lifecycle import (
    GOODS_ON_BOARD_STATES,
    LEGAL_TRANSITIONS,
    IllegalTransition,
    OrderState,
    check_transition,
    is_terminal,
)

HAPPY_PATH = [OrderState.REQUESTED, OrderState.ASSIGNED, OrderState.TO_PICKUP,
              OrderState.AWAITING_LOAD, OrderState.IN_TRANSIT, OrderState.AWAITING_RECIPIENT,
              OrderState.DELIVERED]


def test_happy_path_is_legal() -> None:
    for current, wanted in zip(HAPPY_PATH, HAPPY_PATH[1:], strict=False):
        assert check_transition(current, wanted) is wanted


def test_terminal_states_have_no_way_out() -> None:
    for state in OrderState:
        assert is_terminal(state) == (not LEGAL_TRANSITIONS[state])


def test_illegal_transition_says_what_is_allowed() -> None:
    with pytest.raises(IllegalTransition, match=r"requested -> delivered \(allowed: assigned"):
        check_transition(OrderState.REQUESTED, OrderState.DELIVERED)
    with pytest.raises(IllegalTransition, match="delivered is final"):
        check_transition(OrderState.DELIVERED, OrderState.CANCELLED)


def test_loaded_goods_are_never_cancelled_in_place() -> None:
    """Once goods are on board, a cancel must bring them back (returning), not drop them."""
    for state in GOODS_ON_BOARD_STATES - {OrderState.RETURNING}:
        assert OrderState.CANCELLED not in LEGAL_TRANSITIONS[state]
        assert OrderState.REQUESTED not in LEGAL_TRANSITIONS[state]
    assert OrderState.RETURNING in LEGAL_TRANSITIONS[OrderState.IN_TRANSIT]


def test_every_state_is_reachable_from_requested() -> None:
    seen, frontier = {OrderState.REQUESTED}, [OrderState.REQUESTED]
    while frontier:
        for nxt in LEGAL_TRANSITIONS[frontier.pop()] - seen:
            seen.add(nxt)
            frontier.append(nxt)
    assert seen == set(OrderState)


def test_labels_round_trip_and_unknown_label_is_clear() -> None:
    for state in OrderState:
        assert OrderState.from_label(state.label) is state
    with pytest.raises(ValueError, match="unknown order state 'lost'"):
        OrderState.from_label("lost")
