"""Differential test of keeper/core/risk.py against the deployed contracts on a real Anvil, exact to the wei.

Four markets are deployed, with debt assets of 6, 18, 0 and 24 decimals behind 8- or 18-decimal feeds, each with
seven collaterals of 0, 6, 8, 12, 18, 24 and 36 decimals behind feeds of 0, 8 and 18 decimals, at base prices
from $0.000000000002 to $5,000,000 a token. Many sub-accounts are opened (a few whales whose risk sums overflow
uint256 at some prices, some without debt, the rest borrowing a random share of what the mirror says they can).
Then, round after round, the driver moves every price (the debt asset's too), redraws asset configurations, risk
parameters and the vault's rate model within their on-chain bounds, lets time pass so interest accrues, now and
then breaks a feed for one comparison, liquidates and borrows for real, and compares, at one block:

- every account's `accountHealth` (all six fields, or the exact revert) with `risk.account_health`: one *state*;
- `previewLiquidation` of liquidatable accounts (every held collateral, sometimes one not held, several requested
  amounts including 0, 1, the close-factor limit, a dust-leaving amount and MAX_UINT) and of some healthy ones,
  with `risk.liquidation_quote`, the reverts decoded and compared error name and arguments; with a broken feed,
  the liquidation quotes that value the unpriced collateral at zero;
- `writeOff` (simulated) of every account the mirror finds insolvent and of some covered ones, with
  `risk.write_off`;
- the vault's `borrowIndex`, `borrowRate`, `utilization`, `totalDebt` and `reserve` with `risk.pending`;
- real liquidations and write-offs (`Liquidated` / `BadDebtRealized` events and the account afterwards) with the
  mirror's settlement;
- `risk.max_borrow`: `borrow(max)` simulates fine and `borrow(max + 1)` reverts with the mirror's arguments.

Now and then the admin sets a random scenario grid over every asset (1 to 32 scenarios, multipliers from the
engine's bounds, a random initial scale) or returns to the additive rule, and the risk keeper moves a few columns
with `updateGrid`, which ramps every column over 30 days: every comparison above then runs under the grid in force
at that second (the driver ramps its own copy), `Lens.grid` (what the keeper reads) is checked against it, and the
outcomes are counted apart ("grid quote:ok", ...).

The mirror computes from raw state only (balances, scaled debt, the feeds' answers and the configuration the
driver set); the chain's figures are never fed back into it. The clock is frozen within a round: every
transaction is mined at the round's timestamp, so reads and transactions see the same index and prices.

`CK_DIFF_STATES=N` raises the number of states (default 2,000; every market runs at least `MIN_ROUNDS` rounds,
so the default run compares 2,880), `CK_DIFF_SEED=S` changes the seed. The summary line gives the counts.
"""

from __future__ import annotations

import dataclasses
import math
import os
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import eth_abi
from conftest import MAX_UINT, WAD, abi_type, ck_system, plain
from eth_utils import keccak

from keeper.core import risk
from keeper.core.grid import pack, unpack
from keeper.core.units import RAY

DEFAULT_STATES = 2000
DEFAULT_SEED = 20_250_301
ACCOUNTS = 120  # sub-accounts per market
WHALES = 4
DEBT_FREE = 10
UINT128 = 2**128 - 1
STOCK = 2**200  # token units minted to every actor
TX_GAS = 6_000_000
BATCH_GAS = 1_000_000  # per transaction of a batch: 30 fit in a block
MAX_STALENESS = 2**32 - 1  # feeds never go stale: the clock jumps by up to a year
LIQUIDITY_USD = 300_000_000

# symbol, token decimals, feed decimals, base price (WAD USD per whole token)
ASSETS: tuple[tuple[str, int, int, int], ...] = (
    ("ZERO", 0, 0, 5_000_000 * WAD),
    ("SIX", 6, 8, 5 * 10**16),
    ("EIGHT", 8, 8, 30_000 * WAD),
    ("DUST", 12, 18, 2 * 10**6),
    ("ETH", 18, 18, 2_000 * WAD),
    ("MICRO", 24, 18, 3 * 10**9),
    ("GIANT", 36, 8, 2_000_000 * WAD),
)
# debt decimals, debt feed decimals
MARKETS: tuple[tuple[int, int], ...] = ((6, 8), (18, 18), (0, 18), (24, 8))
MIN_ROUNDS = 6  # per market, whatever the state target
GRID_RAMP = 30 * 86_400  # the risk keeper's grid updates ramp over 30 days: the next rounds land on the ramp

Outcome = tuple[str, tuple[Any, ...]]  # ("ok", value) or (error name, error arguments)


# --------------------------------------------------------------------------------------- raw JSON-RPC


@dataclass(frozen=True)
class Call:
    to: str
    data: str
    outputs: tuple[str, ...]
    sender: str | None = None


class Abi:
    """Calldata for one deployed contract, from its compiled ABI."""

    def __init__(self, address: str, entries: Sequence[dict[str, Any]]) -> None:
        self.address = address
        self.fns: dict[str, tuple[bytes, list[str], tuple[str, ...]]] = {}
        for e in entries:
            if e["type"] == "function":
                inputs = [abi_type(p) for p in e["inputs"]]
                selector = keccak(text=f"{e['name']}({','.join(inputs)})")[:4]
                self.fns[e["name"]] = (selector, inputs, tuple(abi_type(p) for p in e["outputs"]))

    def __call__(self, name: str, *args: Any, sender: str | None = None) -> Call:
        selector, inputs, outputs = self.fns[name]
        return Call(self.address, "0x" + (selector + eth_abi.encode(inputs, list(args))).hex(), outputs, sender)


class Node:
    """Batched `eth_call`s and transactions mined at a frozen timestamp, against the test Anvil."""

    def __init__(self, w3: Any, error_abis: Sequence[Sequence[dict[str, Any]]]) -> None:
        self.w3 = w3
        self.now = 0
        self.errors: dict[bytes, tuple[str, list[str]]] = {keccak(text="Panic(uint256)")[:4]: ("Panic", ["uint256"])}
        for abi in error_abis:
            for e in abi:
                if e["type"] == "error":
                    types = [abi_type(p) for p in e["inputs"]]
                    self.errors[keccak(text=f"{e['name']}({','.join(types)})")[:4]] = (e["name"], types)

    def rpc(self, method: str, params: list[Any]) -> Any:
        resp = self.w3.provider.make_request(method, params)
        assert "error" not in resp, f"{method}: {resp['error']}"
        return resp["result"]

    def decode_revert(self, error: dict[str, Any]) -> Outcome:
        data = error.get("data")
        if not isinstance(data, str) or len(data) < 10:
            return f"<revert without data: {error.get('message')}>", ()
        raw = bytes.fromhex(data[2:])
        name, types = self.errors.get(raw[:4], (f"<unknown error {data[:10]}>", []))
        return name, plain(eth_abi.decode(types, raw[4:])) if types else ()

    def calls(self, calls: Sequence[Call]) -> list[Outcome]:
        """All calls at the latest block, each as ("ok", decoded) or the decoded revert."""
        out: list[Outcome] = []
        for start in range(0, len(calls), 500):
            chunk = calls[start : start + 500]
            reqs = []
            for c in chunk:
                tx = {"to": c.to, "data": c.data, **({"from": c.sender} if c.sender else {})}
                reqs.append(("eth_call", [tx, "latest"]))
            for c, resp in zip(chunk, self.w3.provider.make_batch_request(reqs), strict=True):
                if "error" in resp:
                    out.append(self.decode_revert(resp["error"]))
                else:
                    values = eth_abi.decode(list(c.outputs), bytes.fromhex(resp["result"][2:]))
                    out.append(("ok", plain(values[0] if len(values) == 1 else values)))
        return out

    def value(self, call: Call) -> Any:
        status, value = self.calls([call])[0]
        assert status == "ok", f"call reverted: {status}{value}"
        return value

    def send(self, sender: str, call: Call) -> dict[str, Any]:
        """Mines `call` at `now`; the transaction must succeed. Returns the receipt."""
        self.rpc("evm_setNextBlockTimestamp", [self.now])
        tx_hash = self.rpc("eth_sendTransaction", [{"from": sender, "to": call.to, "data": call.data,
                                                   "gas": hex(TX_GAS)}])  # fmt: skip
        receipt = self.rpc("eth_getTransactionReceipt", [tx_hash])
        while receipt is None:
            time.sleep(0.001)
            receipt = self.rpc("eth_getTransactionReceipt", [tx_hash])
        assert receipt["status"] == "0x1", f"transaction to {call.to} reverted: {call.data[:10]}"
        return dict(receipt)

    def send_all(self, txs: Sequence[tuple[str, Call]]) -> None:
        """Mines `txs` (sender, call) in as few blocks at `now` as the gas limit allows; all must succeed. Only
        one sender's transactions keep their order, so a batch holds transactions that do not depend on
        another sender's."""
        if not txs:
            return
        nonces = {who: int(self.rpc("eth_getTransactionCount", [who, "pending"]), 16) for who in {w for w, _ in txs}}
        reqs = []
        for who, c in txs:
            reqs.append(("eth_sendTransaction", [{"from": who, "to": c.to, "data": c.data, "gas": hex(BATCH_GAS),
                                                  "nonce": hex(nonces[who])}]))  # fmt: skip
            nonces[who] += 1
        self.rpc("evm_setAutomine", [False])
        try:
            sent = self.w3.provider.make_batch_request(reqs)
            assert all("result" in r for r in sent), [r["error"] for r in sent if "error" in r][:3]
            hashes = [r["result"] for r in sent]
            receipts: list[Any] = [None]
            while any(r is None for r in receipts):
                self.mine()
                answers = self.w3.provider.make_batch_request([("eth_getTransactionReceipt", [h]) for h in hashes])
                receipts = [a.get("result") for a in answers]
        finally:
            self.rpc("evm_setAutomine", [True])
        failed = [c.data[:10] for (_, c), r in zip(txs, receipts, strict=True) if r["status"] != "0x1"]
        assert not failed, f"batched transactions reverted: {failed}"

    def mine(self) -> None:
        """An empty block at `now`, so that reads see the current timestamp."""
        self.rpc("evm_setNextBlockTimestamp", [self.now])
        self.rpc("evm_mine", [])


def mirror(fn: Callable[[], Any], feeds: dict[Any, tuple[str, str]]) -> Outcome:
    """The mirror's answer in the form `Node.calls` gives the chain's. A price the mirror lacks stands for a
    broken feed: `feeds` maps the asset key to the (token, feed) of the router's FeedCallFailed."""
    try:
        value = fn()
    except risk.MathPanic as exc:
        return "Panic", (exc.code,)
    except risk.PriceUnavailable as exc:
        return "FeedCallFailed", feeds[exc.asset]
    except risk.LiquidationRevert as exc:
        return type(exc).__name__, plain(exc.args)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.astuple(value)
    return "ok", value


# ------------------------------------------------------------------------------------------ the driver


@dataclass
class Tally:
    states: int = 0
    quotes: int = 0
    liquidations: int = 0
    borrow_checks: int = 0
    vault_checks: int = 0
    max_index: int = 0
    mismatches: list[str] = field(default_factory=list)
    outcomes: dict[str, int] = field(default_factory=dict)

    def check(self, what: str, chain: Any, mirrored: Any) -> bool:
        if chain != mirrored:
            self.mismatches.append(f"{what}: chain {chain} != mirror {mirrored}")
            return False
        return True

    def seen(self, key: str) -> None:
        self.outcomes[key] = self.outcomes.get(key, 0) + 1


@dataclass
class Acct:
    owner: str
    sub: int
    balances: dict[str, int] = field(default_factory=dict)  # token (lower-case) -> units, as read
    scaled: int = 0


def log_uniform(rng: random.Random, lo: float, hi: float) -> float:
    return math.exp(rng.uniform(math.log(lo), math.log(hi)))


def scaled_by(rng: random.Random, base: int, lo: float, hi: float) -> int:
    """`base` times a log-uniform factor, with random low digits so that divisions are rarely exact."""
    value = base * int(log_uniform(rng, lo, hi) * 10**9) // 10**9
    return max(1, value + rng.randrange(value // 1000 + 1))


class Campaign:
    def __init__(self, node: Node, abis: dict[str, Any], dep: Any, actors: dict[str, Any], rng: random.Random,
                 tally: Tally, debt_feed_decimals: int) -> None:  # fmt: skip
        self.node, self.rng, self.tally = node, rng, tally
        c = dep.contracts
        # The grid's governance is served at the engine's address (its fallback runs IScenarioGrid in the module).
        self.engine = Abi(c["MarginEngine"]["address"], [*abis["MarginEngine"], *abis["IScenarioGrid"]])
        self.router = Abi(c["OracleRouter"]["address"], abis["OracleRouter"])
        self.vault = Abi(c["Vault"]["address"], abis["Vault"])
        self.lens = Abi(c["Lens"]["address"], abis["Lens"])
        self.admin: str = actors["admin"]
        self.lender: str = actors["lender"]
        self.liquidator: str = actors["liquidator"]
        self.owners: list[str] = actors["owners"]
        self.debt_token = dep.debt["token"].lower()
        self.debt_erc20 = Abi(dep.debt["token"], abis["MockERC20"])
        self.debt_feed = Abi(dep.debt["feed"], abis["MockAggregator"])
        self.debt_decimals: int = dep.debt["decimals"]
        self.debt_feed_decimals = debt_feed_decimals
        self.tokens: list[str] = [a["token"].lower() for a in dep.assets]
        self.erc20 = {t: Abi(a["token"], abis["MockERC20"]) for t, a in zip(self.tokens, dep.assets, strict=True)}
        self.feeds = {t: Abi(a["feed"], abis["MockAggregator"]) for t, a in zip(self.tokens, dep.assets, strict=True)}
        spec = {s: (d, fd, p) for s, d, fd, p in ASSETS}
        self.decimals = {t: spec[a["symbol"]][0] for t, a in zip(self.tokens, dep.assets, strict=True)}
        self.feed_decimals = {t: spec[a["symbol"]][1] for t, a in zip(self.tokens, dep.assets, strict=True)}
        self.base = {t: spec[a["symbol"]][2] for t, a in zip(self.tokens, dep.assets, strict=True)}
        self.symbol = {t: a["symbol"] for t, a in zip(self.tokens, dep.assets, strict=True)}
        self.prices: dict[str, int] = {}  # what the router will report, computed from the pushed answers
        self.debt_price: int | None = WAD
        self.feed_of: dict[Any, tuple[str, str]] = {t: (t, self.feeds[t].address.lower()) for t in self.tokens}
        self.feed_of[risk.DEBT_ASSET] = (self.debt_token, self.debt_feed.address.lower())
        self.configs: dict[str, risk.AssetRisk] = {}
        self.params = risk.RiskParams(0, 0, 0, 0)
        self.model = risk.RateModel(0, 0, 0, WAD // 2)
        self.reserve_factor = 0
        self.supplied = dict.fromkeys(self.tokens, 0)
        self.txs: list[tuple[str, Call]] = []  # queued, mined by `flush`
        self.accounts: list[Acct] = []
        # The vault as of its last accrual (always at the previous round's timestamp).
        self.stored_index = RAY
        self.last_accrual = 0
        self.stored_reserve = 0
        self.index = RAY  # the mirror's index at `now`
        # The scenario grid the driver set (docs/portfolio-margin.md): count 0 is the additive rule. Columns are
        # per token (the debt token's too), one multiplier in millionths per scenario; a ramp moves every column
        # from `ramp_from` to `grid_target` over [ramp_start, ramp_end].
        self.grid_count = 0
        self.grid_scale = WAD
        self.grid_target: dict[str, list[int]] = {}
        self.ramp_from: dict[str, list[int]] = {}
        self.ramp_start = self.ramp_end = 0
        self.grid_bounds_set = False
        self.rounds = 0

    # ------------------------------------------------------------------------------------ admin moves

    def push_price(self, token: str, price: int) -> None:
        """Pushes `price` (WAD) as an answer in the feed's decimals; remembers what the router will report."""
        decimals = self.debt_feed_decimals if token == self.debt_token else self.feed_decimals[token]
        answer = max(1, price // 10 ** (18 - decimals))
        feed = self.debt_feed if token == self.debt_token else self.feeds[token]
        self.txs.append((self.admin, feed("setAnswer", answer)))
        reported = risk.scale_answer(answer, decimals)
        if token == self.debt_token:
            self.debt_price = reported
        else:
            self.prices[token] = reported

    def random_config(self, token: str) -> None:
        rng = self.rng
        lt = rng.choice([rng.randrange(3 * WAD // 10, 95 * WAD // 100), 95 * WAD // 100, WAD // 2])
        ltv = rng.choice([rng.randrange(WAD // 10, lt), lt - 1])
        top = min(risk.MAX_DISCOUNT, (WAD - 1) * WAD // lt - WAD)
        while risk.w_mul_up(lt, WAD + top) >= WAD:
            top -= 1
        discount = rng.choice([0, top, rng.randrange(top + 1)])
        self.txs.append((self.admin, self.engine("setAssetConfig", token, ltv, lt, discount, UINT128)))
        self.configs[token] = risk.AssetRisk(self.decimals[token], ltv, lt, discount)

    def random_params(self) -> None:
        rng = self.rng
        unit = 10**self.debt_decimals
        params = risk.RiskParams(
            min_discount=rng.choice([0, risk.MAX_MIN_DISCOUNT, rng.randrange(risk.MAX_MIN_DISCOUNT)]),
            full_close_health=rng.choice([0, WAD, rng.randrange(WAD // 2, WAD)]),
            full_close_debt_value=rng.choice([0, int(log_uniform(rng, 1, 1e6) * WAD)]),
            min_debt=rng.choice([0, 1, int(log_uniform(rng, 0.01, 5_000) * unit)]),
        )
        if rng.random() < 0.4:
            # The 50 % close factor of some liquidatable account, raised to its whole debt by the dust rule.
            params = dataclasses.replace(params, full_close_health=0, full_close_debt_value=0,
                                         min_debt=self.debt_near_half())  # fmt: skip
        self.txs.append((self.admin, self.engine("setRiskParams", dataclasses.astuple(params))))
        self.params = params

    def debt_near_half(self) -> int:
        """A minimum debt above half of some liquidatable account's debt (0 if there is none)."""
        debts = []
        for acct in self.accounts:
            try:
                h = self.health(acct)
            except risk.ContractRevert:
                continue
            if risk.is_liquidatable(h) and h.debt >= 2:
                debts.append(h.debt)
        if not debts:
            return 0
        # From the larger debts: every liquidatable account owing less than about twice it is raised too.
        debt = self.rng.choice(sorted(debts)[len(debts) // 2 :])
        return self.rng.randint(debt // 2 + 1, debt)

    def random_rate_model(self) -> None:
        """Called right after an accrual at `now`, so the change affects only the time after it."""
        rng = self.rng
        model = risk.RateModel(
            base_rate=rng.randrange(WAD),
            slope1=rng.randrange(2 * WAD),
            slope2=rng.randrange(5 * WAD),
            kink=rng.randrange(WAD // 20, 95 * WAD // 100),
        )
        reserve_factor = rng.randrange(WAD // 2 + 1)
        self.txs.append((self.admin, self.vault("setRateModel", dataclasses.astuple(model), reserve_factor)))
        self.model, self.reserve_factor = model, reserve_factor

    def random_column(self, token: str, count: int) -> list[int]:
        """Multipliers (millionths) for one asset: collateral mostly falls (0.2x to 1.1x), the debt mostly rises
        (0.9x to 2x); now and then the bounds of the engine (0.0001x, 100x)."""
        rng = self.rng
        debt = token == self.debt_token
        lo, hi = (900_000, 2_000_000) if debt else (200_000, 1_100_000)
        return [rng.choice([rng.randint(lo, hi)] * 18 + [1_000_000, 100, 100_000_000]) for _ in range(count)]

    def random_grid(self, additive: bool) -> None:
        """Admin `setGrid`: a random grid over every listed asset and the debt asset, or back to additive."""
        rng = self.rng
        count = 0 if additive else rng.choice([1, 32, rng.randint(1, 32), rng.randint(1, 8)])
        scale = rng.choice([WAD, rng.randrange(WAD // 2, WAD)])
        tokens = [*self.tokens, self.debt_token]
        columns = {t: self.random_column(t, count) for t in tokens}
        self.flush()
        self.node.send(self.admin, self.engine("setGrid", count, scale, tokens, [pack(columns[t]) for t in tokens]))
        self.grid_count, self.grid_scale = count, scale
        self.grid_target, self.ramp_from = columns, dict(columns)
        self.ramp_start = self.ramp_end = 0
        self.tally.seen("grid:set" if count else "grid:additive")

    def update_grid(self) -> None:
        """The risk keeper's `updateGrid` of some columns: every column then ramps from the one in force now."""
        rng = self.rng
        if not self.grid_bounds_set:
            # Every multiplier allowed, no step limit worth the name: the ramp is what is under test here.
            tokens = [*self.tokens, self.debt_token]
            lower, upper = pack([100] * 32), pack([100_000_000] * 32)
            self.flush()  # the next two write dozens of slots: over a batched transaction's gas, sent alone
            self.node.send(self.admin, self.engine("grantRole", keccak(text="RISK_KEEPER_ROLE"), self.admin))
            self.node.send(self.admin, self.engine("setGridBounds", tokens, [lower] * len(tokens),
                                                   [upper] * len(tokens), (100_000_000, 0, GRID_RAMP)))  # fmt: skip
            self.grid_bounds_set = True
        in_force = self.grid_columns()
        moved = rng.sample([*self.tokens, self.debt_token], rng.randint(1, 3))
        target = dict(self.grid_target)
        for t in moved:
            target[t] = self.random_column(t, self.grid_count)
        self.flush()
        self.node.send(self.admin, self.engine("updateGrid", moved, [pack(target[t]) for t in moved]))
        self.ramp_from, self.grid_target = in_force, target
        self.ramp_start, self.ramp_end = self.node.now, self.node.now + GRID_RAMP
        self.tally.seen("grid:ramp")

    def grid_columns(self) -> dict[str, list[int]]:
        """Every column in force at `now`: on the ramp's line, each step rounded down (towards `ramp_from`)."""
        now = self.node.now
        if now >= self.ramp_end:
            return dict(self.grid_target)
        elapsed, span = now - self.ramp_start, self.ramp_end - self.ramp_start
        return {t: [a + (b - a) * elapsed // span if b >= a else a - (a - b) * elapsed // span
                    for a, b in zip(self.ramp_from[t], col, strict=True)]
                for t, col in self.grid_target.items()}  # fmt: skip

    def grid(self) -> risk.GridRule | None:
        if not self.grid_count:
            return None
        cols = self.grid_columns()
        return risk.GridRule(self.grid_count, self.grid_scale, {t: tuple(cols[t]) for t in self.tokens},
                             tuple(cols[self.debt_token]))  # fmt: skip

    def move_prices(self) -> None:
        for token in self.tokens:
            if self.rng.random() < 0.8:
                self.push_price(token, scaled_by(self.rng, self.base[token], 0.3, 3.0))
        if self.rng.random() < 0.6:
            self.push_price(self.debt_token, self.rng.choice([WAD, scaled_by(self.rng, WAD, 0.3, 3.0)]))

    # ------------------------------------------------------------------------------------------ setup

    def flush(self) -> None:
        self.node.send_all(self.txs)
        self.txs = []

    def setup(self) -> None:
        rng = self.rng
        assert list(self.node.value(self.engine("assetList"))) == self.tokens  # Lens balances come in this order
        for token in [*self.tokens, self.debt_token]:
            base = WAD if token == self.debt_token else self.base[token]
            feed = self.debt_feed if token == self.debt_token else self.feeds[token]
            self.txs.append((self.admin, self.router("setFeed", token, feed.address, MAX_STALENESS,
                                                     max(1, base // 10**4), min(UINT128, base * 10**4))))  # fmt: skip
        for token in self.tokens:
            self.random_config(token)
            self.push_price(token, self.base[token])
        self.push_price(self.debt_token, WAD)
        self.random_params()
        self.random_rate_model()
        for who in self.owners:
            for token in self.tokens:
                self.txs.append((who, self.erc20[token]("mint", who, STOCK)))
                self.txs.append((who, self.erc20[token]("approve", self.engine.address, MAX_UINT)))
        for who, spender in ((self.liquidator, self.engine.address), (self.lender, self.vault.address)):
            self.txs.append((who, self.debt_erc20("mint", who, STOCK)))
            self.txs.append((who, self.debt_erc20("approve", spender, MAX_UINT)))
        self.txs.append((self.lender, self.vault("deposit", LIQUIDITY_USD * 10**self.debt_decimals, self.lender)))
        self.flush()
        for i in range(ACCOUNTS):
            acct = Acct(self.owners[i % len(self.owners)], i // len(self.owners))
            self.accounts.append(acct)
            if i < WHALES:
                zero = self.tokens[0]
                self.deposit(acct, zero, rng.randrange(10**34, 10**35))
            for token in rng.sample(self.tokens, rng.choice([1, 1, 2, 3, 4])):
                self.deposit(acct, token, self.units_worth(token, log_uniform(rng, 10, 1e7)))
        self.flush()
        self.read_accounts()
        self.index = self.vault_index()
        plans = [(a, rng.choice([1.0, rng.uniform(0.3, 1.0), rng.uniform(0.8, 1.0)])) for a in self.accounts]
        self.borrow_all([p for i, p in enumerate(plans) if not WHALES <= i < WHALES + DEBT_FREE])
        self.end_round()

    def units_worth(self, token: str, usd: float) -> int:
        units = risk.amount_down(int(usd * WAD), self.prices[token], self.decimals[token])
        return max(1, min(units, (UINT128 - self.supplied[token]) // 4))

    def deposit(self, acct: Acct, token: str, amount: int) -> None:
        self.txs.append((acct.owner, self.engine("deposit", acct.owner, acct.sub, token, amount)))
        self.supplied[token] += amount
        acct.balances[token] = acct.balances.get(token, 0) + amount

    def vault_index(self) -> int:
        tsd, idle = self.node.calls([self.vault("totalScaledDebt"), self.vault("idle")])
        acc = risk.pending(self.stored_index, self.node.now - self.last_accrual, tsd[1], idle[1], self.model,
                           self.reserve_factor)  # fmt: skip
        return acc.index

    def read_accounts(self) -> None:
        owners = [a.owner for a in self.accounts]
        subs = [a.sub for a in self.accounts]
        for acct, row in zip(self.accounts, self.node.value(self.lens("accounts", owners, subs)), strict=True):
            acct.scaled = row[2]
            acct.balances = {t: b for t, b in zip(self.tokens, row[5], strict=True) if b}

    # ------------------------------------------------------------------------------------------ mirror

    def health(self, acct: Acct) -> risk.Health:
        return risk.account_health(acct.balances, self.prices, self.configs, acct.scaled, self.index,
                                   self.debt_price, self.debt_decimals, self.grid())  # fmt: skip

    def quote(self, acct: Acct, token: str, requested: int) -> risk.Quote:
        return self.settle(acct, token, requested).quote

    def settle(self, acct: Acct, token: str, requested: int) -> risk.Settlement:
        return risk.liquidation(acct.balances, self.prices, self.configs, acct.scaled, self.index,
                                self.debt_price, self.debt_decimals, token, requested, self.params,
                                self.grid())  # fmt: skip

    def valuation(self, acct: Acct) -> risk.Valuation:
        return risk.valuation(acct.balances, self.prices, self.configs, acct.scaled, self.index, self.debt_price,
                              self.debt_decimals, self.params.min_discount, self.grid())  # fmt: skip

    def write_off(self, acct: Acct) -> tuple[int, int]:
        return risk.write_off(acct.balances, self.prices, self.configs, acct.scaled, self.index, self.debt_price,
                              self.debt_decimals, self.params, self.grid())  # fmt: skip

    # ------------------------------------------------------------------------------------------ rounds

    def check_vault(self) -> None:
        """The vault's interest views against `risk.pending` from the state of the last accrual."""
        node, t = self.node, self.tally
        names = ("totalScaledDebt", "idle", "borrowIndex", "borrowRate", "utilization", "totalDebt", "reserve")
        got = dict(zip(names, (v for _, v in node.calls([self.vault(n) for n in names])), strict=True))
        acc = risk.pending(self.stored_index, node.now - self.last_accrual, got["totalScaledDebt"], got["idle"],
                           self.model, self.reserve_factor)  # fmt: skip
        debt = risk.to_assets_up(got["totalScaledDebt"], acc.index)
        mirrored = {
            "totalScaledDebt": got["totalScaledDebt"],
            "idle": got["idle"],
            "borrowIndex": acc.index,
            "borrowRate": risk.borrow_rate(self.model, debt, got["idle"]),
            "utilization": risk.utilization(debt, got["idle"]),
            "totalDebt": debt,
            "reserve": self.stored_reserve + acc.to_reserve,
        }
        word = int(node.rpc("eth_getStorageAt", [self.vault.address, hex(risk.VAULT_ACCRUAL_SLOT), "latest"]), 16)
        stored = risk.StoredAccrual(self.stored_index, self.last_accrual, self.reserve_factor)
        t.check("vault accrual slot", risk.StoredAccrual.unpack(word), stored)
        t.vault_checks += 1
        t.max_index = max(t.max_index, acc.index)
        t.check(f"vault after {node.now - self.last_accrual}s", got, mirrored)
        self.index = acc.index

    def compare_round(self) -> None:
        node, t, rng = self.node, self.tally, self.rng
        self.flush()
        self.read_accounts()
        prices = node.calls([self.router("price", tok) for tok in [*self.tokens, self.debt_token]])
        known = {**self.prices, risk.DEBT_ASSET: self.debt_price}
        t.check("router prices", prices, [("ok", known[k]) if known.get(k) else ("FeedCallFailed", self.feed_of[k])
                                          for k in [*self.tokens, risk.DEBT_ASSET]])  # fmt: skip
        rule = self.grid()
        tag = "" if rule is None else "grid "
        if rule is not None:
            # What the keeper reads (Lens.grid, unpacked as keeper.chain.reads does) is the grid the driver set and
            # ramped.
            count, scale, _, _, columns = node.value(self.lens("grid"))
            cols = [unpack(c, count) for c in columns]
            read = risk.GridRule(count, scale, dict(zip(self.tokens, cols[:-1], strict=True)), cols[-1])
            t.check("Lens.grid", read, rule)
            t.seen("grid:ramping" if self.ramp_start < node.now < self.ramp_end else "grid:in force")
        chain = node.calls([self.engine("accountHealth", a.owner, a.sub) for a in self.accounts])
        lenient_chain = node.calls([self.engine("liquidationHealth", a.owner, a.sub) for a in self.accounts])
        previews: list[tuple[Call, Acct, str, int]] = []
        write_offs: list[tuple[Call, Acct]] = []
        for acct, got, got_lenient in zip(self.accounts, chain, lenient_chain, strict=True):
            want = mirror(lambda a=acct: self.health(a), self.feed_of)
            t.states += 1
            t.seen(f"{tag}health:{want[0]}")
            t.check(f"accountHealth {acct.owner[:8]}/{acct.sub}", got, want)
            lenient = mirror(lambda a=acct: self.valuation(a), self.feed_of)
            t.check(f"liquidationHealth {acct.owner[:8]}/{acct.sub}", got_lenient,
                    (lenient[0], lenient[1][0]) if lenient[0] == "ok" else lenient)  # fmt: skip
            if lenient[0] == "ok" and acct.scaled and (lenient[1][1] < lenient[1][0][4] or rng.random() < 0.05):
                write_offs.append((self.engine("writeOff", acct.owner, acct.sub), acct))
            if lenient[0] != "ok":
                targets = [(self.tokens[0], MAX_UINT)]
            elif risk.is_liquidatable(self.valuation(acct).health):
                targets = self.liquidation_targets(acct)
            elif rng.random() < 0.1:
                targets = [(rng.choice(self.tokens), MAX_UINT)]
            else:
                continue
            if rng.random() < 0.05:
                targets.append((self.debt_token, MAX_UINT))  # not listed
            for token, amount in targets:
                previews.append((self.engine("previewLiquidation", acct.owner, acct.sub, token, amount), acct, token,
                                 amount))  # fmt: skip
        for (_, acct, token, amount), got in zip(previews, node.calls([p[0] for p in previews]), strict=True):
            want = mirror(lambda a=acct, tok=token, r=amount: self.quote(a, tok, r), self.feed_of)
            t.quotes += 1
            t.seen(f"{tag}quote:{want[0]}")
            if want[0] == "ok":
                _, seized, _, cap, bad_debt = want[1]
                t.seen("quote:capped at balance" if seized == acct.balances[token] else "quote:partial seizure")
                v, p = self.valuation(acct), self.params
                if bad_debt:
                    t.seen("quote:bad debt")
                if v.unpriced is not None:
                    t.seen("quote:unpriced collateral at zero")
                elif v.cover < v.health.debt_value:
                    t.seen("quote:written off first")
                h = v.health
                if h.health >= p.full_close_health and h.debt_value > p.full_close_debt_value:
                    t.seen("quote:half close raised to the debt" if cap == h.debt else "quote:half close")
            t.check(f"previewLiquidation {acct.owner[:8]}/{acct.sub} {self.symbol.get(token, token)} {amount}",
                    got, want)  # fmt: skip
        for (_, acct), got in zip(write_offs, node.calls([w[0] for w in write_offs]), strict=True):
            want = mirror(lambda a=acct: self.write_off(a)[1], self.feed_of)
            t.seen(f"writeOff:{want[0]}")
            t.check(f"writeOff {acct.owner[:8]}/{acct.sub}", got, want)

    def compare_with_broken_feed(self, token: str) -> None:
        """One comparison while `token`'s feed reverts: the mirror, given no price for it, must fail exactly
        where the engine does (the router's FeedCallFailed), and compute everything that does not need it."""
        feed = self.debt_feed if token == self.debt_token else self.feeds[token]
        self.txs.append((self.admin, feed("setReverting", True)))
        self.flush()
        saved_prices, saved_debt = dict(self.prices), self.debt_price
        if token == self.debt_token:
            self.debt_price = None
        else:
            del self.prices[token]
        self.compare_round()
        self.prices, self.debt_price = saved_prices, saved_debt
        self.txs.append((self.admin, feed("setReverting", False)))

    def liquidation_targets(self, acct: Acct) -> list[tuple[str, int]]:
        rng = self.rng
        h = self.valuation(acct).health
        cap = risk.max_repay(h, self.params)
        amounts = [cap, cap + 1, 1, 0, rng.randint(1, h.debt), h.debt]
        if self.params.min_debt > 1 and h.debt > self.params.min_debt:
            amounts.append(h.debt - self.params.min_debt + 1)
        collaterals = list(acct.balances)
        unheld = [tok for tok in self.tokens if tok not in acct.balances]
        if unheld and rng.random() < 0.3:
            collaterals.append(rng.choice(unheld))
        return [(tok, r) for tok in collaterals for r in [MAX_UINT, *rng.sample(amounts, 2)]]

    def liquidate_some(self) -> None:
        node, t, rng = self.node, self.tally, self.rng
        self.flush()
        candidates = []
        for acct in self.accounts:
            try:
                if risk.is_liquidatable(self.health(acct)):
                    candidates.append(acct)
            except risk.ContractRevert:
                continue
        for acct in rng.sample(candidates, min(len(candidates), rng.randint(1, 4))):
            if rng.random() < 0.2:
                try:
                    off, written = self.write_off(acct)
                except risk.ContractRevert:
                    pass
                else:
                    receipt = node.send(self.liquidator, self.engine("writeOff", acct.owner, acct.sub))
                    t.check(f"writeOff {acct.owner[:8]}/{acct.sub} event", self.engine_events(receipt),
                            {"BadDebtRealized": (written,)})  # fmt: skip
                    acct.scaled -= off
                    t.seen("written off for real")
            token = rng.choice(list(acct.balances))
            requested = rng.choice([MAX_UINT, rng.randint(1, self.health(acct).debt)])
            try:
                settlement = self.settle(acct, token, requested)
            except risk.ContractRevert:
                continue
            q = settlement.quote
            receipt = node.send(self.liquidator, self.engine("liquidate", acct.owner, acct.sub, token, requested, 0,
                                                             self.liquidator, b""))  # fmt: skip
            events = self.engine_events(receipt)
            t.liquidations += 1
            if self.grid_count:
                t.seen("grid:liquidated for real")
            what = f"liquidate {acct.owner[:8]}/{acct.sub} {self.symbol[token]} {requested}"
            t.check(what, events.get("Liquidated"), (q.repaid, q.seized, q.discount))
            t.check(what + " bad debt", events.get("BadDebtRealized"), (q.bad_debt,) if q.bad_debt else None)
            left = {tok: b for tok, b in acct.balances.items() if tok != token or b != q.seized}
            if token in left:
                left[token] -= q.seized
            expected_scaled = acct.scaled - settlement.scaled_repaid - settlement.scaled_written_off
            pos, bal = node.calls([self.engine("position", acct.owner, acct.sub),
                                   self.engine("collateralOf", acct.owner, acct.sub, token)])  # fmt: skip
            t.check(what + " position", (pos[1][0], bal[1]), (expected_scaled, left.get(token, 0)))
            acct.balances, acct.scaled = left, expected_scaled
            self.supplied[token] -= q.seized

    def engine_events(self, receipt: dict[str, Any]) -> dict[str, tuple[int, ...]]:
        liquidated = "0x" + keccak(text="Liquidated(address,address,uint8,address,uint256,uint256,uint256)").hex()
        bad = "0x" + keccak(text="BadDebtRealized(address,uint8,uint256)").hex()
        out: dict[str, tuple[int, ...]] = {}
        for log in receipt["logs"]:
            if log["address"].lower() != self.engine.address.lower():
                continue
            data = bytes.fromhex(log["data"][2:])
            if log["topics"][0] == liquidated:
                out["Liquidated"] = tuple(eth_abi.decode(["address", "uint256", "uint256", "uint256"], data)[1:])
            elif log["topics"][0] == bad:
                out["BadDebtRealized"] = tuple(eth_abi.decode(["uint256"], data))
        return out

    def borrow_all(self, plans: Sequence[tuple[Acct, float]]) -> None:
        """Each account borrows its `fraction` of what the mirror says it can, after checking that bound on-chain:
        `borrow(max + 1)` reverts with the mirror's arguments and `borrow(max)` simulates fine."""
        node, t = self.node, self.tally
        idle = node.value(self.vault("idle"))
        checks: list[tuple[str, Call, Outcome]] = []
        for acct, fraction in plans:
            try:
                top = risk.max_borrow(acct.balances, self.prices, self.configs, acct.scaled, self.index,
                                      self.debt_price, self.debt_decimals, self.params.min_debt,
                                      self.grid())  # fmt: skip
            except risk.ContractRevert:
                continue
            if top == 0:
                continue
            what = f"{acct.owner[:8]}/{acct.sub}"
            over = acct.scaled + risk.to_scaled_up(top + 1, self.index)
            if over <= UINT128:
                h = risk.account_health(acct.balances, self.prices, self.configs, over, self.index, self.debt_price,
                                        self.debt_decimals, self.grid())  # fmt: skip
                want: Outcome = ("InsufficientMargin", (h.ltv_weighted, h.debt_value))
                if h.debt < self.params.min_debt:
                    want = ("DebtBelowMinimum", (h.debt, self.params.min_debt))
                checks.append((f"borrow(max + 1) {what}", self.engine("borrow", acct.sub, top + 1, acct.owner,
                                                                      sender=acct.owner), want))  # fmt: skip
                if top <= idle:
                    checks.append((f"borrow(max) {what}", self.engine("borrow", acct.sub, top, acct.owner,
                                                                      sender=acct.owner), ("ok", ())))  # fmt: skip
                t.borrow_checks += 1
            amount = min(top * round(fraction * 10**6) // 10**6, idle // (2 * len(plans)))
            scaled = acct.scaled + risk.to_scaled_up(amount, self.index) if amount else 0
            if amount and risk.to_assets_up(scaled, self.index) >= self.params.min_debt:
                self.txs.append((acct.owner, self.engine("borrow", acct.sub, amount, acct.owner)))
                acct.scaled = scaled
        for (what, _, want), got in zip(checks, node.calls([c for _, c, _ in checks]), strict=True):
            t.check(what, got, want)
        self.flush()

    def end_round(self) -> None:
        """Accrues at `now` (the next round's interest check starts here), maybe changes the rate model."""
        node = self.node
        self.flush()
        node.send(self.admin, self.vault("accrue"))
        self.stored_index, self.last_accrual = self.index, node.now
        self.stored_reserve = node.value(self.vault("reserve"))
        if self.rng.random() < 0.3:
            self.random_rate_model()
            self.flush()

    def round(self) -> None:
        node, rng = self.node, self.rng
        r = rng.random()
        node.now += 0 if r < 0.3 else rng.randint(1, 3600) if r < 0.6 else rng.randint(3600, 30 * 86400)
        if rng.random() < 0.1:
            node.now += rng.randint(30 * 86400, 365 * 86400)
        node.mine()
        self.check_vault()
        self.move_prices()
        for token in self.tokens:
            if rng.random() < 0.25:
                self.random_config(token)
        if rng.random() < 0.5:
            self.random_params()
        # Every market: a grid from its second round, a ramped update in the third, the additive rule again in the
        # fifth; then at random.
        self.rounds += 1
        if self.rounds == 2 or (self.rounds > 5 and rng.random() < 0.3):
            self.random_grid(additive=False)
        elif self.rounds == 5:
            self.random_grid(additive=True)
        elif self.grid_count and (self.rounds == 3 or (self.rounds > 5 and rng.random() < 0.3)):
            self.update_grid()
        if rng.random() < 0.2:
            self.compare_with_broken_feed(rng.choice([*self.tokens, self.debt_token]))
        else:
            self.compare_round()
        self.liquidate_some()
        borrowers = rng.sample(self.accounts[WHALES + DEBT_FREE :], 10)
        for acct in borrowers:
            if rng.random() < 0.5:
                token = rng.choice(self.tokens)
                self.deposit(acct, token, self.units_worth(token, log_uniform(rng, 10, 1e5)))
        self.flush()
        self.read_accounts()
        self.borrow_all([(a, rng.uniform(0.5, 1.0)) for a in borrowers])
        self.end_round()


def _profile() -> tuple[int, int]:
    states = int(os.environ.get("CK_DIFF_STATES") or DEFAULT_STATES)
    return states, int(os.environ.get("CK_DIFF_SEED") or DEFAULT_SEED)


def _market_config(debt_decimals: int, debt_feed_decimals: int) -> dict[str, Any]:
    assets = []
    for symbol, decimals, feed_decimals, base in ASSETS:
        price = base / WAD
        assets.append({"symbol": symbol, "decimals": decimals, "price": price, "feed_decimals": feed_decimals,
                       "min_price": price / 10, "max_price": price * 10, "ltv": 0.5, "lt": 0.6, "max_discount": 0.1,
                       "supply_cap": 1})  # fmt: skip
    return {
        "debt": {
            "symbol": "USD",
            "decimals": debt_decimals,
            "price": 1.0,
            "feed_decimals": debt_feed_decimals,
            "min_price": 0.1,
            "max_price": 10.0,
        },
        "asset": assets,
        "risk": {"min_discount": 0.005, "full_close_health": 0.95, "full_close_debt_usd": 100, "min_debt": 10},
    }


def test_mirror_matches_contracts_to_the_wei(project, chain, accounts, admin, lender, liquidator) -> None:
    """Random states on two markets: keeper.risk and the contracts agree on every figure and every revert."""
    target, seed = _profile()
    rng = random.Random(seed)
    tally = Tally()
    abis = {name: [e.model_dump(mode="json", by_alias=True) for e in project[name].contract_type.abi]
            for name in ("MarginEngine", "IScenarioGrid", "OracleRouter", "Vault", "Lens", "MockERC20",
                         "MockAggregator")}  # fmt: skip
    node = Node(chain.provider.web3, [abis["MarginEngine"], abis["OracleRouter"], abis["Vault"]])
    actors = {"admin": admin.address, "lender": lender.address, "liquidator": liquidator.address,
              "owners": [accounts[i].address for i in range(5, 10)]}  # fmt: skip
    started = time.monotonic()
    per_market = max(-(-target // len(MARKETS)), MIN_ROUNDS * ACCOUNTS)
    for debt_decimals, debt_feed_decimals in MARKETS:
        cfg = ck_system.parse_config(_market_config(debt_decimals, debt_feed_decimals))
        dep = ck_system.deploy_system(project, chain, admin, cfg, "test")
        node.now = int(node.rpc("eth_getBlockByNumber", ["latest", False])["timestamp"], 16) + 1
        campaign = Campaign(node, abis, dep, actors, rng, tally, debt_feed_decimals)
        campaign.setup()
        goal = tally.states + per_market
        while tally.states < goal:
            campaign.round()
    elapsed = time.monotonic() - started
    outcomes = " ".join(f"{k}={v}" for k, v in sorted(tally.outcomes.items()))
    print(
        f"\nrisk differential: seed={seed} states={tally.states} quotes={tally.quotes} "
        f"liquidations={tally.liquidations} borrow_checks={tally.borrow_checks} vault_checks={tally.vault_checks} "
        f"max index={tally.max_index / 10**27:.3f} mismatches={len(tally.mismatches)} in {elapsed:.0f}s; "
        f"outcomes: {outcomes}"
    )
    assert not tally.mismatches, "\n".join(tally.mismatches[:20])
    assert tally.states >= target
    if target >= DEFAULT_STATES:
        # The default run must reach every branch of the mirror, or a broken branch could pass unseen.
        wanted = [f"health:{k}" for k in ("ok", "Panic", "FeedCallFailed")] + [
            f"quote:{k}"
            for k in ("ok", "Panic", "AssetNotListed", "NotLiquidatable", "ZeroAmount", "LiquidationLeavesDust",
                      "NothingSeized", "capped at balance", "partial seizure", "bad debt", "half close",
                      "half close raised to the debt", "LiquidationLowersHealth", "written off first",
                      "unpriced collateral at zero", "FeedCallFailed")
        ] + ["writeOff:ok", "writeOff:NotInsolvent", "written off for real"] + [
            f"grid {k}" for k in ("health:ok", "quote:ok", "quote:NotLiquidatable", "quote:LiquidationLowersHealth")
        ] + [f"grid:{k}" for k in ("set", "additive", "ramp", "ramping", "liquidated for real")]  # fmt: skip
        missing = [k for k in wanted if k not in tally.outcomes]
        assert not missing, f"never reached: {missing}"
        assert tally.liquidations >= 10
        assert tally.borrow_checks >= 100
        assert tally.max_index > 105 * 10**25  # interest accrued: indexes well above 1
