"""Reading the accounts as `liquidate` values them (Lens.liquidationHealths), and what the rows mean: which accounts
can be acted on, their healths and debts, USD totals, and the liquidatable test the drill and its report share.

A held asset whose price the router refuses counts at zero, so during an oracle fault an account is liquidatable on
its other collateral."""

from __future__ import annotations

from eth_abi.abi import decode as abi_decode
from eth_abi.abi import encode as abi_encode
from eth_utils.crypto import keccak

from keeper.chain.node import Rpc
from keeper.core import risk
from keeper.core.units import WAD

HEALTH_CHUNK = 250  # accounts per Lens.liquidationHealths call (each read costs gas in eth_call)
_HEALTHS_SELECTOR = keccak(text="liquidationHealths(address[],uint8[])")[:4]
_HEALTHS_OUT = ["(bool,(uint256,uint256,uint256,uint256,uint256,uint256))[]"]

# One Lens.liquidationHealths row: (valued, AccountHealth), AccountHealth being (collateral value, lt-weighted value,
# borrowing power, debt, debt value, health).
HealthRow = tuple[bool, tuple[int, ...]]


def health_rows(rpc: Rpc, lens: str, accounts: list[tuple[str, int]], block: int) -> list[HealthRow]:
    """Lens.liquidationHealths in chunks: (valued, AccountHealth) per account."""
    out: list[HealthRow] = []
    for i in range(0, len(accounts), HEALTH_CHUNK):
        chunk = accounts[i : i + HEALTH_CHUNK]
        data = _HEALTHS_SELECTOR + abi_encode(["address[]", "uint8[]"], [[o for o, _ in chunk], [s for _, s in chunk]])
        (rows,) = abi_decode(_HEALTHS_OUT, rpc.eth_call(lens, data, block))
        out += [(bool(good), tuple(int(v) for v in h)) for good, h in rows]
    return out


def read_healths(
    rpc: Rpc, lens: str, accounts: list[tuple[str, int]], block: int
) -> tuple[list[bool], list[int], list[int]]:
    """Every account's (can be acted on, health, debt value) at `block`, from Lens.liquidationHealths in chunks."""
    return split_rows(health_rows(rpc, lens, accounts, block))


def split_rows(rows: list[HealthRow]) -> tuple[list[bool], list[int], list[int]]:
    """(can be acted on, health, debt value in WAD USD, every debt asset's) per account from Lens.liquidationHealths
    rows. An account can be acted on when the engine can value it (the prices of the debts it owes are valid) and,
    with debt, some of its collateral has a valid price: one whose every collateral is refused a price cannot be
    liquidated, as before."""
    ok = [good and (int(h[4]) == 0 or int(h[0]) > 0) for good, h in rows]
    health = [int(h[5]) if good else 0 for good, h in rows]
    debt = [int(h[4]) if good else 0 for good, h in rows]
    return ok, health, debt


def debts_usd(rows: list[HealthRow]) -> list[float]:
    """Every account's debt value in USD from Lens.liquidationHealths rows (0 where it cannot be valued)."""
    return [int(h[4]) / WAD if good else 0.0 for good, h in rows]


def totals(all_rows: list[HealthRow]) -> dict[str, float]:
    """USD totals over Lens.liquidationHealths rows: collateral value, borrowing power (Σ value·ltv) and debt value."""
    rows = [h for good, h in all_rows if good]
    return {
        "collateral_usd": sum(int(h[0]) for h in rows) / WAD,
        "borrowing_power_usd": sum(int(h[2]) for h in rows) / WAD,
        "debt_usd": sum(int(h[4]) for h in rows) / WAD,
    }


def liquidatable(ok: bool, health: int, debt: int) -> bool:
    """What the engine would let anyone liquidate: valid prices, some debt, health below 1."""
    return ok and risk.is_liquidatable_at(health, debt)
