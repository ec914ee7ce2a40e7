"""The QoS profiles of the stack's contracts, defined once.

- state that late joiners need (robot_state, compartment/state, /fleet/state): reliable,
  transient local, the last sample;
- events that must not be missed (/fleet/order_status): reliable, transient local, a history;
- sensors (scan, images, odom from the simulator): the ROS sensor-data profile (best effort);
- commands (cmd_vel, cmd_vel_safe): reliable, volatile, the newest only.
"""

from __future__ import annotations

from rclpy.qos import (
    DurabilityPolicy,
    HistoryPolicy,
    QoSProfile,
    ReliabilityPolicy,
    qos_profile_sensor_data,
)

STATE_QOS = QoSProfile(
    history=HistoryPolicy.KEEP_LAST, depth=1,
    reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL,
)
EVENT_QOS = QoSProfile(
    history=HistoryPolicy.KEEP_LAST, depth=100,
    reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL,
)
SENSOR_QOS = qos_profile_sensor_data
COMMAND_QOS = QoSProfile(
    history=HistoryPolicy.KEEP_LAST, depth=1,
    reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.VOLATILE,
)
