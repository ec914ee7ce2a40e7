"""Order intake: turn an untrusted new-order request into an accepted order or a rejection.

Every problem is collected, not just the first, so a shop fixes its request in one go; the
rejection's `code` is that of the first problem in the fixed check order below (field shapes,
shop, dropoff, route, size, weight, note), which keeps the code stable for clients. Checks
that depend on an earlier field (reachability needs a known shop and dropoff) are skipped when
that field is already wrong. Intake never touches the store: a rejection writes nothing.

Check order: invalid_field (shop_id, dropoff_waypoint, size, weight_kg, note, idempotency_key)
-> unknown_shop -> unknown_dropoff -> unreachable_dropoff -> too_large -> too_heavy ->
note_too_long.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import IntEnum, StrEnum

# Seconds of driving between two route-graph waypoints; None when there is no route.
TravelTime = Callable[[str, str], float | None]

MAX_NOTE_CHARS = 280
MAX_ID_CHARS = 64
MAX_IDEMPOTENCY_KEY_CHARS = 128


class SizeClass(IntEnum):
    """Compartment size classes, the wire values of `delivery_interfaces/Order.SIZE_*`."""

    SMALL = 0
    MEDIUM = 1
    LARGE = 2

    @property
    def label(self) -> str:
        return self.name.lower()


class RejectCode(StrEnum):
    """Stable machine-readable error codes shared by intake, the store, the API and ROS."""

    INVALID_FIELD = "invalid_field"
    UNKNOWN_SHOP = "unknown_shop"
    UNKNOWN_DROPOFF = "unknown_dropoff"
    UNREACHABLE_DROPOFF = "unreachable_dropoff"
    TOO_LARGE = "too_large"
    TOO_HEAVY = "too_heavy"
    NOTE_TOO_LONG = "note_too_long"
    IDEMPOTENCY_CONFLICT = "idempotency_conflict"


@dataclass(frozen=True)
class OrderRequest:
    """A new order as a shop sent it (HTTP JSON or `/fleet/submit_order`); not yet trusted.

    `size` may be the wire value (0..2) or the label ("small", "medium", "large").
    """

    shop_id: str
    dropoff_waypoint: str
    size: int | str
    weight_kg: float
    note: str = ""
    idempotency_key: str = ""


@dataclass(frozen=True)
class AcceptedOrder:
    """A request that passed every check; the only input the order store accepts."""

    shop_id: str
    pickup_waypoint: str
    dropoff_waypoint: str
    size: SizeClass
    weight_kg: float
    note: str
    idempotency_key: str  # "" = the shop asked for no idempotency


@dataclass(frozen=True)
class Problem:
    code: RejectCode
    field: str
    message: str


@dataclass(frozen=True)
class Rejection:
    """Why a request was refused: `code`/`message` for clients, `problems` for the full list."""

    problems: tuple[Problem, ...]

    def __post_init__(self) -> None:
        if not self.problems:
            raise ValueError("a rejection needs at least one problem")

    @property
    def code(self) -> RejectCode:
        return self.problems[0].code

    @property
    def message(self) -> str:
        return "; ".join(problem.message for problem in self.problems)


@dataclass(frozen=True)
class RobotCapacity:
    """One robot's compartment from the fleet config."""

    size_class: SizeClass
    max_payload_kg: float


@dataclass(frozen=True)
class Shop:
    shop_id: str
    pickup_waypoint: str


@dataclass
class _Problems:
    items: list[Problem] = field(default_factory=list)

    def add(self, code: RejectCode, field_name: str, message: str) -> None:
        self.items.append(Problem(code, field_name, message))


def _check_id(value: object, name: str, max_chars: int, problems: _Problems) -> str | None:
    """An id must be a non-empty, printable string without surrounding spaces."""
    if not isinstance(value, str):
        problems.add(RejectCode.INVALID_FIELD, name, f"{name} must be a string")
        return None
    if not value:
        problems.add(RejectCode.INVALID_FIELD, name, f"{name} must not be empty")
        return None
    if len(value) > max_chars:
        problems.add(
            RejectCode.INVALID_FIELD,
            name,
            f"{name} is {len(value)} characters long; at most {max_chars} allowed",
        )
        return None
    if value != value.strip() or not value.isprintable():
        problems.add(
            RejectCode.INVALID_FIELD,
            name,
            f"{name} must not contain control characters or surrounding spaces",
        )
        return None
    return value


def _parse_size(value: object, problems: _Problems) -> SizeClass | None:
    labels = ", ".join(f"{s.value} or {s.label!r}" for s in SizeClass)
    if isinstance(value, str):
        try:
            return SizeClass[value.strip().upper()]
        except KeyError:
            pass
    # bool is an int subclass; `true` is not a size.
    elif isinstance(value, int) and not isinstance(value, bool):
        try:
            return SizeClass(value)
        except ValueError:
            pass
    problems.add(RejectCode.INVALID_FIELD, "size", f"size {value!r} is not one of {labels}")
    return None


def _parse_weight(value: object, problems: _Problems) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        weight = float(value)
        if math.isfinite(weight) and weight >= 0.0:
            return weight
    problems.add(
        RejectCode.INVALID_FIELD,
        "weight_kg",
        f"weight_kg {value!r} must be a finite number of kilograms >= 0",
    )
    return None


def _parse_note(value: object, problems: _Problems) -> str | None:
    if not isinstance(value, str):
        problems.add(RejectCode.INVALID_FIELD, "note", "note must be a string")
        return None
    if any(not ch.isprintable() and ch not in "\n\t" for ch in value):
        problems.add(RejectCode.INVALID_FIELD, "note", "note must not contain control characters")
        return None
    return value


class OrderIntake:
    """Validates requests against the shops, the route graph and the fleet's compartments.

    `waypoint_kinds` maps every route-graph waypoint to its kind ("shop", "dropoff", ...);
    `travel_time` is injected so intake does not depend on how routes are computed.
    """

    def __init__(
        self,
        shops: Iterable[Shop],
        waypoint_kinds: Mapping[str, str],
        fleet: Iterable[RobotCapacity],
        travel_time: TravelTime,
    ) -> None:
        self._shops = {shop.shop_id: shop for shop in shops}
        self._waypoint_kinds = dict(waypoint_kinds)
        self._fleet = tuple(fleet)
        self._travel_time = travel_time
        if not self._fleet:
            raise ValueError("intake needs the fleet's compartments: the fleet config is empty")
        for shop in self._shops.values():
            if shop.pickup_waypoint not in self._waypoint_kinds:
                raise ValueError(
                    f"shop {shop.shop_id!r} picks up at unknown waypoint {shop.pickup_waypoint!r}"
                )

    def validate(self, request: OrderRequest) -> AcceptedOrder | Rejection:
        problems = _Problems()
        shop_id = _check_id(request.shop_id, "shop_id", MAX_ID_CHARS, problems)
        dropoff = _check_id(request.dropoff_waypoint, "dropoff_waypoint", MAX_ID_CHARS, problems)
        size = _parse_size(request.size, problems)
        weight = _parse_weight(request.weight_kg, problems)
        note = _parse_note(request.note, problems)
        key = self._check_idempotency_key(request.idempotency_key, problems)

        shop = self._check_shop(shop_id, problems)
        dropoff = self._check_dropoff(dropoff, problems)
        if shop is not None and dropoff is not None:
            self._check_route(shop, dropoff, problems)
        self._check_capacity(size, weight, problems)
        if note is not None and len(note) > MAX_NOTE_CHARS:
            problems.add(
                RejectCode.NOTE_TOO_LONG,
                "note",
                f"note is {len(note)} characters long; at most {MAX_NOTE_CHARS} allowed",
            )

        # A field left None always recorded a problem, so this never builds an empty rejection.
        if (
            problems.items
            or shop is None
            or dropoff is None
            or size is None
            or weight is None
            or note is None
            or key is None
        ):
            return Rejection(tuple(problems.items))
        return AcceptedOrder(
            shop_id=shop.shop_id,
            pickup_waypoint=shop.pickup_waypoint,
            dropoff_waypoint=dropoff,
            size=size,
            weight_kg=weight,
            note=note,
            idempotency_key=key,
        )

    @staticmethod
    def _check_idempotency_key(value: object, problems: _Problems) -> str | None:
        if value == "":
            return ""
        return _check_id(value, "idempotency_key", MAX_IDEMPOTENCY_KEY_CHARS, problems)

    def _check_shop(self, shop_id: str | None, problems: _Problems) -> Shop | None:
        if shop_id is None:
            return None
        shop = self._shops.get(shop_id)
        if shop is None:
            problems.add(RejectCode.UNKNOWN_SHOP, "shop_id", f"unknown shop {shop_id!r}")
        return shop

    def _check_dropoff(self, dropoff: str | None, problems: _Problems) -> str | None:
        if dropoff is None:
            return None
        kind = self._waypoint_kinds.get(dropoff)
        if kind == "dropoff":
            return dropoff
        if kind is None:
            message = f"unknown dropoff waypoint {dropoff!r}"
        else:
            message = f"waypoint {dropoff!r} is a {kind}, not a dropoff point"
        problems.add(RejectCode.UNKNOWN_DROPOFF, "dropoff_waypoint", message)
        return None

    def _check_route(self, shop: Shop, dropoff: str, problems: _Problems) -> None:
        """Both ways: a no-show brings the goods back to the shop, so that route must exist."""
        if self._travel_time(shop.pickup_waypoint, dropoff) is None:
            problems.add(
                RejectCode.UNREACHABLE_DROPOFF,
                "dropoff_waypoint",
                f"no route from shop {shop.shop_id!r} ({shop.pickup_waypoint}) to {dropoff!r}",
            )
        elif self._travel_time(dropoff, shop.pickup_waypoint) is None:
            problems.add(
                RejectCode.UNREACHABLE_DROPOFF,
                "dropoff_waypoint",
                f"no route back from {dropoff!r} to shop {shop.shop_id!r} "
                f"({shop.pickup_waypoint}), needed to return the goods on a no-show",
            )

    def _check_capacity(
        self, size: SizeClass | None, weight: float | None, problems: _Problems
    ) -> None:
        largest = max(robot.size_class for robot in self._fleet)
        if size is not None and size > largest:
            problems.add(
                RejectCode.TOO_LARGE,
                "size",
                f"size {size.label} does not fit any robot (largest compartment: {largest.label})",
            )
            return
        if weight is None:
            return
        fitting = [r for r in self._fleet if size is None or r.size_class >= size]
        heaviest = max(robot.max_payload_kg for robot in fitting)
        if weight > heaviest:
            which = "any robot" if size is None else f"any robot that takes size {size.label}"
            problems.add(
                RejectCode.TOO_HEAVY,
                "weight_kg",
                f"{weight:g} kg is more than {which} carries (at most {heaviest:g} kg)",
            )
