from conftest import WAD, open_position


def test_borrow_price_drop_liquidate(system, alice, liquidator):
    eng = system.engine
    # 1 WETH at $2000, ltv 0.8 -> borrow 1500 USDC
    open_position(system, alice, 0, {"WETH": 10**18}, borrow=1500 * 10**6)
    h = eng.accountHealth(alice, 0)
    assert h.debt == 1500 * 10**6
    assert h.health == 2000 * 85 * WAD // 100 // 1500  # 1700/1500
    system.set_price("WETH", 1700)
    h = eng.accountHealth(alice, 0)
    assert h.health < WAD
    q = eng.previewLiquidation(alice, 0, system.weth, 2**256 - 1)
    assert q.repaid > 0
    assert q.seized > 0
    # Interest accrues between the preview and the liquidation, so fund a little more than quoted.
    system.usdc.mint(liquidator, 2 * q.repaid, sender=liquidator)
    system.usdc.approve(eng, 2**256 - 1, sender=liquidator)
    receipt = eng.liquidate(alice, 0, system.weth, 2**256 - 1, 0, liquidator, b"", sender=liquidator)
    [event] = receipt.decode_logs(eng.Liquidated)
    assert system.weth.balanceOf(liquidator) == event.seized
    assert q.repaid <= event.repaid <= q.repaid + q.repaid // 1000
