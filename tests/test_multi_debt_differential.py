"""Differential test of keeper/core/risk.py's several-debt functions against the engine on a real Anvil, exact to
the wei: random portfolios that owe up to four debt assets at once.

The market is the test market (USDC primary debt; WETH, WBTC and LINK collateral) with three more debt assets,
each lent by its own Vault with its own interest model: WETH and WBTC (also collateral, so one grid column prices
both their legs) and GBPT, a 6-decimal token that is only a debt. Sub-accounts hold one to three collaterals and
owe one to four debts, drawn up to a random share of what the mirror says they may borrow. Round after round the
driver moves every price (the debts' too), lets a day pass so each vault's index grows at its own rate, now and
then sets a random scenario grid over all five assets (1 to 12 scenarios, moves from 0.3 to 1.8) or returns to
the additive rule, and compares, at one block:

- every account's `accountHealth` and `liquidationHealth` (all six fields, or the revert) with `risk.valuation_of`
  (strict and lenient): one *state*;
- `previewLiquidationDebt` of every liquidatable account for every (debt asset, collateral) pair it could name,
  owed or not, held or not, at several amounts (1, half the debt, the debt, MAX_UINT), with `risk.liquidation_of`,
  reverts compared by error name and arguments;
- `writeOff` (simulated) with `risk.write_off_of` (the primary's bad debt it returns);
- real `liquidateDebt`s: every debt's scaled amount afterwards with the mirror's settlement (repaid and written
  off, in each vault), and the invariant that no liquidation lowers the account's health.

The mirror computes from raw state (balances, scaled debts, each vault's borrow index, the answers the driver
pushed to the feeds, the listed configuration); no figure under test is fed back into it. `CK_MULTI_STATES=N`
raises the number of states (default 1,000), `CK_MULTI_SEED=S` changes the seed.
"""

from __future__ import annotations

import os
import random
import time
from functools import partial
from typing import Any

from conftest import MAX_UINT, WAD, deploy_test_system, plain
from test_risk_differential import Abi, Call, Node, Tally, mirror

from keeper.core import risk
from keeper.core.grid import pack

DEFAULT_STATES = 1_000
DEFAULT_SEED = 14_2026
OWNERS = 6
SUBS = 12  # sub-accounts per owner
DAY = 86_400
# symbol: (token decimals, feed decimals, base price in USD)
BASE = {
    "USDC": (6, 8, 1.0),
    "WETH": (18, 8, 2000.0),
    "WBTC": (8, 8, 60_000.0),
    "LINK": (18, 18, 15.0),
    "GBPT": (6, 8, 1.25),
}
COLLATERAL = ("WETH", "WBTC", "LINK")
DEBTS = ("USDC", "WETH", "WBTC", "GBPT")
RATES = {
    "WETH": (10**16, 5 * 10**16, 10**18, 8 * 10**17),
    "WBTC": (2 * 10**16, 10**17, 10**18, 8 * 10**17),
    "GBPT": (3 * 10**16, 2 * 10**17, 2 * 10**18, 9 * 10**17),
}
MIN_DEBT = {"WETH": 10**15, "WBTC": 10**3, "GBPT": 5 * 10**6}


def _profile() -> tuple[int, int]:
    return int(os.environ.get("CK_MULTI_STATES", DEFAULT_STATES)), int(os.environ.get("CK_MULTI_SEED", DEFAULT_SEED))


class Market:
    """The deployed market and the driver's own copy of everything the mirror needs."""

    def __init__(self, project: Any, chain: Any, accounts: Any, admin: Any, lender: Any, rng: random.Random) -> None:
        self.rng = rng
        s = deploy_test_system(project, chain, admin, "multi-differential")
        self.s, self.admin = s, admin
        self.tokens = {"USDC": s.usdc, **s.tokens}
        self.feeds = dict(s.feeds)
        gbpt = project.MockERC20.deploy("GBP Token", "GBPT", 6, sender=admin)
        feed = project.MockAggregator.deploy(8, 125_000_000, "GBPT / USD", sender=admin)
        s.router.setFeed(gbpt, feed, 86_400 * 400, 10**16, 10**20, sender=admin)
        self.tokens["GBPT"], self.feeds["GBPT"] = gbpt, feed
        for symbol in ("USDC", "WETH", "WBTC", "LINK"):  # a year between rounds in the worst case: never stale here
            s.router.setFeed(self.tokens[symbol], self.feeds[symbol], 86_400 * 400, 10**12, 10**30, sender=admin)
        self.vaults = {"USDC": s.vault}
        liquidity = {"USDC": 10**8, "WETH": 10**5, "WBTC": 10**4, "GBPT": 10**8}  # whole tokens
        for symbol in DEBTS:
            token = self.tokens[symbol]
            if symbol != "USDC":
                vault = project.Vault.deploy(
                    token, f"ck{symbol}", f"ck{symbol}", admin, RATES[symbol], 10**17, sender=admin
                )
                vault.setEngine(s.engine, sender=admin)
                s.engine.listDebt(vault, MIN_DEBT[symbol], sender=admin)
                self.vaults[symbol] = vault
            amount = liquidity[symbol] * 10 ** BASE[symbol][0]
            token.mint(lender, amount, sender=lender)
            token.approve(self.vaults[symbol], MAX_UINT, sender=lender)
            self.vaults[symbol].deposit(amount, lender, sender=lender)
        self.addr = {k: t.address.lower() for k, t in self.tokens.items()}
        self.prices = {k: int(BASE[k][2] * 10**8) * 10 ** (18 - 8) for k in BASE}  # WAD, from the answers pushed
        self.assets = {}
        for symbol in COLLATERAL:
            c = s.engine.assetConfig(self.tokens[symbol])
            self.assets[self.addr[symbol]] = risk.AssetRisk(int(c.decimals), int(c.ltv), int(c.lt), int(c.maxDiscount))
        p = s.engine.riskParams()
        self.params = risk.RiskParams(
            int(p.minDiscount), int(p.fullCloseHealth), int(p.fullCloseDebtValue), int(p.minDebt)
        )
        self.min_debt = {"USDC": self.params.min_debt, **MIN_DEBT}
        self.grid: risk.GridRule | None = None
        self.owners = [accounts[2 + i] for i in range(OWNERS)]
        self.liquidator = accounts[8]
        self.stranger = accounts[9].address
        for who in [*self.owners, self.liquidator]:
            for token in self.tokens.values():
                token.mint(who, 2**200, sender=who)
                token.approve(s.engine, MAX_UINT, sender=who)
        w3 = chain.provider.web3
        abis = {
            n: [e.model_dump(mode="json", by_alias=True) for e in project[n].contract_type.abi]
            for n in ("MarginEngine", "IScenarioGrid", "OracleRouter", "Vault", "Lens")
        }
        self.node = Node(w3, [abis["MarginEngine"], abis["OracleRouter"], abis["Vault"]])
        self.engine = Abi(s.engine.address, abis["MarginEngine"])
        self.grid_abi = Abi(s.engine.address, abis["IScenarioGrid"])
        self.lens = Abi(s.lens.address, abis["Lens"])
        self.router_feeds = {self.addr[k]: (self.addr[k], self.feeds[k].address.lower()) for k in BASE}

    # ----------------------------------------------------------------------------------------- driving

    def push_prices(self) -> None:
        for symbol in BASE:
            if symbol == "USDC":
                continue
            factor = self.rng.choice((0.3, 0.5, 0.7, 0.85, 0.95, 1.0, 1.05, 1.2, 1.5, 2.0))
            base = BASE[symbol][2]
            usd = min(max(self.prices[symbol] / WAD * factor, base * 0.1), base * 10)
            answer = max(int(usd * 10 ** BASE[symbol][1]), 1)
            self.feeds[symbol].setAnswer(answer, sender=self.admin)
            self.prices[symbol] = answer * 10 ** (18 - BASE[symbol][1])
        usdc = self.feeds["USDC"]
        usdc.setAnswer(usdc.latestRoundData()[1], sender=self.admin)  # a fresh round at the same price

    def random_grid(self) -> None:
        if self.rng.random() < 0.35:
            self.node.send(self.admin.address, self.grid_abi("setGrid", 0, 0, [], []))
            self.grid = None
            return
        count = self.rng.randint(1, 12)
        cols = {k: [self.rng.randint(300_000, 1_800_000) for _ in range(count)] for k in BASE}
        scale = self.rng.choice((WAD, 9 * 10**17, 8 * 10**17))
        order = ["WETH", "WBTC", "LINK", "USDC", "GBPT"]
        self.node.send(
            self.admin.address,
            self.grid_abi("setGrid", count, scale, [self.addr[k] for k in order], [pack(cols[k]) for k in order]),
        )
        self.grid = risk.GridRule(
            count,
            scale,
            {self.addr[k]: tuple(cols[k]) for k in COLLATERAL},
            tuple(cols["USDC"]),
            {self.addr["GBPT"]: tuple(cols["GBPT"])},
        )

    def open_accounts(self) -> list[tuple[str, int]]:
        """Deposits and borrows as the mirror allows (a random share of the borrowing power left per debt)."""
        accts = []
        for owner in self.owners:
            for sub in range(SUBS):
                held = self.rng.sample(COLLATERAL, self.rng.randint(1, 3))
                for symbol in held:
                    usd = 10 ** self.rng.uniform(3, 5.5)
                    amount = max(int(usd / (self.prices[symbol] / WAD) * 10 ** BASE[symbol][0]), 1)
                    self.s.engine.deposit(owner, sub, self.tokens[symbol], amount, sender=owner)
                accts.append((owner.address.lower(), sub))
                for symbol in self.rng.sample(DEBTS, self.rng.randint(1, 4)):
                    self.read_state([accts[-1]])
                    h = self.strict(accts[-1]).health
                    room_usd = (h.ltv_weighted - h.debt_value) / WAD * self.rng.uniform(0.2, 0.6)
                    amount = int(room_usd / (self.prices[symbol] / WAD) * 10 ** BASE[symbol][0])
                    if amount < max(self.min_debt[symbol], 1):
                        continue
                    call = self.engine("borrowAsset", sub, self.addr[symbol], amount, owner.address)
                    status = self.node.calls([Call(call.to, call.data, call.outputs, owner.address.lower())])[0]
                    assert status[0] == "ok", f"borrowAsset {symbol} {amount} within the mirror's power: {status}"
                    self.sync()
                    self.node.send(owner.address, call)
        return accts

    def sync(self) -> None:
        """The frozen clock at the latest block's timestamp (ape's own transactions moved it)."""
        latest = int(self.node.rpc("eth_getBlockByNumber", ["latest", False])["timestamp"], 16)
        self.node.now = max(self.node.now, latest)

    # ------------------------------------------------------------------------------------ the mirror's inputs

    def read_state(self, accts: list[tuple[str, int]]) -> None:
        rows = self.node.value(self.lens("debts"))
        assert [r[0][0] for r in rows] == [self.vaults[k].address.lower() for k in DEBTS]
        self.indexes = {k: int(r[1]) for k, r in zip(DEBTS, rows, strict=True)}
        owners, subs = [o for o, _ in accts], [s for _, s in accts]
        scaled = self.node.value(self.lens("accountDebts", owners, subs))
        calls = [self.engine("collateralOf", o, s, self.addr[k]) for o, s in accts for k in COLLATERAL]
        bals = [v for _, v in self.node.calls(calls)]
        self.balances, self.scaled = {}, {}
        for i, acct in enumerate(accts):
            self.balances[acct] = {self.addr[k]: int(bals[3 * i + j]) for j, k in enumerate(COLLATERAL)}
            self.scaled[acct] = {k: int(v) for k, v in zip(DEBTS, scaled[i], strict=True)}

    def debts(self, acct: tuple[str, int]) -> dict[str, risk.DebtLeg]:
        return {
            self.addr[k]: risk.DebtLeg(
                self.scaled[acct][k], self.indexes[k], self.prices[k], BASE[k][0], self.min_debt[k]
            )
            for k in DEBTS
        }

    def prices_by_addr(self) -> dict[str, int]:
        return {self.addr[k]: self.prices[k] for k in COLLATERAL}

    def strict(self, acct: tuple[str, int]) -> risk.Valuation:
        return risk.valuation_of(
            self.balances[acct],
            self.prices_by_addr(),
            self.assets,
            self.debts(acct),
            0,
            self.grid,
            self.addr["USDC"],
            lenient=False,
        )


def test_several_debts_mirror_matches_the_engine_to_the_wei(project, chain, accounts, admin, lender) -> None:
    target, seed = _profile()
    rng = random.Random(seed)
    tally = Tally()
    started = time.monotonic()
    m = Market(project, chain, accounts, admin, lender, rng)
    m.node.now = int(m.node.rpc("eth_getBlockByNumber", ["latest", False])["timestamp"], 16) + 1
    accts = m.open_accounts()
    usdc = m.addr["USDC"]
    while tally.states < target:
        m.sync()
        m.node.now += rng.choice((DAY, 7 * DAY, 30 * DAY))
        m.node.mine()
        m.push_prices()
        m.sync()
        if rng.random() < 0.6:
            m.random_grid()
        m.read_state(accts)
        prices = m.prices_by_addr()
        checks: list[tuple[str, Any, Any]] = []
        calls = []
        for acct in accts:
            debts, bal = m.debts(acct), m.balances[acct]
            value = partial(risk.valuation_of, bal, prices, m.assets, debts, m.params.min_discount, m.grid, usdc)
            for view, lenient in (("accountHealth", False), ("liquidationHealth", True)):
                calls.append(m.engine(view, *acct))
                checks.append((view, acct, mirror(lambda v=value, le=lenient: v(lenient=le).health, m.router_feeds)))
            tally.states += 1
            lenient_v = mirror(value, m.router_feeds)
            liquidatable = lenient_v[0] == "ok" and risk.is_liquidatable(risk.Health(*lenient_v[1][0]))
            if not liquidatable and rng.random() > 0.05:
                continue
            quote = partial(risk.liquidation_of, bal, prices, m.assets, debts)
            for d in DEBTS:
                owed = m.scaled[acct][d]
                for c in COLLATERAL:
                    for amount in {1, max(owed // 2, 1), owed, MAX_UINT}:
                        calls.append(m.engine("previewLiquidationDebt", *acct, m.addr[d], m.addr[c], amount))
                        q = partial(quote, m.addr[d], m.addr[c], amount, m.params, m.grid, usdc)
                        checks.append(("quote", acct, mirror(lambda q=q: q().quote, m.router_feeds)))
            calls.append(m.engine("writeOff", *acct, sender=m.stranger))
            offs = partial(risk.write_off_of, bal, prices, m.assets, debts, m.params, m.grid, usdc)
            bad = partial(risk.to_assets_up, index=m.indexes["USDC"])
            checks.append(("writeOff", acct, mirror(lambda o=offs, b=bad: b(o().get(usdc, 0)), m.router_feeds)))
        chain_out = m.node.calls(calls)
        for (what, acct, mirrored), chained in zip(checks, chain_out, strict=True):
            if what == "quote":
                tally.quotes += 1
            if tally.check(f"{what} {acct}", chained, mirrored):
                tally.seen(f"{'grid ' if m.grid else ''}{what}:{chained[0]}")
        # Real liquidations of a few liquidatable accounts: every debt afterwards as the settlement says.
        for acct in rng.sample(accts, len(accts)):
            if tally.liquidations >= 3 * (tally.states // len(accts) + 1):
                break
            debts, bal = m.debts(acct), m.balances[acct]
            owed = [d for d in DEBTS if m.scaled[acct][d]]
            held = [c for c in COLLATERAL if bal[m.addr[c]]]
            if not owed or not held:
                continue
            d, c = rng.choice(owed), rng.choice(held)
            amount = rng.choice((MAX_UINT, max(m.scaled[acct][d] // 3, 1)))
            try:
                st = risk.liquidation_of(
                    bal, prices, m.assets, debts, m.addr[d], m.addr[c], amount, m.params, m.grid, usdc
                )
            except risk.ContractRevert:
                continue
            before = m.node.value(m.engine("liquidationHealth", *acct))[5]
            m.node.send(
                m.liquidator.address,
                m.engine("liquidateDebt", *acct, m.addr[d], m.addr[c], amount, 0, m.liquidator.address, b""),
            )
            m.read_state([acct])
            for k in DEBTS:
                taken = st.written_off.get(m.addr[k], 0) + (st.scaled_repaid if k == d else 0)
                want = debts[m.addr[k]].scaled - taken
                tally.check(f"liquidated {acct} {k}", plain(m.scaled[acct][k]), want)
            # The invariant beside the mirror: no liquidation lowers the account's health, whichever debt it repays.
            after = m.node.value(m.engine("liquidationHealth", *acct))[5]
            tally.check(f"health kept by liquidating {acct} {d} with {c}", after >= before, True)
            tally.liquidations += 1
            tally.seen(f"{'grid ' if m.grid else ''}liquidated" + (" with write-off" if st.written_off else ""))
            m.read_state(accts)
    elapsed = time.monotonic() - started
    outcomes = " ".join(f"{k}={v}" for k, v in sorted(tally.outcomes.items()))
    print(
        f"\nseveral-debt differential: seed={seed} states={tally.states} quotes={tally.quotes} "
        f"liquidations={tally.liquidations} mismatches={len(tally.mismatches)} in {elapsed:.0f}s; {outcomes}"
    )
    assert not tally.mismatches, "\n".join(tally.mismatches[:20])
    if target >= DEFAULT_STATES:
        wanted = [
            "accountHealth:ok",
            "quote:ok",
            "quote:NothingToRepay",
            "quote:NotLiquidatable",
            "quote:NothingSeized",
            "grid quote:ok",
            "grid accountHealth:ok",
            "writeOff:NotInsolvent",
            "liquidated",
        ]
        missing = [k for k in wanted if k not in tally.outcomes]
        assert not missing, f"never reached: {missing}"
        assert tally.liquidations >= 10
