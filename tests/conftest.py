"""Test harness: every test process gets DDS on loopback and a ROS domain id of its own.

This runs before any test module imports rclpy, so the settings reach every node the tests
create, in this process and in the peer processes they start (which inherit the environment).
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

import pytest

pytest.register_assert_rewrite("ros_harness")

from ros_harness import claim_domain_id  # noqa: E402

os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ.pop("ROS_LOCALHOST_ONLY", None)  # deprecated in Jazzy; the range above replaces it
os.environ.pop("ROS_STATIC_PEERS", None)
os.environ["ROS_DOMAIN_ID"] = str(claim_domain_id())
# Nodes keep durable state under $ROS_HOME (mission journal, handoff state): a home of this
# session's own, so no test run resumes a mission or a locked compartment of an earlier one.
_ros_home = tempfile.mkdtemp(prefix="delivery_robot_ros_home_")
os.environ["ROS_HOME"] = _ros_home
atexit.register(shutil.rmtree, _ros_home, ignore_errors=True)

pytest_plugins = ["ros_harness"]


@pytest.fixture(autouse=True)
def _ros_home_per_test(tmp_path_factory: pytest.TempPathFactory,
                       monkeypatch: pytest.MonkeyPatch) -> None:
    """A fresh $ROS_HOME for every test: the handoff node and the mission executor resume
    durable state from there, and one test's locked compartment must not be the next test's
    starting state (seen in CI: a handoff coming up `locked_loaded` for another test's order).
    Module-scoped fixtures keep the session home set above."""
    monkeypatch.setenv("ROS_HOME", str(tmp_path_factory.mktemp("ros_home")))
