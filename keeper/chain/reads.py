"""Batch reads of the market and of every tracked account through the Lens, pinned to one block.

Two kinds of `eth_call`: `Lens.market()` (every asset's configuration and the router's verdict on its price, the
debt asset's price, the borrow index, the risk parameters) and `Lens.accounts()` over chunks of accounts. Never one
call per account.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

from eth_abi.abi import decode as abi_decode
from eth_abi.abi import encode as abi_encode
from web3 import Web3
from web3.contract import Contract
from web3.types import BlockIdentifier, TxParams

from keeper.core import risk

# 1,000 accounts with three collaterals is about 17M gas per eth_call: under Anvil's 30M default and geth's
# 50M eth_call cap, and as fast as larger chunks (docs/benchmarks.md).
DEFAULT_CHUNK = 1_000


@dataclass(frozen=True)
class PriceView:
    asset: str
    ok: bool
    price: int  # WAD USD per whole token; 0 when not ok
    error: bytes  # the router's revert data when not ok


@dataclass(frozen=True)
class AssetView:
    address: str
    index: int
    decimals: int
    risk: risk.AssetRisk
    price: PriceView


@dataclass(frozen=True)
class Market:
    block: int
    timestamp: int
    index: int  # borrow index, RAY
    debt_asset: str
    debt_decimals: int
    debt_price: PriceView
    assets: tuple[AssetView, ...]
    params: risk.RiskParams

    def asset(self, address: str) -> AssetView:
        for a in self.assets:
            if a.address == address:
                return a
        raise KeyError(address)


@dataclass(frozen=True)
class Account:
    owner: str
    sub_id: int
    scaled_debt: int
    debt: int
    mask: int
    balances: tuple[int, ...]  # one per listed asset, in Market.assets order

    def held(self) -> list[int]:
        """Indexes of the assets this account holds."""
        return [i for i in range(len(self.balances)) if self.mask >> i & 1]


def _price(raw: Sequence[Any]) -> PriceView:
    asset, ok, price, error = raw
    return PriceView(Web3.to_checksum_address(asset), bool(ok), int(price), bytes(error))


def read_market(lens: Contract, block: BlockIdentifier = "latest") -> Market:
    raw = lens.functions.market().call(block_identifier=block)
    block_number, timestamp, index, debt_asset, debt_decimals, debt_price, assets, configs, prices, params = raw
    views = []
    for address, cfg, price in zip(assets, configs, prices, strict=True):
        # lt is the effective lt at the block's timestamp; a running ramp's end does not enter the math.
        _listed, idx, decimals, ltv, lt, max_discount, _ramp_end = cfg
        views.append(
            AssetView(
                address=Web3.to_checksum_address(address),
                index=int(idx),
                decimals=int(decimals),
                risk=risk.AssetRisk(decimals=int(decimals), ltv=int(ltv), lt=int(lt), max_discount=int(max_discount)),
                price=_price(price),
            )
        )
    min_discount, full_close_health, full_close_debt_value, min_debt = params
    return Market(
        block=int(block_number),
        timestamp=int(timestamp),
        index=int(index),
        debt_asset=Web3.to_checksum_address(debt_asset),
        debt_decimals=int(debt_decimals),
        debt_price=_price(debt_price),
        assets=tuple(views),
        params=risk.RiskParams(
            min_discount=int(min_discount),
            full_close_health=int(full_close_health),
            full_close_debt_value=int(full_close_debt_value),
            min_debt=int(min_debt),
        ),
    )


# Lens.accounts is called with hand-built calldata and decoded with eth-abi directly: web3's contract layer
# validates and checksums every address on the way in and out, which costs ten times the call itself at 10,000
# accounts (docs/benchmarks.md).
_ACCOUNTS_SELECTOR = bytes(Web3.keccak(text="accounts(address[],uint8[])")[:4])
_ACCOUNTS_IN = ["address[]", "uint8[]"]
_ACCOUNTS_OUT = ["(address,uint8,uint256,uint256,uint32,uint256[])[]"]


class LensReadError(Exception):
    """The Lens answered with a different number of accounts than asked for."""


def read_accounts(
    lens: Contract,
    accounts: Sequence[tuple[str, int]],
    block: BlockIdentifier = "latest",
    chunk: int = DEFAULT_CHUNK,
) -> list[Account]:
    """Balances and debt of `accounts` (checksummed owners) at `block`, one `eth_call` per `chunk` accounts."""
    out: list[Account] = []
    for start in range(0, len(accounts), chunk):
        part = accounts[start : start + chunk]
        data = _ACCOUNTS_SELECTOR + abi_encode(_ACCOUNTS_IN, [[o for o, _ in part], [s for _, s in part]])
        raw = lens.w3.eth.call(cast(TxParams, {"to": lens.address, "data": data}), block_identifier=block)
        (rows,) = abi_decode(_ACCOUNTS_OUT, bytes(raw))
        if len(rows) != len(part):
            raise LensReadError(f"Lens.accounts returned {len(rows)} rows for {len(part)} accounts")
        for (owner, sub_id), row in zip(part, rows, strict=True):
            _owner, _sub, scaled_debt, debt, mask, balances = row
            out.append(
                Account(
                    owner=owner,
                    sub_id=sub_id,
                    scaled_debt=scaled_debt,
                    debt=debt,
                    mask=mask,
                    balances=tuple(balances),
                )
            )
    return out


MirrorInputs = tuple[dict[int, int], dict[int, int], dict[int, risk.AssetRisk]]


def mirror_inputs(account: Account, market: Market) -> MirrorInputs | None:
    """Balances, prices and configs of the assets `account` holds, keyed by asset index in `assetList()` order
    (the order the engine walks them), or None when the router refuses a price the account needs."""
    if account.debt and not market.debt_price.ok:
        return None
    balances: dict[int, int] = {}
    prices: dict[int, int] = {}
    assets: dict[int, risk.AssetRisk] = {}
    for i in account.held():
        view = market.assets[i]
        if not view.price.ok:
            return None
        balances[i] = account.balances[i]
        prices[i] = view.price.price
        assets[i] = view.risk
    return balances, prices, assets


def liquidation_inputs(account: Account, market: Market) -> MirrorInputs | None:
    """What the engine's liquidation values an account with (its lenient valuation): balances and configs of every
    asset it holds, and the prices the router accepts; a held asset whose price is refused is left out of the
    prices and counts at zero. None only when the account has debt and the debt asset's price is refused."""
    if account.debt and not market.debt_price.ok:
        return None
    balances: dict[int, int] = {}
    prices: dict[int, int] = {}
    assets: dict[int, risk.AssetRisk] = {}
    for i in account.held():
        view = market.assets[i]
        balances[i] = account.balances[i]
        assets[i] = view.risk
        if view.price.ok:
            prices[i] = view.price.price
    return balances, prices, assets


def liquidation_valuation(account: Account, market: Market) -> risk.Valuation | None:
    """The account as `liquidate` values it (unpriceable collateral at zero), or None when it cannot be valued
    (the debt asset's price is refused, or the contract's arithmetic would overflow)."""
    inputs = liquidation_inputs(account, market)
    if inputs is None:
        return None
    balances, prices, assets = inputs
    try:
        return risk.valuation(
            balances,
            prices,
            assets,
            account.scaled_debt,
            market.index,
            market.debt_price.price if market.debt_price.ok else None,
            market.debt_decimals,
            market.params.min_discount,
        )
    except risk.ContractRevert:
        return None


def health_of(account: Account, market: Market) -> risk.Health | None:
    """The account's health by the mirror, or None when a price it needs is one the router refuses."""
    inputs = mirror_inputs(account, market)
    if inputs is None:
        return None
    balances, prices, assets = inputs
    try:
        return risk.account_health(
            balances,
            prices,
            assets,
            account.scaled_debt,
            market.index,
            market.debt_price.price,
            market.debt_decimals,
        )
    except risk.ContractRevert:
        # The contract would revert too (an overflow on absurd balances): the account cannot be priced.
        return None
