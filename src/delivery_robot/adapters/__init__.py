"""Adapters to ROS tools only robots have (tf2_ros, Nav2, cv_bridge): imported in one place
each, with a fallback where the tool is missing."""
