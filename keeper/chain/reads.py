"""Batch reads of the market and of every tracked account through the Lens, pinned to one block.

`Lens.market()` (every asset's configuration and the router's verdict on its price, the debt asset's price, the
borrow index, the risk parameters), `Lens.debts()` and `Lens.grid()` once a block, and `Lens.accounts()` over chunks
of accounts (with `Lens.accountDebts()` beside it on a market with several debt assets). Never one call per
account.
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
from keeper.core.snapshot import Account, AssetView, DebtView, Market, PriceView
from keeper.core.units import Ray, Wad

# 1,000 accounts with three collaterals is about 17M gas per eth_call: under Anvil's 30M default and geth's
# 50M eth_call cap, and as fast as larger chunks (docs/benchmarks.md).
DEFAULT_CHUNK = 1_000


def _price(raw: Sequence[Any]) -> PriceView:
    asset, ok, price, error = raw
    return PriceView(Web3.to_checksum_address(asset), bool(ok), Wad(int(price)), bytes(error))


def _has(lens: Contract, name: str) -> bool:
    return any(f.get("name") == name for f in lens.abi if f.get("type") == "function")


def read_other_debts(lens: Contract, block: BlockIdentifier = "latest") -> tuple[DebtView, ...]:
    """The debt assets beyond the primary (`Lens.debts()`, from its second row); none from a Lens that predates
    several debt assets."""
    if not _has(lens, "debts"):
        return ()
    rows = lens.functions.debts().call(block_identifier=block)
    out = []
    for (vault, _index, decimals, min_debt), index, price in rows[1:]:
        out.append(
            DebtView(
                address=Web3.to_checksum_address(price[0]),
                vault=Web3.to_checksum_address(vault),
                decimals=int(decimals),
                min_debt=int(min_debt),
                index=Ray(int(index)),
                price=_price(price),
            )
        )
    return tuple(out)


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
    others = read_other_debts(lens, block)
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
        grid=read_grid(lens, len(views), others, block),
        other_debts=others,
    )


def read_grid(
    lens: Contract, n_assets: int, others: tuple[DebtView, ...] = (), block: BlockIdentifier = "latest"
) -> risk.GridRule | None:
    """The engine's stored grid at `block` from `Lens.grid()` (every column in force, in one call): collateral
    columns keyed by asset index, the primary debt's, and the further debts' keyed by address; None under the
    additive rule. A deployment whose Lens ABI has no `grid()` predates the grid: its engine is additive."""
    if not _has(lens, "grid"):
        return None
    count, initial_scale, _start, _end, columns = lens.functions.grid().call(block_identifier=block)
    if count == 0:
        return None
    if len(columns) != n_assets + 1 + len(others):
        raise LensReadError(
            f"Lens.grid returned {len(columns)} columns for {n_assets} assets and {1 + len(others)} debt assets"
        )
    cols = [grid.unpack(c, int(count)) for c in columns]
    further = {d.address: cols[n_assets + 1 + j] for j, d in enumerate(others)}
    return risk.GridRule(int(count), int(initial_scale), dict(enumerate(cols[:n_assets])), cols[n_assets], further)


# Lens.accounts is called with hand-built calldata and decoded with eth-abi directly: web3's contract layer
# validates and checksums every address on the way in and out, which costs ten times the call itself at 10,000
# accounts (docs/benchmarks.md).
_ACCOUNTS_SELECTOR = bytes(Web3.keccak(text="accounts(address[],uint8[])")[:4])
_ACCOUNTS_IN = ["address[]", "uint8[]"]
_ACCOUNTS_OUT = ["(address,uint8,uint256,uint256,uint32,uint256[])[]"]


class LensReadError(Exception):
    """The Lens answered with a different number of accounts than asked for."""


_DEBTS_SELECTOR = bytes(Web3.keccak(text="accountDebts(address[],uint8[])")[:4])


def read_accounts(
    lens: Contract,
    accounts: Sequence[tuple[str, int]],
    block: BlockIdentifier = "latest",
    chunk: int = DEFAULT_CHUNK,
    other_debts: int = 0,
) -> list[Account]:
    """Balances and debt of `accounts` (checksummed owners) at `block`, one `eth_call` per `chunk` accounts; on a
    market with `other_debts` further debt assets, a second call per chunk for their scaled debts
    (`Lens.accountDebts`)."""
    out: list[Account] = []
    for start in range(0, len(accounts), chunk):
        part = accounts[start : start + chunk]
        data = _ACCOUNTS_SELECTOR + abi_encode(_ACCOUNTS_IN, [[o for o, _ in part], [s for _, s in part]])
        raw = lens.w3.eth.call(cast(TxParams, {"to": lens.address, "data": data}), block_identifier=block)
        (rows,) = abi_decode(_ACCOUNTS_OUT, bytes(raw))
        if len(rows) != len(part):
            raise LensReadError(f"Lens.accounts returned {len(rows)} rows for {len(part)} accounts")
        further: list[tuple[int, ...]] = [()] * len(part)
        if other_debts:
            data = _DEBTS_SELECTOR + abi_encode(_ACCOUNTS_IN, [[o for o, _ in part], [s for _, s in part]])
            raw = lens.w3.eth.call(cast(TxParams, {"to": lens.address, "data": data}), block_identifier=block)
            (debt_rows,) = abi_decode(["uint256[][]"], bytes(raw))
            if len(debt_rows) != len(part) or any(len(r) != 1 + other_debts for r in debt_rows):
                raise LensReadError(f"Lens.accountDebts returned {len(debt_rows)} rows for {len(part)} accounts")
            further = [tuple(int(x) for x in r[1:]) for r in debt_rows]
        for (owner, sub_id), row, more in zip(part, rows, further, strict=True):
            _owner, _sub, scaled_debt, debt, mask, balances = row
            out.append(
                Account(
                    owner=owner,
                    sub_id=sub_id,
                    scaled_debt=scaled_debt,
                    debt=debt,
                    mask=mask,
                    balances=tuple(balances),
                    other_debts=more,
                )
            )
    return out
