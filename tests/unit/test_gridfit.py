"""The risk keeper's step toward a calibrated grid (keeper.optimizer.gridfit.plan_step), against the engine's rules
for `updateGrid` as documented on IScenarioGrid: each multiplier within its bounds and at most `maxStep` from the
one in force, no sooner than `minInterval`, and no asset with a scenario governance left without bounds.
(tests/test_optimize_grid.py sends such steps to the engine on Anvil.)"""

from __future__ import annotations

from keeper.optimizer.gridfit import GridChoice, GridStep, OnchainGrid, plan_step


def choice(columns: dict[str, list[int]]) -> GridChoice:
    return GridChoice([{}] * len(next(iter(columns.values()))), columns, 1.0, "b", (), 1000, 86400.0, 0.01)


def onchain(effective: dict[str, list[int]], **kw: object) -> OnchainGrid:
    n = len(next(iter(effective.values())))
    base: dict[str, object] = {
        "count": n,
        "initial_scale": 10**18,
        "ramp_end": 0,
        "last_update": 0,
        "max_step": 20_000,
        "min_interval": 3600,
        "ramp_duration": 86400,
        "effective": effective,
        "lower": {a: [100] * n for a in effective},
        "upper": {a: [100_000_000] * n for a in effective},
    }
    base.update(kw)
    return OnchainGrid(**base)  # type: ignore[arg-type]


def test_each_multiplier_moves_at_most_max_step_toward_its_clamped_target() -> None:
    on = onchain(
        {"A": [800_000, 900_000], "U": [1_000_000, 1_000_000]}, upper={"A": [850_000, 10**8], "U": [10**8] * 2}
    )
    step = plan_step(choice({"A": [900_000, 890_000], "U": [1_000_000, 1_005_000]}), on, now=10_000)
    assert isinstance(step, GridStep)
    # A/0 wants 0.9 but its bound is 0.85: +20,000 now (the step); A/1 wants -10,000: all of it; U/1 +5,000.
    assert step.columns == {"A": [820_000, 890_000], "U": [1_000_000, 1_005_000]}
    assert step.largest_move == 20_000
    assert step.clamped == 1  # A/0 stops short of its target


def test_an_asset_with_an_unbounded_scenario_is_left_out() -> None:
    on = onchain({"A": [800_000, 900_000], "B": [700_000, 700_000]}, lower={"A": [100, 100], "B": [0, 100]},
                 upper={"A": [10**8, 10**8], "B": [0, 10**8]})  # fmt: skip
    step = plan_step(choice({"A": [850_000, 900_000], "B": [600_000, 650_000]}), on, now=10_000)
    assert isinstance(step, GridStep)
    assert set(step.columns) == {"A"}  # the engine would refuse any column for B (GridOutsideBounds)
    assert step.columns["A"] == [820_000, 900_000]
    assert step.clamped == 3  # A/0 one step short, and both of B's


def test_why_nothing_is_due() -> None:
    cols = {"A": [800_000], "U": [1_000_000]}
    assert "no grid" in str(plan_step(choice(cols), onchain(cols, count=0), now=10_000))
    assert "cannot change the size" in str(plan_step(choice({"A": [1, 2], "U": [3, 4]}), onchain(cols), now=10_000))
    assert "setGridBounds" in str(plan_step(choice(cols), onchain(cols, max_step=0), now=10_000))
    assert "too soon" in str(plan_step(choice(cols), onchain(cols, last_update=9_000), now=10_000))
    assert "still ramping" in str(plan_step(choice(cols), onchain(cols, ramp_end=10_001), now=10_000))
    near = {"A": [800_500], "U": [1_000_000]}
    assert "within 0.1%" in str(plan_step(choice(near), onchain(cols), now=10_000))
