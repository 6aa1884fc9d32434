"""Fork mode against a deployment whose WETH feed is not our mock: the drill must install the mock aggregator's code
at the real feed address, clear its storage meaning, keep the decimals the router recorded, and drive prices there,
while the origin node is left untouched."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import ROOT

from keeper.chain.node import AnvilProcess
from keeper.drills import report
from keeper.drills.deploy import deploy_embedded
from keeper.drills.record import DrillOptions
from keeper.drills.run import run_drill
from keeper.drills.scenario import load_scenario

SCENARIO = """
name = "takeover"
description = "WETH -25 % in two steps on a fork whose WETH feed is foreign code"
seed = 11
block_time_s = 12

[accounts]
count = 12
health = [1.02, 1.4]
assets = ["WETH"]

[[asset]]
symbol = "WETH"
price = 2000.0
[[asset]]
symbol = "USDC"
price = 1.0
quote = true

[[step]]
at = 60
WETH = 1700.0
[[step]]
at = 120
WETH = 1500.0
"""


def test_fork_takes_over_a_foreign_feed_and_leaves_the_origin_alone(tmp_path: Path) -> None:
    path = tmp_path / "takeover.toml"
    path.write_text(SCENARIO)
    scenario = load_scenario(str(path))
    with AnvilProcess(["--chain-id", "31337"]) as origin:
        (tmp_path / "origin").mkdir()
        record = deploy_embedded(scenario, origin.url, tmp_path / "origin", ROOT)
        dep = json.loads(record.read_text())
        weth_feed = next(a["feed"] for a in dep["assets"] if a["symbol"] == "WETH")
        foreign = origin.rpc.code(dep["contracts"]["Lens"]["address"])  # any code that is not an aggregator
        origin.rpc.set_code(weth_feed, foreign)
        origin.rpc.set_storage(weth_feed, 0, 2**256 - 1)  # garbage where the mock keeps decimals and its switches
        head = origin.rpc.block_number()

        rec = run_drill(DrillOptions(scenario=scenario, out=tmp_path / "drill", fork_url=origin.url, deployment=record))

        assert origin.rpc.block_number() == head
        assert origin.rpc.code(weth_feed) == foreign
    doc = report.build(rec)
    report.validate(doc)
    assert doc["drill"]["target"] == "fork"
    # The oracle answered the scenario's prices at the feed's 8 decimals, read back through the router.
    final = rec.blocks[-1].oracle["WETH"]
    assert final is not None
    assert abs(final - 1500.0) < 1e-6
    assert rec.blocks[0].oracle["WETH"] == 2000.0
    weth = [x for x in rec.liquidations if x.collateral == "WETH"]
    assert weth, "no liquidation: prices were not driven through the taken-over feed"
    assert doc["summary"]["missed_liquidations"] == 0
    assert doc["summary"]["healthy_liquidations"] == 0
