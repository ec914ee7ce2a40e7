#!/usr/bin/env bash
# One-command set-up shared by `make sim` and `make test` (and run by CI on a fresh clone).
#
# Idempotent: each step keeps a stamp (a hash of its inputs) under .venv/.stamps and is
# skipped when nothing it depends on changed, so a second run takes a few seconds.
#   1. Debian packages listed in tools/apt-packages.txt, installed when missing
#   2. .venv on Python 3.11 with the pinned versions of constraints.txt
#   3. repair of the ROS wheels' CMake files (they hard-code the wheel builder's paths)
#   4. colcon build of ros_ws: delivery_interfaces and this package (delivery_robot)
#   5. a check that rclpy, our interfaces and our package import together
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
STAMPS="$VENV/.stamps"
PYTHON_WANTED="3.11"
CURRENT_STEP="start"
FIX_HINT=""

say() { printf '\033[1m[setup]\033[0m %s\n' "$*"; }
step() { CURRENT_STEP="$1"; FIX_HINT="$2"; say "$1"; }
on_error() {
  local code=$?
  printf '\n\033[1;31m[setup] FAILED at step: %s (exit %s)\033[0m\n' "$CURRENT_STEP" "$code" >&2
  [ -n "$FIX_HINT" ] && printf '[setup] what to do: %s\n' "$FIX_HINT" >&2
  exit "$code"
}
trap on_error ERR

hash_of() { cat "$@" 2>/dev/null | sha256sum | cut -c1-16; }
stamp_ok() { [ -f "$STAMPS/$1" ] && [ "$(cat "$STAMPS/$1")" = "$2" ]; }
stamp_set() { mkdir -p "$STAMPS"; printf '%s' "$2" > "$STAMPS/$1"; }

start_time=$(date +%s)

# 1. Debian packages -----------------------------------------------------------------------
step "1/5 Debian packages (tools/apt-packages.txt)" \
  "install them by hand: sudo apt-get install -y \$(sed 's/#.*//' tools/apt-packages.txt)"
mapfile -t wanted < <(sed -e 's/#.*//' -e 's/[[:space:]]//g' "$ROOT/tools/apt-packages.txt" | grep -v '^$')
missing=()
for pkg in "${wanted[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  say "  installing: ${missing[*]}"
  if [ "$(id -u)" -eq 0 ]; then SUDO=""; elif sudo -n true 2>/dev/null; then SUDO="sudo -n"; else
    FIX_HINT="run as root or with passwordless sudo, or install first: sudo apt-get install -y ${missing[*]}"
    false
  fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  say "  all ${#wanted[@]} present"
fi

# 2. Python virtual environment --------------------------------------------------------------
step "2/5 Python $PYTHON_WANTED virtual environment (.venv, pinned by constraints.txt)" \
  "check network access to PyPI; to start over: rm -rf .venv && make setup"
PY=""
for candidate in python3.11 python3; do
  if command -v "$candidate" >/dev/null && \
     [ "$("$candidate" -c 'import sys; print("%d.%d" % sys.version_info[:2])')" = "$PYTHON_WANTED" ]; then
    PY="$(command -v "$candidate")"; break
  fi
done
if [ -z "$PY" ]; then
  FIX_HINT="install Python $PYTHON_WANTED (the ROS 2 Jazzy wheels are cp311 only)"
  false
fi
if [ ! -x "$VENV/bin/python" ]; then
  say "  creating .venv with $PY"
  "$PY" -m venv "$VENV"
fi
req_hash=$(hash_of "$ROOT/requirements.in" "$ROOT/constraints.txt")
if stamp_ok requirements "$req_hash"; then
  say "  up to date"
else
  say "  installing pinned packages (first run: about 2 minutes)"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
    -r "$ROOT/requirements.in" -c "$ROOT/constraints.txt"
  rm -f "$STAMPS/cmake-paths" "$STAMPS/colcon"
  stamp_set requirements "$req_hash"
fi

# 3. CMake paths in the ROS wheels ---------------------------------------------------------
step "3/5 repair the ROS wheels' CMake paths" \
  "rm -rf .venv and run make setup again (the venv may be half-installed)"
if stamp_ok cmake-paths "$req_hash"; then
  say "  up to date"
else
  py_include=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
  np_include=$("$VENV/bin/python" -c 'import numpy; print(numpy.get_include())')
  files=$(grep -rlE '/opt/python/cp311-cp311/(include|lib)' "$VENV/share" || true)
  if [ -n "$files" ]; then
    echo "$files" | xargs sed -i \
      -e "s#/opt/python/cp311-cp311/lib/python3.11/site-packages/numpy/_core/include#$np_include#g" \
      -e "s#/opt/python/cp311-cp311/include/python3.11#$py_include#g"
  fi
  say "  rewrote $(echo -n "$files" | grep -c . || true) files"
  stamp_set cmake-paths "$req_hash"
fi

# 4. colcon build ------------------------------------------------------------------------------
step "4/5 colcon build of ros_ws (delivery_interfaces, delivery_robot)" \
  "read ros_ws/log/latest_build/*/stderr.log; for a clean rebuild: rm -rf ros_ws/build ros_ws/install && make setup"
# Inputs of the build: the interface package, the package manifest and setup files, and the
# *names* of the installed share/ files (their contents are symlinked, so edits need no rebuild).
build_hash=$( { cd "$ROOT"; cat ros_ws/src/delivery_interfaces/CMakeLists.txt \
    ros_ws/src/delivery_interfaces/package.xml ros_ws/src/delivery_interfaces/*/* \
    package.xml setup.py setup.cfg; echo "$req_hash";
    find launch config gazebo_worlds urdf resource -type f 2>/dev/null | sort || true; } \
    | sha256sum | cut -c1-16)
if stamp_ok colcon "$build_hash" && [ -d "$ROOT/ros_ws/install/delivery_interfaces" ]; then
  say "  up to date"
else
  say "  building (first run: about 90 s)"
  (
    cd "$ROOT/ros_ws"
    export AMENT_PREFIX_PATH="$VENV" CMAKE_PREFIX_PATH="$VENV" PATH="$VENV/bin:$PATH"
    export VIRTUAL_ENV="$VENV"
    "$VENV/bin/colcon" --log-level error build --symlink-install \
      --event-handlers console_cohesion- console_start_end- status- summary+ \
      --cmake-args -DBUILD_TESTING=OFF -DPython3_EXECUTABLE="$VENV/bin/python"
  )
  stamp_set colcon "$build_hash"
fi

# 5. check ----------------------------------------------------------------------------------------
step "5/5 check that rclpy, delivery_interfaces and delivery_robot import" \
  "rm -rf ros_ws/build ros_ws/install && make setup"
"$ROOT/tools/ros_env" python -c \
  "import rclpy, delivery_interfaces.msg, delivery_interfaces.srv, delivery_interfaces.action, delivery_robot"
say "ready in $(( $(date +%s) - start_time )) s"
