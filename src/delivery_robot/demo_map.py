"""The small waypoint map of the end-to-end demo (config/demo_map.yaml).

Straight-line distances only: the demo shows the node wiring (orders, missions, feedback,
order status); routing on a real route graph belongs to the navigation stack.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import yaml


@dataclass(frozen=True)
class DemoMap:
    waypoints: dict[str, tuple[float, float]]
    shops: dict[str, str]  # shop id -> pickup waypoint
    depot: str

    @classmethod
    def load(cls, path: Path) -> DemoMap:
        data = yaml.safe_load(path.read_text())
        waypoints = {name: (float(x), float(y)) for name, (x, y) in data["waypoints"].items()}
        shops = {str(shop): str(waypoint) for shop, waypoint in data["shops"].items()}
        depot = str(data["depot"])
        unknown = sorted({*shops.values(), depot} - waypoints.keys())
        if unknown:
            raise ValueError(f"{path}: unknown waypoints {unknown}")
        return cls(waypoints, shops, depot)

    def distance(self, a: str, b: str) -> float:
        (ax, ay), (bx, by) = self.waypoints[a], self.waypoints[b]
        return math.hypot(bx - ax, by - ay)

    @property
    def dropoffs(self) -> list[str]:
        used = {*self.shops.values(), self.depot}
        return sorted(name for name in self.waypoints if name not in used)
