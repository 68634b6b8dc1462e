"""The prune-rate schedule and the update-iteration rule shared by SViTE and S²ViTE."""
from __future__ import annotations

import math

import pytest

from svite_search.engine.sparse import PruneSchedule, count_updates, prune_rate, resolve_update_interval
from svite_search.errors import ConfigError


def test_cosine_anneals_from_dr0_to_dr_min_over_all_steps() -> None:
    assert prune_rate(0, 1000, 0.5, 0.005, "cosine") == pytest.approx(0.5)
    assert prune_rate(500, 1000, 0.5, 0.005, "cosine") == pytest.approx(0.2525)
    assert prune_rate(250, 1000, 0.5, 0.005, "cosine") == pytest.approx(0.005 + 0.495 * (1 + math.cos(math.pi / 4)) / 2)
    assert prune_rate(1000, 1000, 0.5, 0.005, "cosine") == pytest.approx(0.005)
    assert prune_rate(5000, 1000, 0.5, 0.005, "cosine") == pytest.approx(0.005)  # clamps past the end


def test_linear_and_constant() -> None:
    assert prune_rate(250, 1000, 0.4, 0.0, "linear") == pytest.approx(0.3)
    assert prune_rate(1000, 1000, 0.4, 0.1, "linear") == pytest.approx(0.1)
    assert {prune_rate(t, 1000, 0.3, 0.0, "constant") for t in (0, 400, 1000)} == {0.3}
    with pytest.raises(ConfigError, match="decay"):
        prune_rate(1, 10, 0.5, 0.0, "step")


def test_updates_run_on_multiples_of_the_interval_before_t_end() -> None:
    schedule = PruneSchedule(total_steps=1000, update_interval=100, t_end=0.8)
    steps = [t for t in range(0, 1001) if schedule.is_update_step(t)]
    assert steps == [100, 200, 300, 400, 500, 600, 700]  # 800 is not < 0.8 * 1000
    assert schedule.num_updates == 7 == count_updates(1000, 0.8, 100)
    assert not schedule.is_update_step(0)
    full = PruneSchedule(total_steps=10, update_interval=5, t_end=1.0)
    assert [t for t in range(11) if full.is_update_step(t)] == [5]


@pytest.mark.parametrize("total_steps", [100, 101, 999, 1500, 15001])
@pytest.mark.parametrize("updates", [1, 4, 10, 80])
def test_updates_per_run_gives_the_nearest_possible_count(total_steps: int, updates: int) -> None:
    if 0.8 * total_steps <= updates:  # steps 1 .. 0.8·T − 1 cannot hold that many updates
        with pytest.raises(ConfigError, match="do not fit"):
            resolve_update_interval(total_steps, 0.8, updates_per_run=updates)
        return
    interval = resolve_update_interval(total_steps, 0.8, updates_per_run=updates)
    achievable = {count_updates(total_steps, 0.8, dt) for dt in range(1, total_steps + 1)}
    best = min(abs(c - updates) for c in achievable)
    assert abs(count_updates(total_steps, 0.8, interval) - updates) == best
    if updates in achievable:
        assert count_updates(total_steps, 0.8, interval) == updates


def test_paper_cadence_deit_small() -> None:
    # 600 epochs of 2502 iterations (batch 512): about 80 updates, ΔT close to the paper's 15000
    total = 600 * 2502
    interval = resolve_update_interval(total, 0.8)
    assert count_updates(total, 0.8, interval) == 80
    assert 14000 < interval < 16000


def test_update_interval_validation() -> None:
    assert resolve_update_interval(100, 0.8, update_interval=7) == 7
    with pytest.raises(ConfigError, match="not both"):
        resolve_update_interval(100, 0.8, update_interval=7, updates_per_run=3)
    with pytest.raises(ConfigError, match="updates_per_run"):
        resolve_update_interval(10, 0.8, updates_per_run=20)
    with pytest.raises(ConfigError, match="update_interval"):
        PruneSchedule(total_steps=10, update_interval=0)
    with pytest.raises(ConfigError, match="prune_rate_min"):
        PruneSchedule(total_steps=10, update_interval=1, initial=0.1, minimum=0.2)
