"""`keeper optimize` from flags and from a scenario, and the bad inputs of `optimize` and `drill --risk`, as an operator
runs them (`python -m keeper` in a subprocess): one `keeper:` line, exit 2, no traceback."""

from __future__ import annotations

import itertools
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from keeper.cli.main import build_parser
from keeper.cli.optimize_flags import inputs_from
from keeper.drills.scenario import load_scenario
from keeper.engine.settings import Settings
from keeper.optimizer import inputs as opt
from keeper.optimizer.stress import SECONDS_PER_YEAR


def keeper(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "keeper", *args], capture_output=True, text=True, timeout=300, cwd=cwd, check=False
    )


def optimize_json(*args: str) -> dict[str, object]:
    done = keeper("optimize", "--paths", "20000", "--json", *args)
    assert done.returncode == 0, done.stderr
    doc: dict[str, object] = json.loads(done.stdout)
    return doc


def test_flags_and_settings_fill_one_inputs_object() -> None:
    """The command's flags and the keeper's settings default to the same inputs, stated once in
    keeper/optimizer/inputs.py; the paths differ on purpose (the job runs every interval)."""
    assert inputs_from(build_parser().parse_args(["optimize"])) == opt.OptimizerInputs()
    job = Settings.model_construct().optimizer_inputs()
    assert job == opt.OptimizerInputs(paths=opt.JOB_PATHS, delay_s=opt.DELAY_S)


def test_flags_give_one_json_object() -> None:
    doc = optimize_json("--sigma", "0.8", "--jump-intensity", "20", "--jump-mean", "-0.06", "--jump-vol", "0.04")
    assert {"lt", "ltv", "p_bad_debt", "expected_shortfall", "paths"} <= doc.keys()
    lt, ltv = float(doc["lt"]), float(doc["ltv"])  # type: ignore[arg-type]
    assert 0 < ltv < lt
    assert lt * 1.10 < 1  # the engine's cap with the default 10 % max discount
    assert doc["paths"] == 20000
    assert float(doc["p_bad_debt"]) <= 0.01  # type: ignore[arg-type]
    market = doc["inputs"]["market"]  # type: ignore[index]
    assert market == {"sigma": 0.8, "jump_intensity": 20.0, "jump_mean": -0.06, "jump_vol": 0.04}


def test_zero_flags_turn_effects_off() -> None:
    doc = optimize_json(
        "--sigma", "0.8", "--jump-intensity", "0", "--oracle-deviation", "0", "--heartbeat-s", "0",
        "--slippage-depth-usd", "0",
    )  # fmt: skip
    inputs = doc["inputs"]
    assert inputs["market"]["jump_intensity"] == 0  # type: ignore[index]
    assert inputs["oracle"] == {"deviation": 0.0, "heartbeat_s": 0.0}  # type: ignore[index]
    assert inputs["liquidation"]["slippage_depth_usd"] == 0  # type: ignore[index]


def test_from_scenario_uses_the_scenario_moves_as_jumps() -> None:
    doc = optimize_json("--sigma", "0.8", "--from-scenario", "black-thursday:weth")
    sc = load_scenario("black-thursday")
    path = sc.price_path("WETH")
    moves = [math.log(b / a) for (_, a), (_, b) in itertools.pairwise(path) if b != a]
    market = doc["inputs"]["market"]  # type: ignore[index]
    assert market["jump_intensity"] == pytest.approx(len(moves) / sc.duration_s * SECONDS_PER_YEAR)
    assert market["jump_mean"] == pytest.approx(sum(moves) / len(moves))
    assert doc["inputs"]["horizon_s"] == sc.duration_s  # type: ignore[index]
    assert doc["inputs"]["liquidation"]["delay_s"] == sc.block_time_s  # type: ignore[index]
    # A flag still wins over the scenario.
    over = optimize_json("--sigma", "0.8", "--from-scenario", "black-thursday:WETH", "--delay-s", "60")
    assert over["inputs"]["liquidation"]["delay_s"] == 60  # type: ignore[index]


def test_calm_market_sets_the_buffer_only() -> None:
    base = ("--sigma", "0.8", "--from-scenario", "black-thursday:WETH")
    stressed = optimize_json(*base)
    calm = optimize_json(*base, "--calm-sigma", "0.8")
    assert calm["lt"] == stressed["lt"]
    assert float(calm["ltv"]) > float(stressed["ltv"])  # type: ignore[arg-type]
    assert calm["inputs"]["buffer_market"]["jump_intensity"] == 0  # type: ignore[index]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--paths", "5000"], "give the volatility with --sigma"),
        (["--sigma", "0.8", "--paths", "10"], "--paths must be at least 1000"),
        (["--sigma", "0.8", "--target-prob", "2"], "target bad-debt probability must be in (0, 1)"),
        (["--sigma", "0.8", "--oracle-deviation", "1.5"], "oracle deviation must be in [0, 1)"),
        (["--sigma", "0.8", "--from-scenario", "black-thursday:LINK"], "black-thursday has no collateral 'LINK'"),
        (["--sigma", "0.8", "--from-scenario", "black-thursday"], "expected NAME:SYMBOL"),
        (["--sigma", "0.8", "--from-scenario", "no-such-crash:WETH"], "no-such-crash"),
        (["--sigma", "0.8", "--apply"], "--apply needs --asset"),
        (["--sigma", "0.8", "--dry-run"], "--dry-run needs --asset"),
        (["--sigma", "0.8", "--apply", "--dry-run"], "--apply and --dry-run exclude each other"),
        (["--sigma", "0.8", "--min-rounds", "2"], "--min-rounds 2: at least 3 rounds"),
        (["--sigma", "0.8", "--plot", "/no/such/folder/x.png"], "does not exist"),
        (["--sigma", "0.8", "--calm-sigma", "-1"], "calm market: sigma must be >= 0"),
    ],
)
def test_bad_optimize_input(args: list[str], message: str) -> None:
    done = keeper("optimize", *args)
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("keeper: "), done.stderr
    assert message in done.stderr
    assert "Traceback" not in done.stderr
    assert done.stdout == ""


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--risk", "WETH=0.70/0.60"], "0 < LTV < LT < 1"),
        (["--risk", "WETH=high"], "expected SYMBOL=LTV/LT"),
        (["--risk", "WETH=0.6/0.67", "--rpc-url", "http://127.0.0.1:1"], "cannot change --rpc-url"),
    ],
)
def test_bad_drill_risk(args: list[str], message: str, tmp_path: Path) -> None:
    done = keeper("drill", "black-thursday", "--quiet", "--out", str(tmp_path / "out"), *args)
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("keeper: ")
    assert message in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "out").exists()  # nothing half-written
