"""Order intake: each bad input is refused with its stable code; good input comes out clean."""

from __future__ import annotations

import math

import pytest

from delivery_robot.order_intake import (
    MAX_NOTE_CHARS,
    AcceptedOrder,
    OrderIntake,
    OrderRequest,
    RejectCode,
    Rejection,
    RobotCapacity,
    Shop,
    SizeClass,
)

# bakery -> gate_a and back; gate_island is reachable only one way, gate_far not at all.
ROUTES = {
    ("bakery_door", "gate_a"): 60.0,
    ("gate_a", "bakery_door"): 60.0,
    ("bakery_door", "gate_island"): 90.0,
    ("florist_door", "gate_a"): 45.0,
    ("gate_a", "florist_door"): 45.0,
}
WAYPOINTS = {
    "bakery_door": "shop",
    "florist_door": "shop",
    "gate_a": "dropoff",
    "gate_island": "dropoff",
    "gate_far": "dropoff",
    "charger_1": "charger",
}
FLEET = [
    RobotCapacity(SizeClass.SMALL, 20.0),
    RobotCapacity(SizeClass.MEDIUM, 10.0),
]


def travel_time(start: str, goal: str) -> float | None:
    return 0.0 if start == goal else ROUTES.get((start, goal))


@pytest.fixture
def intake() -> OrderIntake:
    return OrderIntake(
        shops=[Shop("bakery", "bakery_door"), Shop("florist", "florist_door")],
        waypoint_kinds=WAYPOINTS,
        fleet=FLEET,
        travel_time=travel_time,
    )


def request(**changes: object) -> OrderRequest:
    fields: dict[str, object] = {
        "shop_id": "bakery",
        "dropoff_waypoint": "gate_a",
        "size": 0,
        "weight_kg": 2.0,
        "note": "",
        "idempotency_key": "",
    }
    fields.update(changes)
    return OrderRequest(**fields)  # type: ignore[arg-type]


def rejected(intake: OrderIntake, req: OrderRequest) -> Rejection:
    result = intake.validate(req)
    assert isinstance(result, Rejection), f"expected a rejection, got {result}"
    return result


def test_good_request_is_accepted_with_the_shop_pickup(intake: OrderIntake) -> None:
    result = intake.validate(
        request(
            size="Medium",
            weight_kg=3,
            note="2층, 문 앞에 두세요\n감사합니다",
            idempotency_key="a-1",
        )
    )

    assert result == AcceptedOrder(
        shop_id="bakery",
        pickup_waypoint="bakery_door",
        dropoff_waypoint="gate_a",
        size=SizeClass.MEDIUM,
        weight_kg=3.0,
        note="2층, 문 앞에 두세요\n감사합니다",
        idempotency_key="a-1",
    )


def test_note_of_exactly_the_limit_is_accepted(intake: OrderIntake) -> None:
    assert isinstance(intake.validate(request(note="가" * MAX_NOTE_CHARS)), AcceptedOrder)


@pytest.mark.parametrize(
    ("changes", "code", "field", "words"),
    [
        ({"shop_id": "butcher"}, RejectCode.UNKNOWN_SHOP, "shop_id", "unknown shop 'butcher'"),
        (
            {"dropoff_waypoint": "nowhere"},
            RejectCode.UNKNOWN_DROPOFF,
            "dropoff_waypoint",
            "unknown dropoff",
        ),
        (
            {"dropoff_waypoint": "charger_1"},
            RejectCode.UNKNOWN_DROPOFF,
            "dropoff_waypoint",
            "is a charger, not a dropoff",
        ),
        (
            {"dropoff_waypoint": "gate_far"},
            RejectCode.UNREACHABLE_DROPOFF,
            "dropoff_waypoint",
            "no route from shop",
        ),
        (
            {"dropoff_waypoint": "gate_island"},
            RejectCode.UNREACHABLE_DROPOFF,
            "dropoff_waypoint",
            "no route back",
        ),
        ({"size": 2}, RejectCode.TOO_LARGE, "size", "largest compartment: medium"),
        ({"weight_kg": 25.0}, RejectCode.TOO_HEAVY, "weight_kg", "at most 20 kg"),
        (
            {"size": "medium", "weight_kg": 15.0},
            RejectCode.TOO_HEAVY,
            "weight_kg",
            "takes size medium",
        ),
        ({"note": "x" * (MAX_NOTE_CHARS + 1)}, RejectCode.NOTE_TOO_LONG, "note", "281"),
        ({"shop_id": ""}, RejectCode.INVALID_FIELD, "shop_id", "must not be empty"),
        ({"shop_id": "s" * 65}, RejectCode.INVALID_FIELD, "shop_id", "at most 64"),
        ({"shop_id": " bakery"}, RejectCode.INVALID_FIELD, "shop_id", "surrounding spaces"),
        ({"shop_id": 7}, RejectCode.INVALID_FIELD, "shop_id", "must be a string"),
        ({"dropoff_waypoint": ""}, RejectCode.INVALID_FIELD, "dropoff_waypoint", "empty"),
        (
            {"idempotency_key": "k" * 129},
            RejectCode.INVALID_FIELD,
            "idempotency_key",
            "at most 128",
        ),
        (
            {"idempotency_key": "a\x00b"},
            RejectCode.INVALID_FIELD,
            "idempotency_key",
            "control characters",
        ),
        ({"size": 3}, RejectCode.INVALID_FIELD, "size", "not one of"),
        ({"size": -1}, RejectCode.INVALID_FIELD, "size", "not one of"),
        ({"size": "huge"}, RejectCode.INVALID_FIELD, "size", "not one of"),
        ({"size": True}, RejectCode.INVALID_FIELD, "size", "not one of"),
        ({"size": 1.0}, RejectCode.INVALID_FIELD, "size", "not one of"),
        ({"weight_kg": -0.1}, RejectCode.INVALID_FIELD, "weight_kg", ">= 0"),
        ({"weight_kg": math.nan}, RejectCode.INVALID_FIELD, "weight_kg", "finite"),
        ({"weight_kg": math.inf}, RejectCode.INVALID_FIELD, "weight_kg", "finite"),
        ({"weight_kg": "3"}, RejectCode.INVALID_FIELD, "weight_kg", "number"),
        ({"note": "bell\x07"}, RejectCode.INVALID_FIELD, "note", "control characters"),
        ({"note": None}, RejectCode.INVALID_FIELD, "note", "must be a string"),
    ],
)
def test_each_bad_input_is_rejected_with_its_code(
    intake: OrderIntake, changes: dict[str, object], code: RejectCode, field: str, words: str
) -> None:
    rejection = rejected(intake, request(**changes))

    assert rejection.code == code
    assert [(p.code, p.field) for p in rejection.problems] == [(code, field)]
    assert words in rejection.message


def test_all_problems_are_reported_and_the_code_is_the_first_in_check_order(
    intake: OrderIntake,
) -> None:
    rejection = rejected(
        intake,
        request(shop_id="butcher", dropoff_waypoint="nowhere", size=2, note="x" * 300),
    )

    assert [p.code for p in rejection.problems] == [
        RejectCode.UNKNOWN_SHOP,
        RejectCode.UNKNOWN_DROPOFF,
        RejectCode.TOO_LARGE,
        RejectCode.NOTE_TOO_LONG,
    ]
    assert rejection.code == RejectCode.UNKNOWN_SHOP
    assert "butcher" in rejection.message
    assert "nowhere" in rejection.message


def test_field_shape_problems_come_before_domain_problems(intake: OrderIntake) -> None:
    rejection = rejected(intake, request(shop_id="butcher", weight_kg=-1))

    assert rejection.code == RejectCode.INVALID_FIELD
    assert [p.code for p in rejection.problems] == [
        RejectCode.INVALID_FIELD,
        RejectCode.UNKNOWN_SHOP,
    ]


def test_route_is_not_checked_when_the_dropoff_is_already_wrong() -> None:
    calls: list[tuple[str, str]] = []

    def counting(start: str, goal: str) -> float | None:
        calls.append((start, goal))
        return travel_time(start, goal)

    intake = OrderIntake([Shop("bakery", "bakery_door")], WAYPOINTS, FLEET, counting)
    rejected(intake, request(dropoff_waypoint="charger_1"))
    assert calls == []


def test_codes_are_stable_snake_case_strings() -> None:
    assert {code.value for code in RejectCode} == {
        "invalid_field",
        "unknown_shop",
        "unknown_dropoff",
        "unreachable_dropoff",
        "too_large",
        "too_heavy",
        "note_too_long",
        "idempotency_conflict",
    }


def test_intake_refuses_a_config_it_cannot_check_against() -> None:
    with pytest.raises(ValueError, match="fleet config is empty"):
        OrderIntake([Shop("bakery", "bakery_door")], WAYPOINTS, [], travel_time)
    with pytest.raises(ValueError, match="unknown waypoint 'cellar'"):
        OrderIntake([Shop("bakery", "cellar")], WAYPOINTS, FLEET, travel_time)


def test_size_classes_match_the_order_message_constants() -> None:
    from delivery_interfaces.msg import Order

    wire = {
        name.removeprefix("SIZE_"): value
        for name, value in vars(Order).items()
        if name.startswith("SIZE_")
    }
    assert wire == {size.name: size.value for size in SizeClass}
