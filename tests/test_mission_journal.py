"""The robot's mission journal: durable checkpoints, the newest unfinished mission after a
crash (a writer process killed right after `save` returned), pruning, and bad files."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

import pytest

from delivery_robot.mission_journal import JournalError, MissionJournal
from delivery_robot.mission_legs import Leg, MissionKind
from delivery_robot.mission_runner import (
    Checkpoint,
    MissionRunner,
    MissionSpec,
    NavigationEnded,
    OrderTask,
    Outcome,
    RunnerConfig,
)
from delivery_robot.order_lifecycle import OrderState
from delivery_robot.route_planner import NavCode

SPEC = MissionSpec("m1", MissionKind.DELIVERY,
                   (OrderTask("o1", "shop_bakery", "house_n1", OrderState.ASSIGNED),),
                   "shop_bakery", "house_n1", "depot", 100.0, 60.0)


def started(spec: MissionSpec = SPEC) -> MissionRunner:
    runner, _ = MissionRunner.start(spec, RunnerConfig(), 0.0)
    return runner


def test_save_then_reopen_finds_the_unfinished_mission(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "journal.db"
    journal = MissionJournal(path)
    runner = started()
    journal.save(runner.checkpoint, 0.0, "started")
    runner.handle(NavigationEnded(1, NavCode.SUCCEEDED), 10.0)
    journal.save(runner.checkpoint, 10.0, "reached shop_bakery")
    journal.close()

    again = MissionJournal(path)
    (mission_id, text), = again.unfinished()
    assert mission_id == "m1"
    cp = Checkpoint.from_json(text)
    assert cp == runner.checkpoint
    assert cp.stages[cp.index].leg is Leg.AWAITING_LOAD
    assert [(line.leg, line.note) for line in again.lines("m1")] == [
        (int(Leg.TO_PICKUP), "started"), (int(Leg.AWAITING_LOAD), "reached shop_bakery")]
    assert again.checkpoint("m1") == cp
    assert again.checkpoint("nope") is None
    # Finished: no longer offered for resuming; a re-sent mission with that id re-opens it.
    again.save(replace(cp, outcome=Outcome.SUCCEEDED, message="done"), 20.0, "done")
    assert again.unfinished() == []
    again.save(cp, 30.0, "re-sent")
    assert [m for m, _ in again.unfinished()] == ["m1"]
    again.close()


def test_a_process_killed_after_save_leaves_the_checkpoint_durable(tmp_path: Path) -> None:
    """SIGKILL right after save() returned: no close, no clean shutdown; the row is there."""
    path = tmp_path / "journal.db"
    cp = started().checkpoint
    script = textwrap.dedent(f"""
        import os, signal, sys
        from delivery_robot.mission_journal import MissionJournal
        from delivery_robot.mission_runner import Checkpoint
        journal = MissionJournal({str(path)!r})
        journal.save(Checkpoint.from_json(sys.stdin.read()), 1.0, "before the kill")
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    proc = subprocess.run([sys.executable, "-c", script], input=cp.to_json(), text=True,
                          capture_output=True, timeout=30, env=os.environ.copy())
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    journal = MissionJournal(path)
    assert [(m, Checkpoint.from_json(t)) for m, t in journal.unfinished()] == [("m1", cp)]
    journal.close()


def test_newest_unfinished_first_and_abandon(tmp_path: Path) -> None:
    journal = MissionJournal(tmp_path / "j.db")
    journal.save(started(replace(SPEC, mission_id="old")).checkpoint, 1.0)
    journal.save(started(replace(SPEC, mission_id="new")).checkpoint, 2.0)
    assert [m for m, _ in journal.unfinished()] == ["new", "old"]
    journal.abandon("old", 3.0, "unreadable")
    assert [m for m, _ in journal.unfinished()] == ["new"]
    assert journal.lines("old")[-1].note == "abandoned: unreadable"
    journal.close()


def test_only_the_newest_finished_missions_are_kept(tmp_path: Path) -> None:
    journal = MissionJournal(tmp_path / "j.db", keep_finished=2)
    for i in range(4):
        cp = started(replace(SPEC, mission_id=f"m{i}")).checkpoint
        journal.save(replace(cp, outcome=Outcome.SUCCEEDED), float(i))
    kept = [m for m in (f"m{i}" for i in range(4)) if journal.checkpoint(m) is not None]
    assert kept == ["m2", "m3"]
    assert journal.lines("m0") == []
    journal.close()


def test_a_file_that_is_not_a_journal_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.db"
    bad.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(JournalError, match="bad.db"):
        MissionJournal(bad)
