"""The shop HTTP API (FastAPI), served from the coordinator's process; no rclpy in here.

The handlers call the thread-safe `FleetCoordinator` directly (one writer to the store, no
extra hop through ROS services); order events reach websockets through `events.EventHub`,
which the coordinator's effect sink feeds. Submodules are imported explicitly (`shop_api`,
`events`, `config`, `server`, `tokens`) so that the token helper does not load FastAPI.
"""
