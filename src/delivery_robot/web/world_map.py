"""The JSON map the tablet draws (`GET /api/v1/map`): waypoints, lanes, zones, shops.

Built once at start-up from the same route graph (or demo map) the coordinator plans on, so
the drawing and the dispatch never disagree.
"""

from __future__ import annotations

from typing import Any

from delivery_robot.demo_map import DemoMap
from delivery_robot.route_graph import RouteGraph


def map_from_route_graph(route: RouteGraph) -> dict[str, Any]:
    return {
        "world": route.world,
        "frame": "map",
        "waypoints": [
            {"name": w.name, "kind": w.kind.value, "x": w.x, "y": w.y, "yaw": w.yaw,
             "shop_id": w.shop_id, "label": w.label}
            for w in route.waypoints.values()
        ],
        "lanes": [
            {"start": lane.start, "end": lane.end, "one_way": lane.one_way,
             "speed_limit": lane.speed_limit, "width": lane.width}
            for lane in route.lanes
        ],
        "zones": [
            {"name": z.name, "kind": z.kind.value, "label": z.label,
             "speed_limit": z.effective_speed_limit,
             "polygon": [[float(x), float(y)] for x, y in z.polygon.exterior.coords]}
            for z in route.zones
        ],
        "shops": [{"shop_id": s.shop_id, "name": s.name, "waypoint": s.waypoint}
                  for s in route.shops],
    }


def map_from_demo_map(demo: DemoMap, world: str = "demo") -> dict[str, Any]:
    """The straight-line demo map: no lanes (robots drive straight), no zones."""
    shop_of = {wp: shop for shop, wp in demo.shops.items()}
    waypoints = []
    for name, (x, y) in demo.waypoints.items():
        kind = "depot" if name == demo.depot else "shop" if name in shop_of else "dropoff"
        waypoints.append({"name": name, "kind": kind, "x": x, "y": y, "yaw": None,
                          "shop_id": shop_of.get(name), "label": None})
    return {
        "world": world,
        "frame": "map",
        "waypoints": waypoints,
        "lanes": [],
        "zones": [],
        "shops": [{"shop_id": s, "name": s, "waypoint": wp} for s, wp in demo.shops.items()],
    }
