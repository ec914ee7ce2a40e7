from __future__ import annotations

import pytest

from delivery_robot.mission_legs import (
    ORDER_STATE_DURING_LEG,
    Leg,
    MissionKind,
    plan_legs,
)
from delivery_robot.order_lifecycle import OrderState, can_transition


def test_delivery_runs_pickup_load_dropoff_handoff_return() -> None:
    legs = plan_legs(MissionKind.DELIVERY, "bakery", "house_1", "depot")
    assert [(s.leg, s.waypoint) for s in legs] == [
        (Leg.TO_PICKUP, "bakery"), (Leg.AWAITING_LOAD, "bakery"), (Leg.TO_DROPOFF, "house_1"),
        (Leg.HANDOFF, "house_1"), (Leg.RETURNING, "depot")]
    assert [s.drives for s in legs] == [True, False, True, False, True]


def test_charge_mission_drives_then_charges() -> None:
    legs = plan_legs(MissionKind.CHARGE, "", "", "charger_1")
    assert [s.leg for s in legs] == [Leg.RETURNING, Leg.CHARGING]


@pytest.mark.parametrize(("kind", "pickup", "dropoff", "back"), [
    (MissionKind.DELIVERY, "", "house_1", "depot"),
    (MissionKind.DELIVERY, "bakery", "", "depot"),
    (MissionKind.RETURN, "", "", ""),
])
def test_incomplete_missions_are_refused(kind: MissionKind, pickup: str, dropoff: str,
                                         back: str) -> None:
    with pytest.raises(ValueError, match="needs"):
        plan_legs(kind, pickup, dropoff, back)


def test_leg_order_states_follow_the_lifecycle() -> None:
    states = [OrderState.ASSIGNED, *ORDER_STATE_DURING_LEG.values(), OrderState.DELIVERED]
    for current, wanted in zip(states, states[1:], strict=False):
        assert can_transition(current, wanted), (current, wanted)


@pytest.mark.ros
def test_legs_and_kinds_match_the_action_constants() -> None:
    from delivery_interfaces.action import ExecuteMission

    feedback = {n.removeprefix("LEG_"): v for n, v in vars(ExecuteMission.Feedback).items()
                if n.startswith("LEG_")}
    assert feedback == {leg.name: leg.value for leg in Leg}
    kinds = {n.removeprefix("KIND_"): v for n, v in vars(ExecuteMission.Goal).items()
             if n.startswith("KIND_")}
    assert kinds == {kind.name: kind.value for kind in MissionKind}
