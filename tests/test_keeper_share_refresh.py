"""The keeper keeps ERC-4626 collateral's price cap tight: once a day it moves each listed share's rate snapshot
(`OracleRouter.refreshShareRate`), which the router lets anyone do at most daily. A real keeper against a real
Anvil; the snapshot is read back from the router."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from conftest import MAX_UINT, WAD
from test_keeper_e2e import _keeper

DAY = 86400


def test_the_keeper_refreshes_a_listed_shares_snapshot_daily(
    system: Any, chain: Any, project: Any, admin: Any, alice: Any, tmp_path: Path
) -> None:
    share = admin.deploy(project.MockERC4626, system.weth, "Staked WETH", "sWETH")
    system.weth.mint(alice, 100 * WAD, sender=alice)
    system.weth.approve(share, MAX_UINT, sender=alice)
    share.deposit(100 * WAD, alice, sender=alice)
    system.router.setShareAsset(share, system.weth, 15 * WAD // 100, sender=admin)
    system.engine.listAsset(share, 70 * WAD // 100, 75 * WAD // 100, WAD // 10, 10**6 * WAD, sender=admin)
    taken = int(system.router.shareConfig(share).snapshotTime)
    keeper = _keeper(system, chain, tmp_path)

    keeper.housekeeping()  # too early: the snapshot is fresh
    chain.mine()
    assert int(system.router.shareConfig(share).snapshotTime) == taken

    chain.pending_timestamp = taken + DAY + 60
    system.set_price("WETH", 2000)  # the refresh prices nothing, but keep the market fresh
    system.weth.mint(alice, WAD, sender=alice)
    system.weth.transfer(share, WAD, sender=alice)  # a day of yield: 1 %
    keeper.housekeeping()
    chain.mine()
    cfg = system.router.shareConfig(share)
    assert int(cfg.snapshotTime) > taken + DAY
    rate = int(share.convertToAssets(WAD))
    assert int(cfg.snapshotRate) <= rate  # min(rate, cap): the day's allowed growth is below the 1 % yield
    refreshed = int(cfg.snapshotTime)

    keeper.housekeeping()  # once a day only: nothing more is sent
    chain.mine()
    assert int(system.router.shareConfig(share).snapshotTime) == refreshed
    sent = [i for i in keeper.journal.intents() if i.intent_key.startswith("refresh-share:")]
    assert len(sent) == 1
