"""The old module of `delivery-sim` (an end-to-end demo with stand-in robots until issue 4).

`delivery-sim` is now `delivery_robot.nodes.delivery_sim` (the whole stack on the headless
fleet simulator); this name stays only so the console script keeps working until setup.py
points at the new module.
"""

from __future__ import annotations

from delivery_robot.nodes.delivery_sim import main

__all__ = ["main"]

if __name__ == "__main__":
    raise SystemExit(main())
