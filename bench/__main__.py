"""`make bench`: run every bench/bench_*.py and write one JSON file per benchmark.

Each module has `run() -> {"name": str, "metrics": {key: {"value", "unit", "baseline",
"target"}}}`; the baseline is measured in the same run. Results go to bench/results/<name>.json
with the machine they were measured on. `python -m bench NAME...` runs a subset.
"""

from __future__ import annotations

import importlib
import json
import os
import platform
import sys
import time
import traceback
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
RESULTS = BENCH_DIR / "results"
METRIC_FIELDS = {"value", "unit", "baseline", "target"}


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cores = os.cpu_count()
    return f"{platform.node()} / {cpu} / {cores} cores / Python {platform.python_version()}"


def check(result: dict[str, Any], module: str) -> None:
    if not isinstance(result.get("name"), str) or not isinstance(result.get("metrics"), dict):
        raise ValueError(f"{module}.run() must return {{'name': str, 'metrics': dict}}")
    for key, metric in result["metrics"].items():
        missing = METRIC_FIELDS - set(metric)
        if missing:
            raise ValueError(f"{module}: metric {key} lacks {sorted(missing)}")
        if not isinstance(metric["target"], str):
            raise ValueError(f"{module}: metric {key}: target must be a string like '<= 50'")


def main(argv: list[str]) -> int:
    sys.path.insert(0, str(BENCH_DIR.parent))
    modules = sorted(p.stem for p in BENCH_DIR.glob("bench_*.py"))
    if argv:
        unknown = [name for name in argv if f"bench_{name}" not in modules and name not in modules]
        if unknown:
            print(f"unknown benchmarks {unknown}; known: {modules}", file=sys.stderr)
            return 2
        modules = [m for m in modules if m in argv or m.removeprefix("bench_") in argv]
    RESULTS.mkdir(exist_ok=True)
    host, failures = machine(), []
    print(f"[bench] {len(modules)} benchmarks on {host}")
    for index, module in enumerate(modules, 1):
        print(f"[bench] {index}/{len(modules)} {module} ...", flush=True)
        started = time.monotonic()
        try:
            result = importlib.import_module(f"bench.{module}").run()
            check(result, module)
        except Exception:  # one broken benchmark must not hide the others' numbers
            traceback.print_exc()
            failures.append(module)
            continue
        result = {"name": result["name"], "machine": host, "metrics": result["metrics"]}
        path = RESULTS / f"{result['name']}.json"
        path.write_text(json.dumps(result, indent=2) + "\n")
        for key, metric in result["metrics"].items():
            print(f"    {key:<40} {metric['value']:>12.4g} {metric['unit']:<6} "
                  f"baseline {metric['baseline'] if metric['baseline'] is not None else '-'!s:>10}"
                  f"  target {metric['target']}")
        print(f"    -> {path.relative_to(BENCH_DIR.parent)} ({time.monotonic() - started:.1f} s)")
    if failures:
        print(f"[bench] FAILED: {failures}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
