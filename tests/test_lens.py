"""Lens: batch reads of balances, debt, prices and health, exact against the engine and independent integer math,
including a broken feed that must not blind the batch."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from conftest import MAX_UINT, RAY, WAD, fund, open_position
from eth_utils import keccak
from test_oracle_router import error_data, reverts_with, view

SYMBOLS = ("WETH", "WBTC", "LINK")  # assetList() order, as listed by the deployment
DECIMALS = {"WETH": 18, "WBTC": 8, "LINK": 18}
PRICE = {"WETH": 2000 * WAD, "WBTC": 60_000 * WAD, "LINK": 15 * WAD}
LTV = {"WETH": 80 * WAD // 100, "WBTC": 75 * WAD // 100, "LINK": 60 * WAD // 100}
LT = {"WETH": 85 * WAD // 100, "WBTC": 80 * WAD // 100, "LINK": 70 * WAD // 100}
MAX_DISCOUNT = {"WETH": 10 * WAD // 100, "WBTC": 10 * WAD // 100, "LINK": 12 * WAD // 100}
USDC_DECIMALS = 6
WETH_STALENESS = 3600


def ceil_div(x: int, d: int) -> int:
    return -(-x // d)


@dataclass
class Expected:
    """What a sub-account holds, in token units, and the scaled debt it was given."""

    balances: dict[str, int]
    scaled: int = 0

    def mask(self) -> int:
        return sum(1 << i for i, s in enumerate(SYMBOLS) if self.balances.get(s, 0))

    def balance_list(self) -> list[int]:
        return [self.balances.get(s, 0) for s in SYMBOLS]

    def health(self, index: int) -> tuple[int, int, int, int, int, int]:
        """AccountHealth computed with the documented rounding: collateral down, debt up, health down."""
        values = {s: a * PRICE[s] // 10 ** DECIMALS[s] for s, a in self.balances.items() if a}
        collateral = sum(values.values())
        lt_weighted = sum(v * LT[s] // WAD for s, v in values.items())
        ltv_weighted = sum(v * LTV[s] // WAD for s, v in values.items())
        debt = ceil_div(self.scaled * index, RAY)
        debt_value = ceil_div(debt * WAD, 10**USDC_DECIMALS)  # USDC at exactly $1
        health = MAX_UINT if debt_value == 0 else lt_weighted * WAD // debt_value
        return collateral, lt_weighted, ltv_weighted, debt, debt_value, health


def health_tuple(h: Any) -> tuple[int, int, int, int, int, int]:
    return h.collateralValue, h.ltWeighted, h.ltvWeighted, h.debt, h.debtValue, h.health


def borrow(system: Any, who: Any, sub_id: int, assets: int) -> int:
    """Borrow and return the scaled debt created: assets * RAY / index, rounded up, at the borrow's index."""
    system.engine.borrow(sub_id, assets, who, sender=who)
    return ceil_div(assets * RAY, system.vault.borrowIndex())


@pytest.fixture
def book(system: Any, chain: Any, alice: Any, bob: Any, stranger: Any) -> dict[tuple[str, int], Expected]:
    """Four sub-accounts (two with debt, one collateral only, one empty), then 10 days of interest and fresh prices."""
    open_position(system, alice, 0, {"WETH": 3 * 10**18 // 2, "LINK": 100 * 10**18})
    alice_scaled = borrow(system, alice, 0, 1000 * 10**6)
    open_position(system, alice, 3, {"WBTC": 5 * 10**7})
    open_position(system, bob, 0, {"WBTC": 10**7, "LINK": 100 * 10**18})
    bob_scaled = borrow(system, bob, 0, 500 * 10**6)
    chain.pending_timestamp += 10 * 86400
    for symbol, usd in (("WETH", 2000), ("WBTC", 60_000), ("LINK", 15), ("USDC", 1)):
        system.set_price(symbol, usd)
    return {
        (alice.address, 0): Expected({"WETH": 3 * 10**18 // 2, "LINK": 100 * 10**18}, alice_scaled),
        (alice.address, 3): Expected({"WBTC": 5 * 10**7}),
        (bob.address, 0): Expected({"WBTC": 10**7, "LINK": 100 * 10**18}, bob_scaled),
        (stranger.address, 7): Expected({}),
    }


def make_stale(system: Any, chain: Any, symbol: str) -> int:
    """Let `symbol`'s feed go one second past its staleness while every other feed is refreshed; returns its
    updatedAt."""
    updated = int(system.feeds[symbol].latestRoundData()[3])
    chain.pending_timestamp = updated + WETH_STALENESS + 1
    for other, usd in (("WETH", 2000), ("WBTC", 60_000), ("LINK", 15), ("USDC", 1)):
        if other != symbol:
            system.set_price(other, usd)
    return updated


# ------------------------------------------------------------------------------------------------ accounts


def test_accounts_returns_exact_balances_and_debt(system: Any, book: dict[tuple[str, int], Expected]) -> None:
    """accounts() gives, per sub-account, balances in assetList order, the asset mask, the scaled debt and the
    debt rounded up at the current index, equal to the engine's views and to independent math."""
    engine = system.engine
    assert list(engine.assetList()) == [system.tokens[s].address for s in SYMBOLS]
    keys = list(book)
    out = system.lens.accounts([o for o, _ in keys], [s for _, s in keys])
    index = system.vault.borrowIndex()
    assert index > RAY  # interest accrued, so debt and scaled debt differ
    assert len(out) == len(keys)
    for row, (owner, sub_id) in zip(out, keys, strict=True):
        exp = book[(owner, sub_id)]
        assert (row.owner, row.subId) == (owner, sub_id)
        assert list(row.balances) == exp.balance_list()
        assert list(row.balances) == [engine.collateralOf(owner, sub_id, system.tokens[s]) for s in SYMBOLS]
        assert row.assetMask == exp.mask() == engine.position(owner, sub_id).assetMask
        assert row.scaledDebt == exp.scaled == engine.position(owner, sub_id).scaledDebt
        assert row.debt == ceil_div(exp.scaled * index, RAY) == engine.debtOf(owner, sub_id)
    assert out[0].debt > 1000 * 10**6
    assert out[2].debt > 500 * 10**6


@pytest.mark.parametrize("method", ["accounts", "healths"])
def test_length_mismatch(system: Any, chain: Any, alice: Any, bob: Any, method: str) -> None:
    """Owner and sub-account arrays of different lengths revert LengthMismatch()."""
    with reverts_with(error_data(system.lens.LengthMismatch)):
        view(chain, system.lens, method, [alice.address, bob.address], [0])
    with reverts_with(error_data(system.lens.LengthMismatch)):
        view(chain, system.lens, method, [alice.address], [0, 1])


# ------------------------------------------------------------------------------------------------ market


def test_market_reports_everything(system: Any, chain: Any, book: dict[tuple[str, int], Expected]) -> None:
    """market() returns the block, the borrow index, the debt asset and its price, each listed asset's config and
    price in assetList order, and the risk parameters."""
    m = system.lens.market()
    head = chain.blocks.head
    assert (m.blockNumber, m.timestamp) == (head.number, head.timestamp)
    assert m.borrowIndex == system.vault.borrowIndex()
    assert (m.debtAsset, m.debtDecimals) == (system.usdc.address, USDC_DECIMALS)
    assert (m.debtPrice.asset, m.debtPrice.ok, m.debtPrice.price, bytes(m.debtPrice.error)) == (
        system.usdc.address,
        True,
        WAD,
        b"",
    )
    assert list(m.assets) == [system.tokens[s].address for s in SYMBOLS]
    for i, symbol in enumerate(SYMBOLS):
        c = m.configs[i]
        expected_cfg = (True, i, DECIMALS[symbol], LTV[symbol], LT[symbol], MAX_DISCOUNT[symbol])
        assert (c.listed, c.index, c.decimals, c.ltv, c.lt, c.maxDiscount) == expected_cfg
        e = system.engine.assetConfig(system.tokens[symbol])
        assert (e.listed, e.index, e.decimals, e.ltv, e.lt, e.maxDiscount) == expected_cfg
        p = m.prices[i]
        assert (p.asset, p.ok, p.price, bytes(p.error)) == (system.tokens[symbol].address, True, PRICE[symbol], b"")
    params = (m.params.minDiscount, m.params.fullCloseHealth, m.params.fullCloseDebtValue, m.params.minDebt)
    assert params == (5 * WAD // 1000, 95 * WAD // 100, 100 * WAD, 10 * 10**USDC_DECIMALS)


def test_market_reports_a_stale_feed_without_reverting(system: Any, chain: Any) -> None:
    """With WETH stale, its PriceData has ok=false, price 0 and the router's exact StalePrice revert data, while
    the other assets and the debt asset stay priced."""
    updated = make_stale(system, chain, "WETH")
    m = system.lens.market()
    weth = m.prices[0]
    assert (weth.asset, weth.ok, weth.price) == (system.weth.address, False, 0)
    assert bytes(weth.error)[:4] == keccak(text="StalePrice(address,uint256,uint256)")[:4]
    assert bytes(weth.error) == error_data(system.router.StalePrice, system.weth.address, updated, WETH_STALENESS)
    for i, symbol in enumerate(SYMBOLS[1:], start=1):
        assert (m.prices[i].ok, m.prices[i].price, bytes(m.prices[i].error)) == (True, PRICE[symbol], b"")
    assert (m.debtPrice.ok, m.debtPrice.price) == (True, WAD)


def test_market_reports_a_broken_debt_feed(system: Any, admin: Any) -> None:
    """A reverting debt-asset feed shows as debtPrice.ok=false with FeedCallFailed(usdc, feed); collateral prices
    are unaffected."""
    feed = system.feeds["USDC"]
    feed.setReverting(True, sender=admin)
    m = system.lens.market()
    assert (m.debtPrice.asset, m.debtPrice.ok, m.debtPrice.price) == (system.usdc.address, False, 0)
    assert bytes(m.debtPrice.error) == error_data(system.router.FeedCallFailed, system.usdc.address, feed.address)
    assert [(p.ok, p.price) for p in m.prices] == [(True, PRICE[s]) for s in SYMBOLS]


# ------------------------------------------------------------------------------------------------ healths


def test_healths_match_engine_and_independent_math(system: Any, book: dict[tuple[str, int], Expected]) -> None:
    """With every price valid, healths() gives ok=true and the engine's exact figures for each account, including
    type(uint256).max for accounts without debt."""
    keys = list(book)
    out = system.lens.healths([o for o, _ in keys], [s for _, s in keys])
    index = system.vault.borrowIndex()
    for row, key in zip(out, keys, strict=True):
        assert row.ok
        assert health_tuple(row.health) == book[key].health(index)
        assert health_tuple(row.health) == health_tuple(system.engine.accountHealth(*key))
    assert out[1].health.health == MAX_UINT
    assert out[3].health.health == MAX_UINT


def test_healths_flag_only_accounts_holding_the_broken_asset(
    system: Any, chain: Any, book: dict[tuple[str, int], Expected]
) -> None:
    """With WETH stale, the account holding WETH reports ok=false (zeroed figures); the others stay ok=true with
    the engine's figures."""
    make_stale(system, chain, "WETH")
    keys = list(book)
    out = system.lens.healths([o for o, _ in keys], [s for _, s in keys])
    index = system.vault.borrowIndex()
    assert not out[0].ok
    assert health_tuple(out[0].health) == (0, 0, 0, 0, 0, 0)
    for row, key in zip(out[1:], keys[1:], strict=True):
        assert row.ok
        assert health_tuple(row.health) == book[key].health(index)
        assert health_tuple(row.health) == health_tuple(system.engine.accountHealth(*key))


# ------------------------------------------------------------------------------------------------ batch size


def test_batch_of_100_accounts_in_one_call(
    system: Any, chain: Any, admin: Any, alice: Any, bob: Any, liquidator: Any, stranger: Any
) -> None:
    """One accounts() and one healths() call cover 100 sub-accounts (31 funded, 4 borrowing) with exact figures,
    well inside a block's gas."""
    owners = (alice, bob, liquidator, stranger)
    keys = [(owners[i % 4].address, (i // 4) * 10 + i % 4) for i in range(100)]
    assert len(set(keys)) == 100
    book = {key: Expected({}) for key in keys}

    funded = [key for i, key in enumerate(keys) if i % 4 == 0 or i < 8]  # every alice sub-account and 6 more
    assert len(funded) == 31
    fund(system, admin, "LINK", 10**24)
    for n, key in enumerate(funded):
        amount = (n + 1) * 37 * 10**18 + n
        system.engine.deposit(key[0], key[1], system.link, amount, sender=admin)
        book[key] = Expected({"LINK": amount})
    for who, key in zip(owners, keys[4:8], strict=True):
        book[key].scaled = borrow(system, who, key[1], 50 * 10**6 + key[1])

    owner_list = [o for o, _ in keys]
    sub_list = [s for _, s in keys]
    rows = system.lens.accounts(owner_list, sub_list)
    healths = system.lens.healths(owner_list, sub_list)
    index = system.vault.borrowIndex()
    assert len(rows) == len(healths) == 100
    for row, h, key in zip(rows, healths, keys, strict=True):
        exp = book[key]
        assert (row.owner, row.subId) == key
        assert list(row.balances) == exp.balance_list()
        assert (row.assetMask, row.scaledDebt) == (exp.mask(), exp.scaled)
        assert row.debt == ceil_div(exp.scaled * index, RAY)
        assert h.ok
        assert health_tuple(h.health) == exp.health(index)
    assert sum(1 for k in keys if book[k].scaled) == 4

    web3 = chain.provider.web3
    for method in ("accounts", "healths"):
        data = getattr(system.lens, method).encode_input(owner_list, sub_list)
        assert web3.eth.estimate_gas({"to": system.lens.address, "data": data}) < 30_000_000
