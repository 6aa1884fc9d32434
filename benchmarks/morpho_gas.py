"""Morpho Blue beside the engine, measured in the same run on the same Anvil: full transactions, the same clock
(12 s between transactions, so both accrue interest on every call), a market with a lender and another borrower
before the user arrives, and a liquidation of a position just under its threshold.

    python benchmarks/morpho_gas.py

Morpho Blue 1.0.0 is built from its npm package as its repository builds it (tests/thirdparty.py: solc 0.8.19,
via-ir, 999,999 runs), with the IRM, oracle and token mocks the package ships; our figures are benchmarks/gas.py's
`measure` in the same process. The operations do not do the same work, and the table says how: Morpho is one
collateral and one loan asset per market with a price from one oracle call, the engine a cross-margin sub-account
over every collateral it holds, each priced through the router's checks. The last line is
`morpho_gas pairs=N` followed by `name=ours/theirs` for each pair."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks"))

import gas  # noqa: E402
from thirdparty import chainlink as third_party  # noqa: E402

WAD = 10**18
LLTV = 86 * 10**16  # Morpho's ETH/USDC-like market: 86 %
BLOCK_TIME = 12
MAX_UINT = 2**256 - 1


class Clock:
    def __init__(self, chain: Any) -> None:
        self.chain = chain
        self.now = int(chain.blocks.head.timestamp)
        self.gas: dict[str, int] = {}

    def tx(self, method: Any, *args: Any, sender: Any, name: str | None = None) -> Any:
        self.now += BLOCK_TIME
        self.chain.provider.set_timestamp(self.now)
        receipt = method(*args, sender=sender)
        if name is not None:
            self.gas[name] = int(receipt.gas_used)
        return receipt


def measure_morpho(chain: Any, accounts: Any) -> dict[str, int]:
    """Deploy Morpho Blue and its mocks, open a market like the engine's (a collateral at $2,000 against a $1
    loan asset), and measure the user's operations."""
    owner, lender, other, user, liquidator = accounts[9], accounts[8], accounts[6], accounts[7], accounts[5]
    c = Clock(chain)
    morpho = owner.deploy(third_party("Morpho"), owner.address)
    irm = owner.deploy(third_party("IrmMock"))
    oracle = owner.deploy(third_party("OracleMock"))
    loan = owner.deploy(third_party("ERC20Mock"))
    coll = owner.deploy(third_party("ERC20Mock"))
    c.tx(morpho.enableIrm, irm, sender=owner)
    c.tx(morpho.enableLltv, LLTV, sender=owner)
    params = (loan.address, coll.address, oracle.address, irm.address, LLTV)
    c.tx(oracle.setPrice, 2_000 * 10**36, sender=owner)  # 1 collateral = 2,000 loan units, scaled by 1e36
    c.tx(morpho.createMarket, params, sender=owner)
    for who, token, amount in ((lender, loan, 10**24), (other, coll, 10**21), (user, coll, 10**21),
                               (user, loan, 10**24), (liquidator, loan, 10**24)):  # fmt: skip
        c.tx(token.setBalance, who, amount, sender=who)
        c.tx(token.approve, morpho, MAX_UINT, sender=who)
    # The market before the user: a lender, and another borrower.
    c.tx(morpho.supply, params, 10**24 // 2, 0, lender, b"", sender=lender)
    c.tx(morpho.supplyCollateral, params, 100 * WAD, other, b"", sender=other)
    c.tx(morpho.borrow, params, 100_000 * WAD, 0, other, other, sender=other)
    # The user: a first deposit, a top-up, then a borrow's life cycle.
    c.tx(morpho.supplyCollateral, params, 10 * WAD, user, b"", sender=user, name="deposit_new_position")
    c.tx(morpho.supplyCollateral, params, WAD, user, b"", sender=user, name="deposit")
    c.tx(morpho.borrow, params, 10_000 * WAD, 0, user, user, sender=user, name="borrow")
    c.tx(morpho.withdrawCollateral, params, WAD, user, user, sender=user, name="withdraw")
    c.tx(morpho.repay, params, 2_000 * WAD, 0, user, b"", sender=user, name="repay")
    shares = int(morpho.position(_id(params), user)[1])  # (supplyShares, borrowShares, collateral)
    c.tx(morpho.repay, params, 0, shares, user, b"", sender=user, name="repay_full")
    # A liquidation: a borrower at 95 % of its lltv, then the price falls 5 %; half its collateral is seized.
    victim = accounts[4]
    c.tx(coll.setBalance, victim, 10 * WAD, sender=victim)
    c.tx(coll.approve, morpho, MAX_UINT, sender=victim)
    c.tx(morpho.supplyCollateral, params, 10 * WAD, victim, b"", sender=victim)
    c.tx(morpho.borrow, params, 16_340 * WAD, 0, victim, victim, sender=victim)  # 0.95 * 0.86 * 20,000
    c.tx(oracle.setPrice, 1_900 * 10**36, sender=owner)
    c.tx(morpho.liquidate, params, victim, 5 * WAD, 0, b"", sender=liquidator, name="liquidate_partial")
    return c.gas


def _id(params: tuple[Any, ...]) -> bytes:
    from eth_abi.abi import encode
    from eth_utils.crypto import keccak

    return keccak(encode(["address", "address", "address", "address", "uint256"], list(params)))


PAIRS = (
    ("deposit_new_subaccount", "deposit_new_position", "first collateral of a position"),
    ("deposit", "deposit", "a collateral top-up"),
    ("borrow", "borrow", "a first borrow (margin over every collateral held / one oracle call)"),
    ("withdraw", "withdraw", "a withdrawal with debt"),
    ("repay", "repay", "a partial repayment"),
    ("repay_full", "repay_full", "the whole debt"),
    ("liquidate_partial", "liquidate_partial", "a partial liquidation of a position just under its threshold"),
)


def main() -> int:
    from ape import Project, accounts, chain, networks

    project = Project(ROOT)
    with networks.ethereum.local.use_provider("foundry"):
        ours = gas.measure(project, chain, accounts.test_accounts).gas
        theirs = measure_morpho(chain, accounts.test_accounts)
    print(f"{'operation':<26}{'engine':>10}{'Morpho Blue':>13}{'ratio':>8}  what")
    line = []
    for mine, morpho, what in PAIRS:
        a, b = ours[mine], theirs[morpho]
        print(f"{mine:<26}{a:>10,}{b:>13,}{a / b:>8.2f}  {what}")
        line.append(f"{mine}={a}/{b}")
    print(f"morpho_gas pairs={len(PAIRS)} " + " ".join(line))
    return 0


if __name__ == "__main__":
    sys.exit(main())
