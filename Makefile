# The README's two commands are `make sim` (main job) and `make test` (tests); both set up
# everything first (tools/bootstrap.sh: Debian packages, .venv, colcon build), idempotently.
SHELL := /bin/bash
ROS_ENV := tools/ros_env
# Modules that decide (no rclpy): everything in delivery_robot but the ROS wrappers.
CORE_SOURCES = $(shell find src/delivery_robot -name '*.py' -not -path '*/nodes/*' -not -path '*/ros/*' -not -path '*/adapters/*')
PYTEST_ARGS ?=

.PHONY: setup sim test lint unit bench lock clean check-assets

setup:
	@tools/bootstrap.sh

sim: setup
	@$(ROS_ENV) delivery-sim $(SIM_ARGS)

test: setup lint
	@echo "[test] pytest (fast and slow tests; ROS on loopback, a DDS domain per test process)"
	@$(ROS_ENV) python -m pytest $(PYTEST_ARGS)

unit: setup
	@$(ROS_ENV) python -m pytest -m "not slow" $(PYTEST_ARGS)

lint: setup
	@echo "[lint] ruff"
	@.venv/bin/ruff check src tests bench tools launch setup.py
	@echo "[lint] mypy (pure-Python core)"
	@.venv/bin/mypy $(CORE_SOURCES)

# Static checks of what only robots and Gazebo machines run (launch files, params, Nav2, bridge,
# URDF, worlds, maps). make test runs the same checks through tests/test_assets.py.
check-assets: setup
	@echo "[check-assets] launch files, params files, Nav2, bridge, URDF, worlds, maps"
	@$(ROS_ENV) python tools/check_assets.py

bench: setup
	@$(ROS_ENV) python -m bench

# Re-resolve the newest versions allowed by requirements.in and pin them in constraints.txt.
lock:
	@rm -rf .venv-lock && python3.11 -m venv .venv-lock
	@.venv-lock/bin/pip install -q --upgrade pip setuptools wheel && .venv-lock/bin/pip install -q -r requirements.in
	@(echo "# Exact versions of every Python package in .venv (pip freeze --all). Regenerate with: make lock"; \
	  .venv-lock/bin/pip freeze --all --exclude-editable | grep -v '^delivery') > constraints.txt
	@rm -rf .venv-lock && echo "constraints.txt updated; run make setup"

clean:
	rm -rf ros_ws/build ros_ws/install ros_ws/log .venv/.stamps
