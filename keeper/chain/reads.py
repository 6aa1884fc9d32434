"""Batch reads of the market and of every tracked account through the Lens, pinned to one block.

Two kinds of `eth_call`: `Lens.market()` (every asset's configuration and the router's verdict on its price, the
debt asset's price, the borrow index, the risk parameters) and `Lens.accounts()` over chunks of accounts. Never one
call per account.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

from eth_abi.abi import decode as abi_decode
from eth_abi.abi import encode as abi_encode
from web3 import Web3
from web3.contract import Contract
from web3.types import BlockIdentifier, TxParams

from keeper.core import grid, risk
from keeper.core.errors import UnsupportedMarketError
from keeper.core.snapshot import Account, AssetView, Market, PriceView
from keeper.core.units import Ray, Wad

# 1,000 accounts with three collaterals is about 17M gas per eth_call: under Anvil's 30M default and geth's
# 50M eth_call cap, and as fast as larger chunks (docs/benchmarks.md).
DEFAULT_CHUNK = 1_000


def _price(raw: Sequence[Any]) -> PriceView:
    asset, ok, price, error = raw
    return PriceView(Web3.to_checksum_address(asset), bool(ok), Wad(int(price)), bytes(error))


def _has(lens: Contract, name: str) -> bool:
    return any(f.get("name") == name for f in lens.abi if f.get("type") == "function")


def require_one_debt(lens: Contract, block: BlockIdentifier = "latest") -> None:
    """Refuse an engine with several debt assets (`listDebt`): the keeper's mirror and plans cover the primary debt
    asset only, so its health figures would leave the other debts out."""
    if not _has(lens, "debts"):
        return
    rows = lens.functions.debts().call(block_identifier=block)
    if len(rows) > 1:
        others = ", ".join(Web3.to_checksum_address(r[0][0]) for r in rows[1:])
        raise UnsupportedMarketError(
            f"the engine lists {len(rows)} debt assets (vaults of the others: {others}); this keeper mirrors one "
            "debt asset only and would misjudge accounts that owe the others. Liquidate them with "
            "`liquidateDebt` by hand, or run the keeper on a market with one debt asset (docs/portfolio-margin.md)"
        )


def read_market(lens: Contract, block: BlockIdentifier = "latest") -> Market:
    require_one_debt(lens, block)
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
        index=Ray(int(index)),
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
        grid=read_grid(lens, len(views), block),
    )


def read_grid(lens: Contract, n_assets: int, block: BlockIdentifier = "latest") -> risk.GridRule | None:
    """The engine's stored grid at `block` from `Lens.grid()` (every column in force, in one call), columns keyed
    by asset index; None under the additive rule. A deployment whose Lens ABI has no `grid()` predates the grid:
    its engine is additive."""
    if not _has(lens, "grid"):
        return None
    count, initial_scale, _start, _end, columns = lens.functions.grid().call(block_identifier=block)
    if count == 0:
        return None
    if len(columns) != n_assets + 1:
        raise LensReadError(f"Lens.grid returned {len(columns)} columns for {n_assets} assets and the debt asset")
    cols = [grid.unpack(c, int(count)) for c in columns]
    return risk.GridRule(int(count), int(initial_scale), dict(enumerate(cols[:-1])), cols[-1])


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
