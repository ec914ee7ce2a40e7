"""A mission as a sequence of legs, and what each leg means for the orders it carries.

The leg numbers are the wire values of `ExecuteMission.Feedback.LEG_*` (a test keeps them equal),
so the robot's feedback can be turned into order-state changes without a second table.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from delivery_robot.order_lifecycle import OrderState


class Leg(IntEnum):
    TO_PICKUP = 0
    AWAITING_LOAD = 1
    TO_DROPOFF = 2
    HANDOFF = 3
    RETURNING = 4
    CHARGING = 5


class MissionKind(IntEnum):
    DELIVERY = 0
    RETURN = 1
    CHARGE = 2


class RobotMode(IntEnum):
    """`RobotState.MODE_*` wire values (kept equal by the node tests): what a robot reports it
    is doing. The coordinator reads a delivery's progress from it when no action feedback
    reaches it (after a restart of either side)."""

    IDLE = 0
    TO_PICKUP = 1
    AWAITING_LOAD = 2
    TO_DROPOFF = 3
    AWAITING_RECIPIENT = 4
    RETURNING = 5
    CHARGING = 6
    DOCKING = 7
    ESTOP = 8
    FAULT = 9


# The mode a robot reports while it runs a leg (and the leg a mode reveals, inverted).
MODE_DURING_LEG: dict[Leg, RobotMode] = {
    Leg.TO_PICKUP: RobotMode.TO_PICKUP,
    Leg.AWAITING_LOAD: RobotMode.AWAITING_LOAD,
    Leg.TO_DROPOFF: RobotMode.TO_DROPOFF,
    Leg.HANDOFF: RobotMode.AWAITING_RECIPIENT,
    Leg.RETURNING: RobotMode.RETURNING,
    Leg.CHARGING: RobotMode.CHARGING,
}


@dataclass(frozen=True)
class LegStep:
    leg: Leg
    waypoint: str  # where the leg ends (or where the robot waits, for waiting legs)

    @property
    def drives(self) -> bool:
        return self.leg in (Leg.TO_PICKUP, Leg.TO_DROPOFF, Leg.RETURNING)


def plan_legs(kind: MissionKind, pickup: str, dropoff: str, return_to: str) -> list[LegStep]:
    """The legs a robot runs for a mission; a delivery without a return waypoint ends at the
    dropoff (the coordinator then sends the robot elsewhere)."""
    if kind is MissionKind.DELIVERY:
        if not pickup or not dropoff:
            raise ValueError("a delivery mission needs both a pickup and a dropoff waypoint")
        legs = [LegStep(Leg.TO_PICKUP, pickup), LegStep(Leg.AWAITING_LOAD, pickup),
                LegStep(Leg.TO_DROPOFF, dropoff), LegStep(Leg.HANDOFF, dropoff)]
        if return_to:
            legs.append(LegStep(Leg.RETURNING, return_to))
        return legs
    if not return_to:
        raise ValueError(f"a {kind.name.lower()} mission needs a return waypoint")
    legs = [LegStep(Leg.RETURNING, return_to)]
    if kind is MissionKind.CHARGE:
        legs.append(LegStep(Leg.CHARGING, return_to))
    return legs


# Order state while the robot is on a leg of a delivery mission. Returning after the handoff
# does not change the order (it is already delivered); the coordinator decides that from the
# handoff result, not from the leg.
ORDER_STATE_DURING_LEG: dict[Leg, OrderState] = {
    Leg.TO_PICKUP: OrderState.TO_PICKUP,
    Leg.AWAITING_LOAD: OrderState.AWAITING_LOAD,
    Leg.TO_DROPOFF: OrderState.IN_TRANSIT,
    Leg.HANDOFF: OrderState.AWAITING_RECIPIENT,
}
