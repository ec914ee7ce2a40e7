#!/usr/bin/env python3
"""Write the Nav2 map of every Gazebo world: gazebo_worlds/<w>.sdf -> config/maps/<w>.{pgm,yaml}.

    tools/ros_env python tools/make_nav2_maps.py            # (re)write the maps
    tools/ros_env python tools/make_nav2_maps.py --check    # exit 1 if a map is stale

The map is the SDF's static collision geometry at the robot's body height
(delivery_robot.occupancy_map); `--check` compares bytes, so the committed map and the world
cannot drift apart (tests/test_occupancy_map.py and tools/check_assets.py run it).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from delivery_robot.occupancy_map import MapError, stale_maps, world_maps
from delivery_robot.world_geometry import WorldGeometryError

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 if a committed map is missing or stale")
    args = parser.parse_args(argv)
    try:
        if args.check:
            problems = stale_maps(ROOT)
            for problem in problems:
                print(f"stale map: {problem}", file=sys.stderr)
            if problems:
                print("regenerate with: tools/ros_env python tools/make_nav2_maps.py",
                      file=sys.stderr)
                return 1
            print("Nav2 maps are up to date with gazebo_worlds/*.sdf")
            return 0
        out_dir = ROOT / "config" / "maps"
        out_dir.mkdir(parents=True, exist_ok=True)
        for world, (pgm, yaml_text) in world_maps(ROOT).items():
            (out_dir / f"{world}.pgm").write_bytes(pgm)
            (out_dir / f"{world}.yaml").write_text(yaml_text, encoding="utf-8")
            print(f"wrote config/maps/{world}.pgm ({len(pgm)} bytes) and {world}.yaml")
        return 0
    except (MapError, WorldGeometryError) as error:
        print(f"make_nav2_maps: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
