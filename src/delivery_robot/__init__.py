"""delivery_robot: a ROS 2 control stack for pilot delivery robots serving small shops.

Modules at this level are the pure-Python domain core: they decide, and never import rclpy.
`delivery_robot.ros` holds the shared ROS glue (QoS, parameters, conversions) and
`delivery_robot.nodes` the thin node wrappers around the core.
"""

__version__ = "0.1.0"
