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
    system.usdc.mint(liquidator, q.repaid, sender=liquidator)
    system.usdc.approve(eng, q.repaid, sender=liquidator)
    eng.liquidate(alice, 0, system.weth, 2**256 - 1, 0, liquidator, b"", sender=liquidator)
    assert system.weth.balanceOf(liquidator) == q.seized
