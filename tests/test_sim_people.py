"""Simulated shop owners and recipients: what they do, when, and how they react to answers."""

from __future__ import annotations

import pytest

from delivery_robot.order_lifecycle import OrderState
from delivery_robot.sim_people import (
    ActKind,
    Method,
    PeopleConfig,
    SimPeople,
    plan_recipient,
    shop_delay,
)

PIN = "123456"
TOKEN = "dr1.token"


def people(**config: float) -> SimPeople:
    crowd = SimPeople(PeopleConfig(**config), seed=5)  # type: ignore[arg-type]
    crowd.order_submitted("ord_1", "key-1", "bakery", PIN, TOKEN)
    return crowd


def run_until_idle(crowd: SimPeople, now: float, answers: dict[ActKind, list[tuple[bool, str]]],
                   limit: float = 3600.0) -> list[tuple[float, ActKind, str]]:
    """Step time to each due act, answer it from `answers` (default: ok), record the acts."""
    done: list[tuple[float, ActKind, str]] = []
    while crowd.open_errands and now < limit:
        due = crowd.next_due()
        assert due is not None
        now = max(now, due)
        for act in crowd.due(now):
            done.append((now, act.kind, act.credential))
            queue = answers.get(act.kind)
            ok, code = queue.pop(0) if queue else (True, "")
            crowd.answer(act, ok, code, now)
    return done


def test_shop_owner_comes_after_the_delay_loads_closes_and_confirms() -> None:
    crowd = people(load_delay_s=40.0, load_time_s=10.0)
    crowd.on_status("ord_1", OrderState.AWAITING_LOAD, "robot2", now=100.0)
    assert crowd.due(100.0) == []
    delay = shop_delay(crowd.config, crowd.seed, "key-1")
    assert 20.0 <= delay <= 60.0
    acts = run_until_idle(crowd, 100.0, {})
    assert [kind for _, kind, _ in acts] == [ActKind.OPEN_DOOR, ActKind.LOAD,
                                            ActKind.CLOSE_DOOR, ActKind.CONFIRM_LOADED]
    assert acts[0][0] == pytest.approx(100.0 + delay)
    assert acts[1][0] == pytest.approx(acts[0][0] + 10.0)
    assert crowd.stats.loads == 1


def test_the_acts_name_the_robot_order_and_shop() -> None:
    crowd = people(load_delay_s=0.0)
    crowd.on_status("ord_1", OrderState.AWAITING_LOAD, "robot2", now=0.0)
    (act,) = crowd.due(0.0)
    assert (act.kind, act.robot_id, act.order_id, act.shop_id) == (
        ActKind.OPEN_DOOR, "robot2", "ord_1", "bakery")


def test_a_locked_door_is_tried_again_until_it_opens() -> None:
    crowd = people(load_delay_s=0.0, retry_s=2.0)
    crowd.on_status("ord_1", OrderState.AWAITING_LOAD, "robot1", now=0.0)
    refused = [(False, "open door refused: the compartment is locked")] * 3
    acts = run_until_idle(crowd, 0.0, {ActKind.OPEN_DOOR: refused})
    opens = [t for t, kind, _ in acts if kind is ActKind.OPEN_DOOR]
    assert opens == [0.0, 2.0, 4.0, 6.0]
    assert crowd.stats.refusals == 3
    assert crowd.stats.loads == 1


def test_a_step_refused_for_too_long_is_given_up() -> None:
    crowd = people(load_delay_s=0.0, retry_s=10.0, give_up_s=60.0)
    crowd.on_status("ord_1", OrderState.AWAITING_LOAD, "robot1", now=0.0)
    acts = run_until_idle(crowd, 0.0, {ActKind.OPEN_DOOR: [(False, "locked")] * 100})
    assert len(acts) == 7  # at 0, 10, ..., 60 s
    assert crowd.stats.gave_up == 1
    assert crowd.stats.loads == 0
    assert "open_door ord_1 at robot1: refused (locked)" in crowd.stats.problems[0]
    assert not crowd.open_errands


def test_recipient_shows_credential_then_takes_the_goods() -> None:
    crowd = people(handoff_delay_s=30.0, no_show_rate=0.0, wrong_pin_rate=0.0)
    crowd.on_status("ord_1", OrderState.AWAITING_RECIPIENT, "robot3", now=500.0)
    plan = plan_recipient(crowd.config, crowd.seed, "key-1", PIN)
    acts = run_until_idle(crowd, 500.0, {})
    assert [kind for _, kind, _ in acts] == [ActKind.VERIFY, ActKind.OPEN_DOOR, ActKind.UNLOAD,
                                            ActKind.CLOSE_DOOR]
    assert acts[0][0] == pytest.approx(500.0 + plan.delay_s)
    assert acts[0][2] == (TOKEN if plan.method is Method.QR else PIN)
    assert crowd.stats.handoffs == 1


def test_qr_and_pin_are_both_used_in_the_configured_share() -> None:
    config = PeopleConfig(qr_share=0.5, no_show_rate=0.0)
    methods = [plan_recipient(config, 1, f"k{i}", PIN).method for i in range(400)]
    assert 150 < methods.count(Method.QR) < 250


def test_wrong_pins_come_first_and_are_counted() -> None:
    crowd = people(handoff_delay_s=10.0, no_show_rate=0.0, wrong_pin_rate=1.0, wrong_pins=2,
                   qr_share=0.0)
    crowd.on_status("ord_1", OrderState.AWAITING_RECIPIENT, "robot1", now=0.0)
    wrong = [(False, "wrong_credential")] * 2
    acts = run_until_idle(crowd, 0.0, {ActKind.VERIFY: wrong})
    verifies = [credential for _, kind, credential in acts if kind is ActKind.VERIFY]
    assert len(verifies) == 3
    assert verifies[-1] == PIN
    assert all(guess != PIN and len(guess) == 6 and guess.isdigit() for guess in verifies[:2])
    assert crowd.stats.wrong_pins == 2
    assert crowd.stats.handoffs == 1


def test_a_locked_out_recipient_gives_up() -> None:
    crowd = people(no_show_rate=0.0, wrong_pin_rate=1.0, wrong_pins=2, qr_share=0.0)
    crowd.on_status("ord_1", OrderState.AWAITING_RECIPIENT, "robot1", now=0.0)
    run_until_idle(crowd, 0.0, {ActKind.VERIFY: [(False, "locked_out")]})
    assert crowd.stats.handoffs == 0
    assert crowd.stats.gave_up == 1


def test_a_not_yet_answer_to_the_right_credential_is_retried_but_a_no_is_not() -> None:
    crowd = people(handoff_delay_s=0.0, no_show_rate=0.0, wrong_pin_rate=0.0, qr_share=1.0)
    crowd.on_status("ord_1", OrderState.AWAITING_RECIPIENT, "robot1", now=0.0)
    acts = run_until_idle(crowd, 0.0, {ActKind.VERIFY: [(False, "not_at_dropoff")]})
    assert [kind for _, kind, _ in acts][:3] == [ActKind.VERIFY, ActKind.VERIFY,
                                                ActKind.OPEN_DOOR]
    assert crowd.stats.handoffs == 1

    again = people(handoff_delay_s=0.0, no_show_rate=0.0, wrong_pin_rate=0.0, qr_share=1.0)
    again.on_status("ord_1", OrderState.AWAITING_RECIPIENT, "robot1", now=0.0)
    acts = run_until_idle(again, 0.0, {ActKind.VERIFY: [(False, "expired")]})
    assert len(acts) == 1
    assert again.stats.gave_up == 1


def test_a_no_show_never_acts() -> None:
    crowd = people(no_show_rate=1.0)
    crowd.on_status("ord_1", OrderState.AWAITING_RECIPIENT, "robot1", now=0.0)
    assert crowd.open_errands == []
    assert crowd.due(10_000.0) == []
    assert crowd.stats.no_shows == 1


def test_a_cancelled_order_sends_the_owner_home_and_duplicates_are_ignored() -> None:
    crowd = people(load_delay_s=50.0)
    crowd.on_status("ord_1", OrderState.AWAITING_LOAD, "robot1", now=0.0)
    crowd.on_status("ord_1", OrderState.AWAITING_LOAD, "robot1", now=1.0)  # a repeat
    assert len(crowd.open_errands) == 1
    crowd.on_status("ord_1", OrderState.CANCELLED, "robot1", now=5.0)
    assert crowd.open_errands == []
    assert crowd.due(1000.0) == []
    assert crowd.stats.abandoned == 1


def test_a_redispatched_order_is_loaded_again_at_the_new_robot() -> None:
    crowd = people(load_delay_s=10.0)
    crowd.on_status("ord_1", OrderState.AWAITING_LOAD, "robot1", now=0.0)
    crowd.on_status("ord_1", OrderState.REQUESTED, "", now=5.0)  # robot1 dropped out
    crowd.on_status("ord_1", OrderState.AWAITING_LOAD, "robot2", now=50.0)
    acts = run_until_idle(crowd, 50.0, {})
    assert acts[0][1] is ActKind.OPEN_DOOR
    assert crowd.stats.loads == 1


def test_orders_of_others_and_the_same_seed() -> None:
    crowd = people()
    crowd.on_status("ord_other", OrderState.AWAITING_LOAD, "robot1", now=0.0)
    assert crowd.open_errands == []
    config = PeopleConfig()
    assert plan_recipient(config, 3, "k", PIN) == plan_recipient(config, 3, "k", PIN)
    plans = {plan_recipient(config, seed, "k", PIN).delay_s for seed in range(10)}
    assert len(plans) == 10
    assert shop_delay(config, 3, "k") == shop_delay(config, 3, "k")


@pytest.mark.parametrize(("field", "value", "match"), [
    ("no_show_rate", 1.5, "no_show_rate"), ("qr_share", -0.1, "qr_share"),
    ("load_delay_s", -1.0, "delays"), ("retry_s", 0.0, "retry_s"),
])
def test_bad_config_is_refused(field: str, value: float, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        PeopleConfig(**{field: value})  # type: ignore[arg-type]


def test_the_shop_takes_returned_goods_back_out_of_the_robot() -> None:
    crowd = people(take_back_delay_s=20.0, unload_time_s=5.0)
    crowd.on_status("ord_1", OrderState.RETURNING, "robot1", now=0.0,
                    previous=OrderState.IN_TRANSIT)
    assert crowd.open_errands == []
    crowd.on_status("ord_1", OrderState.FAILED, "robot1", now=100.0,
                    previous=OrderState.RETURNING)
    acts = run_until_idle(crowd, 100.0, {ActKind.OPEN_DOOR: [(False, "locked")]})
    assert [kind for _, kind, _ in acts] == [ActKind.OPEN_DOOR, ActKind.OPEN_DOOR,
                                            ActKind.UNLOAD, ActKind.CLOSE_DOOR]
    assert acts[0][0] == pytest.approx(120.0)
    assert crowd.stats.taken_back == 1
    # A failure before loading leaves nothing to take back.
    other = people()
    other.on_status("ord_1", OrderState.FAILED, "robot1", now=0.0,
                    previous=OrderState.AWAITING_LOAD)
    assert other.open_errands == []
