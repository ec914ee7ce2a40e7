from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.__main__ import check  # noqa: E402


def test_malformed_result_is_refused() -> None:
    with pytest.raises(ValueError, match="lacks"):
        check({"name": "x", "metrics": {"m": {"value": 1, "unit": "ms"}}}, "bench_x")
    with pytest.raises(ValueError, match="must return"):
        check({"metrics": {}}, "bench_x")


@pytest.mark.parametrize("path", sorted((ROOT / "bench").glob("bench_*.py")), ids=lambda p: p.stem)
def test_every_benchmark_module_has_run(path: Path) -> None:
    module = importlib.import_module(f"bench.{path.stem}")
    assert callable(module.run)
