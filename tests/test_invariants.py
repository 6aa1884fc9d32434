"""Stateful randomised invariant campaign over the whole deployed system on a real Anvil.

A seeded driver runs random sequences of deposits, withdrawals, collateral moves, borrows, repayments (by owners and
third parties), price moves, time skips, liquidations, donations, lender flows and attacks by a stranger. Before
each operation an independent integer mirror of the documented rules predicts its exact outcome (success with the
exact new state, or the exact custom error); after every step the protocol's accounting and safety invariants are
read back from the chain and checked.

The campaign clock is frozen: every block is mined at the campaign's own timestamp, which only moves in explicit
time skips (all feeds are re-pushed after each skip). Reads and the next transaction therefore see the same index
and prices, so predictions never depend on wall-clock time. The hot loop talks raw JSON-RPC to the test Anvil
(batched `eth_call` reads, `eth_sendTransaction` from the node's unlocked dev accounts) because ape's transaction
path is several times slower per call; reverts are decoded from the node's revert data against the contracts' ABIs.

Profiles: the default short profile runs in `make test`; `CK_LONG=1` runs 20,000 steps; `CK_INVARIANT_STEPS=N` and
`CK_SEED=S` override the step count and the seed. Long runs go in episodes of EPISODE_STEPS steps, each restored to
the post-setup state when it ends (ape-foundry's Anvil keeps a step trace of every mined transaction in memory, about
2 MB per step here, so one unbroken 20,000-step chain would need tens of gigabytes). A failure names the seed, the
step and the last operations.
"""

from __future__ import annotations

import math
import os
import random
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import eth_abi
from conftest import MAX_UINT, RAY, WAD, abi_type, plain
from eth_utils import keccak

SHORT_STEPS = 1000
LONG_STEPS = 20_000
EPISODE_STEPS = 1_500  # steps between restores to the post-setup state (bounds the node's memory)
DEFAULT_SEED = 20_240_611
YEAR = 365 * 24 * 3600
TX_GAS = 3_000_000
STOCK_WHOLE_TOKENS = 10**12  # every actor's token stock, in whole tokens
SHARE_PROBE = 10**12  # share amount whose asset value is the tracked share price
SUBS = (0, 1, 2)
UINT128_MAX = 2**128 - 1
HEALTH_FIELDS = ("collateralValue", "ltWeighted", "ltvWeighted", "debt", "debtValue", "health")
HEALTH_NEVER_FALLS = frozenset({"deposit", "repay", "donate", "stranger", "lender", "writeoff"})
NEUTRAL_MARGIN = 10**12  # IMarginEngine.liquidate rule 3: kept below the health-neutral discount


# --------------------------------------------------------------------------------------------- risk math mirror


def mul_div_down(x: int, y: int, d: int) -> int:
    return x * y // d


def mul_div_up(x: int, y: int, d: int) -> int:
    return (x * y + d - 1) // d


def w_mul_down(x: int, y: int) -> int:
    return x * y // WAD


def w_mul_up(x: int, y: int) -> int:
    return mul_div_up(x, y, WAD)


def w_div_down(x: int, y: int) -> int:
    return x * WAD // y


def w_div_up(x: int, y: int) -> int:
    return mul_div_up(x, WAD, y)


def value_down(amount: int, price: int, decimals: int) -> int:
    return amount * price // 10**decimals


def value_up(amount: int, price: int, decimals: int) -> int:
    return mul_div_up(amount, price, 10**decimals)


def amount_down(value: int, price: int, decimals: int) -> int:
    return value * 10**decimals // price


def amount_up(value: int, price: int, decimals: int) -> int:
    return mul_div_up(value, 10**decimals, price)


def to_assets_up(scaled: int, index: int) -> int:
    return mul_div_up(scaled, index, RAY)


def to_scaled_up(assets: int, index: int) -> int:
    return mul_div_up(assets, RAY, index)


def to_scaled_down(assets: int, index: int) -> int:
    return assets * RAY // index


def largest(lo: int, hi: int, ok: Callable[[int], bool]) -> int:
    """Largest x in [lo, hi] with ok(x) for a predicate true up to a point and false after; lo - 1 if none."""
    if not ok(lo):
        return lo - 1
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if ok(mid):
            lo = mid
        else:
            hi = mid - 1
    return lo


# --------------------------------------------------------------------------------------------- raw JSON-RPC layer


@dataclass(frozen=True)
class Fn:
    """One contract function: encodes calldata and decodes return data."""

    address: str
    name: str
    selector: bytes
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    out_params: tuple[dict[str, Any], ...]

    def data(self, *args: Any) -> str:
        return "0x" + (self.selector + eth_abi.encode(list(self.inputs), list(args))).hex()

    def decode(self, raw: str) -> Any:
        """Return data with structs as dicts keyed by field name, so a reordered struct cannot shift values."""
        values = eth_abi.decode(list(self.outputs), bytes.fromhex(raw[2:]))
        named = tuple(_named(v, p) for v, p in zip(values, self.out_params, strict=True))
        return named[0] if len(named) == 1 else named


def _named(value: Any, param: dict[str, Any]) -> Any:
    kind: str = param["type"]
    if kind.startswith("tuple") and kind.endswith("[]"):
        return [_named(v, {**param, "type": kind[:-2]}) for v in value]
    if kind == "tuple":
        return {c["name"]: _named(v, c) for c, v in zip(param["components"], value, strict=True)}
    return value


class Handle:
    """A deployed contract's functions, errors and events, from its compiled ABI."""

    def __init__(self, label: str, contract: Any) -> None:
        self.label = label
        self.address: str = contract.address
        self.abi = [entry.model_dump(mode="json", by_alias=True) for entry in contract.contract_type.abi]
        self._fns: dict[str, Fn] = {}

    def __getattr__(self, name: str) -> Fn:
        if name.startswith("_"):
            raise AttributeError(name)
        if name not in self._fns:
            entries = [e for e in self.abi if e["type"] == "function" and e["name"] == name]
            assert len(entries) == 1, f"{self.label}.{name}: {len(entries)} ABI entries"
            entry = entries[0]
            inputs = tuple(abi_type(p) for p in entry["inputs"])
            selector = keccak(text=f"{name}({','.join(inputs)})")[:4]
            outputs = tuple(abi_type(p) for p in entry["outputs"])
            self._fns[name] = Fn(self.address, name, selector, inputs, outputs, tuple(entry["outputs"]))
        return self._fns[name]


class RevertError(Exception):
    """The node refused a call: the decoded custom error (or Panic / Error) and its arguments."""

    def __init__(self, name: str, args: tuple[Any, ...]) -> None:
        super().__init__(f"{name}{args}")
        self.name = name
        self.args_ = args


@dataclass(frozen=True)
class Event:
    source: str
    name: str
    args: dict[str, Any]


class Node:
    """Batched reads and transactions mined at the frozen campaign clock `now`."""

    def __init__(self, w3: Any, handles: Sequence[Handle]) -> None:
        self.w3 = w3
        self.now = 0
        self.glitches = 0  # revert-without-data answers that a repeated call did not reproduce
        self.errors: dict[bytes, tuple[str, list[str]]] = {
            keccak(text="Panic(uint256)")[:4]: ("Panic", ["uint256"]),
            keccak(text="Error(string)")[:4]: ("Error", ["string"]),
        }
        self.events: dict[tuple[str, str], tuple[str, str, list[dict[str, Any]]]] = {}
        for h in handles:
            for e in h.abi:
                if e["type"] == "error":
                    types = [abi_type(p) for p in e["inputs"]]
                    self.errors[keccak(text=f"{e['name']}({','.join(types)})")[:4]] = (e["name"], types)
                elif e["type"] == "event":
                    sig = f"{e['name']}({','.join(abi_type(p) for p in e['inputs'])})"
                    topic = "0x" + keccak(text=sig).hex()
                    self.events[(h.address.lower(), topic)] = (h.label, e["name"], e["inputs"])

    def rpc(self, method: str, params: list[Any]) -> Any:
        resp = self.w3.provider.make_request(method, params)
        if "error" in resp:
            raise RuntimeError(f"{method} failed: {resp['error']}")
        return resp["result"]

    def _revert(self, error: dict[str, Any]) -> RevertError:
        data = error.get("data")
        if not isinstance(data, str) or len(data) < 10:
            return RevertError(f"<no data: {error}>", ())
        raw = bytes.fromhex(data[2:])
        name, types = self.errors.get(raw[:4], (f"<unknown {data[:10]}>", []))
        return RevertError(name, tuple(plain(v) for v in eth_abi.decode(types, raw[4:])) if types else ())

    def reads(self, calls: Sequence[tuple[Fn, tuple[Any, ...]]]) -> list[Any]:
        reqs = [("eth_call", [{"to": fn.address, "data": fn.data(*args)}, "latest"]) for fn, args in calls]
        out = self.w3.provider.make_batch_request(reqs)
        results = []
        for (fn, _), resp in zip(calls, out, strict=True):
            if "error" in resp:
                raise self._revert(resp["error"])
            results.append(fn.decode(resp["result"]))
        return results

    def read(self, fn: Fn, *args: Any) -> Any:
        return self.reads([(fn, args)])[0]

    def send(self, sender: str, fn: Fn, *args: Any) -> list[Event]:
        """Simulates at the latest block (same clock), raises RevertError if refused, else mines it at `now`."""
        tx = {"from": sender, "to": fn.address, "data": fn.data(*args)}
        resp = self.w3.provider.make_request("eth_call", [tx, "latest"])
        if "error" in resp and not isinstance(resp["error"].get("data"), str):
            # A revert without any revert data is never one of our typed errors; ask the node once more so a
            # transient node hiccup is told apart from a real (and then reproducible) failure.
            time.sleep(0.05)
            retry = self.w3.provider.make_request("eth_call", [tx, "latest"])
            self.glitches += "error" not in retry
            resp = retry
        if "error" in resp:
            raise self._revert(resp["error"])
        self.rpc("evm_setNextBlockTimestamp", [self.now])
        tx_hash = self.rpc("eth_sendTransaction", [{**tx, "gas": hex(TX_GAS)}])
        receipt = self.rpc("eth_getTransactionReceipt", [tx_hash])
        # Automine runs beside the RPC server: wait until the block is mined and is the latest one.
        while receipt is None or int(self.rpc("eth_blockNumber", []), 16) < int(receipt["blockNumber"], 16):
            time.sleep(0.001)
            receipt = self.rpc("eth_getTransactionReceipt", [tx_hash])
        assert receipt["status"] == "0x1", f"{fn.name}{args} simulated fine but reverted when mined"
        return [ev for log in receipt["logs"] if (ev := self._event(log)) is not None]

    def _event(self, log: dict[str, Any]) -> Event | None:
        known = self.events.get((log["address"].lower(), log["topics"][0]))
        if known is None:
            return None
        source, name, inputs = known
        topics = iter(log["topics"][1:])
        data_types = [abi_type(p) for p in inputs if not p.get("indexed")]
        values = iter(eth_abi.decode(data_types, bytes.fromhex(log["data"][2:])))
        args = {}
        for p in inputs:
            if p.get("indexed"):
                args[p["name"]] = plain(eth_abi.decode([abi_type(p)], bytes.fromhex(next(topics)[2:]))[0])
            else:
                args[p["name"]] = plain(next(values))
        return Event(source, name, args)


# --------------------------------------------------------------------------------------------- model


Key = tuple[str, int]  # (owner, subId)


@dataclass(frozen=True)
class Pos:
    scaled: int
    mask: int
    bals: tuple[int, ...]


@dataclass(frozen=True)
class Figures:
    """The engine's AccountHealth fields, in order."""

    collateral: int
    lt_w: int
    ltv_w: int
    debt: int
    debt_value: int
    health: int

    @property
    def liquidatable(self) -> bool:
        return self.debt > 0 and self.lt_w < self.debt_value


@dataclass(frozen=True)
class State:
    """Everything the checks need, read in one batch at the latest block."""

    pos: dict[Key, Pos]
    lens_debt: dict[Key, int]
    lens_bals: dict[Key, tuple[int, ...]]
    health: dict[Key, Figures]
    prices: tuple[int, ...]  # WAD, per collateral in asset order
    debt_price: int
    index: int
    total_scaled: int
    total_debt: int
    total_assets: int
    reserve: int
    idle: int
    share_price: int
    total_shares: int
    lender_shares: int
    lender_max_withdraw: int
    borrow_rate: int
    utilization: int
    supplied: tuple[int, ...]
    engine_bal: tuple[int, ...]
    vault_usdc: int


@dataclass
class Expect:
    """What a step must leave behind; starts as 'nothing changed' and each operation edits it."""

    pos: dict[Key, Pos]
    idle: int
    total_scaled: int
    supplied: list[int]
    engine_bal: list[int]
    vault_usdc: int
    reserve: int
    index: int
    prices: list[int]
    debt_price: int
    lender_shares: int

    @classmethod
    def unchanged(cls, s: State) -> Expect:
        return cls(
            dict(s.pos), s.idle, s.total_scaled, list(s.supplied), list(s.engine_bal), s.vault_usdc, s.reserve,
            s.index, list(s.prices), s.debt_price, s.lender_shares,
        )  # fmt: skip

    def set_balance(self, key: Key, i: int, balance: int) -> None:
        p = self.pos[key]
        bals = (*p.bals[:i], balance, *p.bals[i + 1 :])
        self.pos[key] = replace(p, bals=bals, mask=mask_of(bals))

    def set_scaled(self, key: Key, scaled: int) -> None:
        self.pos[key] = replace(self.pos[key], scaled=scaled)


def mask_of(bals: Sequence[int]) -> int:
    return sum(1 << i for i, b in enumerate(bals) if b)


@dataclass
class Step:
    kind: str
    desc: str
    ok: bool
    expect: Expect
    strict_health: bool = True  # invariant 6: no healthy account may become liquidatable in this step
    donation: bool = False
    socialized: int = 0
    account: Key | None = None  # the account a liquidation or write-off touched


Outcome = tuple[str, tuple[Any, ...]] | None  # None: must succeed; else the exact custom error and arguments
OK: Outcome = None


@dataclass
class Tally:
    ok: Counter[str] = field(default_factory=Counter)
    reverted: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    liquidations: int = 0
    full_seizures: int = 0
    write_offs: int = 0
    written_off_in_liquidation: int = 0
    lowers_health_refused: int = 0
    liveness_checks: int = 0
    bad_debt_events: int = 0
    bad_debt_assets: int = 0
    covered: int = 0
    socialized: int = 0
    fully_covered: int = 0
    max_utilization: int = 0
    settle_checks: int = 0
    episodes: int = 0


# --------------------------------------------------------------------------------------------- the campaign


class Campaign:
    """The driver: picks operations, predicts their outcomes, sends them and checks every invariant after each."""

    def __init__(self, node: Node, h: dict[str, Handle], actors: dict[str, Any], chain: Any, rng: random.Random):
        self.node, self.h, self.chain, self.rng = node, h, chain, rng
        self.engine, self.vault, self.router, self.lens = h["engine"], h["vault"], h["router"], h["lens"]
        self.usdc = h["USDC"]
        self.admin = actors["admin"].address
        self.lender = actors["lender"].address
        self.liquidator = actors["liquidator"].address
        self.stranger = actors["stranger"].address
        self.third = actors["third"].address
        self.owners = [a.address for a in actors["owners"]]
        self.owner_keys: list[Key] = [(o, s) for o in self.owners for s in SUBS]
        self.stranger_keys: list[Key] = [(self.stranger, s) for s in SUBS]
        self.keys = self.owner_keys + self.stranger_keys

        assets = node.read(self.engine.assetList)
        self.assets: list[str] = list(assets)
        self.symbols = [next(sym for sym, hd in h.items() if hd.address.lower() == a.lower()) for a in assets]
        self.tokens = [h[sym] for sym in self.symbols]
        self.feeds = [h[f"feed:{sym}"] for sym in self.symbols]
        self.usdc_feed = h["feed:USDC"]
        n = len(self.assets)
        reads = node.reads(
            [(self.engine.assetConfig, (a,)) for a in assets]
            + [(self.engine.assetSupply, (a,)) for a in assets]
            + [(self.router.feedConfig, (a,)) for a in [*assets, self.usdc.address]]
            + [(fd.latestAnswer, ()) for fd in [*self.feeds, self.usdc_feed]]
            + [(fd.decimals, ()) for fd in [*self.feeds, self.usdc_feed]]
            + [(self.engine.riskParams, ()), (self.vault.rateModel, ()), (self.engine.debtDecimals, ())]
        )
        cfgs, sups = reads[:n], reads[n : 2 * n]
        feed_cfgs = reads[2 * n : 3 * n + 1]
        answers = reads[3 * n + 1 : 4 * n + 2]
        feed_decs = reads[4 * n + 2 : 5 * n + 3]
        params, (model, reserve_factor), self.debt_dec = reads[5 * n + 3 :]
        self.dec = [c["decimals"] for c in cfgs]
        self.ltv = [c["ltv"] for c in cfgs]
        self.lt = [c["lt"] for c in cfgs]
        self.max_disc = [c["maxDiscount"] for c in cfgs]
        self.caps = [x["supplyCap"] for x in sups]
        self.min_discount, self.full_close_health = params["minDiscount"], params["fullCloseHealth"]
        self.full_close_debt_value, self.min_debt = params["fullCloseDebtValue"], params["minDebt"]
        self.base_rate, self.slope1, self.slope2, self.kink = (
            model[k] for k in ("baseRate", "slope1", "slope2", "kink")
        )
        self.reserve_factor = reserve_factor
        # Price paths live in feed-answer units; index n is the debt asset.
        self.answers = list(answers)
        self.initial = list(answers)
        scale = [10 ** (18 - d) for d in feed_decs]
        self.scale = scale
        # Strictly inside the router bounds and within 0.1x..10x of the start (the debt asset stays near its peg).
        self.lo = [max(a // 10, fc["minPrice"] // sc + 1) for a, fc, sc in zip(answers, feed_cfgs, scale, strict=True)]
        self.hi = [min(a * 10, (fc["maxPrice"] - 1) // sc) for a, fc, sc in zip(answers, feed_cfgs, scale, strict=True)]
        self.lo[n] = max(self.lo[n], answers[n] * 7 // 10)
        self.hi[n] = min(self.hi[n], answers[n] * 14 // 10)
        self.tally = Tally()
        self.trail: deque[str] = deque(maxlen=25)

    # ---------------------------------------------------------------- reading and checking

    def read(self) -> State:
        owners = [k[0] for k in self.keys]
        subs = [k[1] for k in self.keys]
        n = len(self.assets)
        v, e, lender = self.vault, self.engine, self.lender
        calls: list[tuple[Fn, tuple[Any, ...]]] = [
            (self.lens.accounts, (owners, subs)),
            (self.lens.healths, (owners, subs)),
            (v.borrowIndex, ()), (v.totalScaledDebt, ()), (v.totalDebt, ()), (v.totalAssets, ()),
            (v.reserve, ()), (v.idle, ()), (v.convertToAssets, (SHARE_PROBE,)), (v.totalSupply, ()),
            (v.balanceOf, (lender,)), (v.maxWithdraw, (lender,)), (v.borrowRate, ()), (v.utilization, ()),
            (self.usdc.balanceOf, (v.address,)), (self.router.price, (self.usdc.address,)),
        ]  # fmt: skip
        calls += [(e.assetSupply, (a,)) for a in self.assets]
        calls += [(t.balanceOf, (e.address,)) for t in self.tokens]
        calls += [(self.router.price, (a,)) for a in self.assets]
        calls += [(e.collateralOf, (o, s, a)) for (o, s) in self.keys for a in self.assets]
        r = self.node.reads(calls)
        accounts, healths = r[0], r[1]
        (index, total_scaled, total_debt, total_assets, reserve, idle, share_price, total_shares, lender_shares,
         lender_max, rate, util, vault_usdc, debt_price) = r[2:16]  # fmt: skip
        rest = r[16:]
        supplied = tuple(x["totalSupplied"] for x in rest[:n])
        engine_bal = tuple(rest[n : 2 * n])
        prices = tuple(rest[2 * n : 3 * n])
        coll = rest[3 * n :]
        pos, lens_debt, lens_bals, health = {}, {}, {}, {}
        for j, key in enumerate(self.keys):
            acc = accounts[j]
            assert (plain(acc["owner"]), acc["subId"]) == (key[0].lower(), key[1]), "lens accounts out of order"
            bals = tuple(coll[j * n : (j + 1) * n])
            pos[key] = Pos(acc["scaledDebt"], acc["assetMask"], bals)
            lens_debt[key] = acc["debt"]
            lens_bals[key] = tuple(acc["balances"])
            ok, fig = healths[j]["ok"], healths[j]["health"]
            assert ok, f"accountHealth{key} failed although every feed is fresh"
            health[key] = Figures(*(fig[k] for k in HEALTH_FIELDS))
        return State(
            pos, lens_debt, lens_bals, health, prices, debt_price, index, total_scaled, total_debt, total_assets,
            reserve, idle, share_price, total_shares, lender_shares, lender_max, rate, util, supplied, engine_bal,
            vault_usdc,
        )  # fmt: skip

    def figures(self, bals: Sequence[int], scaled: int, s: State) -> Figures:
        """Independent health figures per IMarginEngine's formulas."""
        debt = to_assets_up(scaled, s.index)
        debt_value = value_up(debt, s.debt_price, self.debt_dec) if debt else 0
        coll = lt_w = ltv_w = 0
        for i, bal in enumerate(bals):
            if bal:
                val = value_down(bal, s.prices[i], self.dec[i])
                coll += val
                lt_w += w_mul_down(val, self.lt[i])
                ltv_w += w_mul_down(val, self.ltv[i])
        health = MAX_UINT if debt_value == 0 else w_div_down(lt_w, debt_value)
        return Figures(coll, lt_w, ltv_w, debt, debt_value, health)

    def rate(self, debt: int, cash: int) -> int:
        util = 0 if debt == 0 else w_div_down(debt, debt + cash)
        if util <= self.kink:
            return self.base_rate + mul_div_down(util, self.slope1, self.kink)
        return self.base_rate + self.slope1 + mul_div_down(util - self.kink, self.slope2, WAD - self.kink)

    @staticmethod
    def shares_for(assets: int, s: State, up: bool) -> int:
        """OZ ERC-4626 conversion with the vault's 10**6 virtual shares."""
        f = mul_div_up if up else mul_div_down
        return f(assets, s.total_shares + 10**6, s.total_assets + 1)

    def check_state(self, s: State) -> None:
        """Invariants that hold in every state."""
        n = len(self.assets)
        for key, p in s.pos.items():
            # 4: mask bit i iff balance i > 0; debt implies collateral (or the debt was written off as bad debt).
            assert p.mask == mask_of(p.bals), f"{key}: mask {p.mask:b} does not match balances {p.bals}"
            assert p.scaled == 0 or p.mask != 0, f"{key}: debt {p.scaled} scaled without any collateral"
            assert s.lens_bals[key] == p.bals, f"{key}: lens balances {s.lens_bals[key]} != {p.bals}"
            assert s.lens_debt[key] == to_assets_up(p.scaled, s.index), f"{key}: lens debt not ceil(scaled*index)"
            assert s.health[key] == self.figures(p.bals, p.scaled, s), f"{key}: engine health != documented formula"
        for key in self.stranger_keys:
            assert s.pos[key] == Pos(0, 0, (0,) * n), f"stranger's own sub-account {key} is not empty"
        # 1: scaled debt and collateral books add up; the engine holds what it books.
        assert sum(p.scaled for p in s.pos.values()) == s.total_scaled, "sum of scaled debts != totalScaledDebt"
        for i in range(n):
            total = sum(p.bals[i] for p in s.pos.values())
            assert total == s.supplied[i], f"{self.symbols[i]}: sum of balances {total} != {s.supplied[i]}"
            assert s.engine_bal[i] >= s.supplied[i], f"{self.symbols[i]}: engine holds less than it books"
        # 2: the vault holds the cash it accounts for.
        assert s.vault_usdc >= s.idle, f"vault USDC {s.vault_usdc} < idle {s.idle}"
        # 3: borrowed <= supplied; totalAssets = idle + totalDebt - reserve; debts round up.
        assert s.total_debt == to_assets_up(s.total_scaled, s.index), "totalDebt != ceil(totalScaledDebt*index)"
        assert s.total_debt <= s.total_assets + s.reserve, "totalDebt > totalAssets + reserve"
        assert s.total_assets + s.reserve == s.idle + s.total_debt, "totalAssets != idle + totalDebt - reserve"
        debts = sum(s.lens_debt.values())
        assert s.total_debt <= debts <= s.total_debt + len(s.pos), "account debts do not cover the vault's debt"
        # ERC-4626 and rate views agree with their documented formulas.
        assert s.share_price == mul_div_down(SHARE_PROBE, s.total_assets + 1, s.total_shares + 10**6)
        max_w = min(mul_div_down(s.lender_shares, s.total_assets + 1, s.total_shares + 10**6), s.idle)
        assert s.lender_max_withdraw == max_w, "maxWithdraw is not min(convertToAssets(shares), idle)"
        assert s.borrow_rate == self.rate(s.total_debt, s.idle), "borrowRate != kinked model"
        util = 0 if s.total_debt == 0 else w_div_down(s.total_debt, s.total_debt + s.idle)
        assert s.utilization == util, "utilization != debt / (debt + idle)"
        assert s.debt_price == self.answers[n] * self.scale[n], "router price of the debt asset != feed answer"
        for i in range(n):
            assert s.prices[i] == self.answers[i] * self.scale[i], f"router price of {self.symbols[i]} != feed"

    def check_step(self, pre: State, post: State, step: Step) -> None:
        e = step.expect
        for key in self.keys:
            assert post.pos[key] == e.pos[key], f"{key}: position {post.pos[key]} != expected {e.pos[key]}"
        assert post.idle == e.idle, f"idle {post.idle} != expected {e.idle}"
        assert post.total_scaled == e.total_scaled, f"totalScaledDebt {post.total_scaled} != {e.total_scaled}"
        assert list(post.supplied) == e.supplied, f"totalSupplied {post.supplied} != {e.supplied}"
        assert list(post.engine_bal) == e.engine_bal, f"engine balances {post.engine_bal} != {e.engine_bal}"
        assert post.vault_usdc == e.vault_usdc, f"vault USDC {post.vault_usdc} != {e.vault_usdc}"
        assert post.reserve == e.reserve, f"reserve {post.reserve} != {e.reserve}"
        assert post.index == e.index, f"borrow index {post.index} != {e.index}"
        assert post.lender_shares == e.lender_shares, f"lender shares {post.lender_shares} != {e.lender_shares}"
        assert (list(post.prices), post.debt_price) == (e.prices, e.debt_price), "prices moved unexpectedly"
        # 6: only prices, interest and liquidations may push a healthy account under water.
        if step.strict_health:
            for key in self.keys:
                if not pre.health[key].liquidatable:
                    assert not post.health[key].liquidatable, f"{key} became liquidatable in a {step.kind} step"
        # Adding collateral, repaying, donating, lender flows and refused attacks never lower anyone's health.
        if step.kind in HEALTH_NEVER_FALLS:
            for key in self.keys:
                assert post.health[key].health >= pre.health[key].health, f"a {step.kind} lowered {key}'s health"
        # 10: no liquidation lowers the health of the account it liquidates (unless it leaves no debt), and after
        # a liquidation or a write-off the loss the account's collateral cannot cover has landed: no lender can
        # redeem ahead of a loss that is already certain.
        if step.ok and step.account is not None:
            key = step.account
            after = post.health[key]
            assert after.debt == 0 or after.health >= pre.health[key].health, (
                f"a {step.kind} lowered {key}'s health {pre.health[key].health} -> {after.health}"
            )
            p = post.pos[key]
            assert self.written_off(p.bals, p.scaled, post) == 0, f"{key} still insolvent after a {step.kind}"
        # 7: a donation moves no account's health (above), nor totalAssets, nor the share price.
        if step.donation:
            assert post.total_assets == pre.total_assets, "donation changed totalAssets"
            assert post.share_price == pre.share_price, "donation changed convertToAssets"
        # 8: the index never falls; the share price falls only by socialised bad debt.
        assert post.index >= pre.index, "borrow index decreased"
        if post.share_price < pre.share_price:
            assert step.socialized > 0, f"share price fell {pre.share_price} -> {post.share_price} without bad debt"
            assert post.total_assets + step.socialized >= pre.total_assets, "totalAssets fell more than socialized"

    # ---------------------------------------------------------------- helpers for operations

    def expect_outcome(self, expected: Outcome, err: RevertError | None, what: str) -> None:
        """The outcome must be the predicted one: success, or exactly the predicted error and arguments."""
        if err is None:
            assert expected is OK, f"{what}: succeeded, expected revert {expected}"
            return
        self.tally.errors[f"{what.split('(')[0]}:{err.name}"] += 1
        assert expected is not OK, f"{what}: model says it must succeed, reverted with {err}"
        assert (err.name, err.args_) == (expected[0], plain(expected[1])), (
            f"{what}: reverted with {err.name}{err.args_}, expected {expected[0]}{expected[1]}"
        )

    def attempt(self, expected: Outcome, sender: str, fn: Fn, *args: Any) -> list[Event] | None:
        """Sends `fn` and checks the predicted outcome; returns its events, or None when it reverted."""
        err, events = None, None
        try:
            events = self.node.send(sender, fn, *args)
        except RevertError as exc:
            err = exc
        self.expect_outcome(expected, err, f"{fn.name}{args}")
        return events

    def must(self, sender: str, fn: Fn, *args: Any) -> list[Event]:
        events = self.attempt(OK, sender, fn, *args)
        assert events is not None
        return events

    def pick_key(self, s: State, want: Callable[[Pos], bool], p: float = 0.85) -> Key:
        good = [k for k in self.owner_keys if want(s.pos[k])]
        if good and self.rng.random() < p:
            return self.rng.choice(good)
        return self.rng.choice(self.owner_keys)

    def usd_amount(self, i: int, s: State, lo: float = 50, hi: float = 300_000) -> int:
        cents = int(math.exp(self.rng.uniform(math.log(lo), math.log(hi))) * 100)
        return cents * 10 ** self.dec[i] * WAD // (100 * s.prices[i])

    def held(self, p: Pos) -> list[int]:
        return [i for i, b in enumerate(p.bals) if b]

    def margin_error(self, bals: Sequence[int], scaled: int, s: State) -> Outcome:
        if scaled == 0:
            return OK
        f = self.figures(bals, scaled, s)
        return ("InsufficientMargin", (f.ltv_w, f.debt_value)) if f.ltv_w < f.debt_value else OK

    def max_safe_take(self, p: Pos, i: int, s: State) -> int:
        """Largest amount of asset i the account can take out and keep its margin (-1 if none)."""

        def ok(a: int) -> bool:
            bals = list(p.bals)
            bals[i] -= a
            return self.margin_error(bals, p.scaled, s) is OK

        return largest(0, p.bals[i], ok)

    def take_amount(self, p: Pos, i: int, s: State) -> int:
        bal, r = p.bals[i], self.rng.random()
        if r < 0.03:
            return 0
        if r < 0.25:
            return bal
        if r < 0.30:
            return bal + self.rng.randint(1, 10 ** self.dec[i])
        if r < 0.55 and p.scaled:
            m = self.max_safe_take(p, i, s)
            return max(m, 0) + self.rng.choice((0, 0, 1))
        return bal * self.rng.randint(1, 1000) // 1000

    # ---------------------------------------------------------------- operations

    def op_deposit(self, s: State) -> Step:
        key = self.rng.choice(self.owner_keys)
        i = self.rng.randrange(len(self.assets))
        actor = key[0] if self.rng.random() < 0.85 else self.third
        r = self.rng.random()
        supplied, cap = s.supplied[i], self.caps[i]
        if r < 0.03:
            amount = 0
        elif r < 0.06:
            amount = cap - supplied + self.rng.randint(1, 10 ** self.dec[i])
        elif r < 0.12:
            amount = self.rng.randint(1, 10 ** (self.dec[i] // 2))
        else:
            small = self.rng.random() < 0.2  # small accounts: their bad debt can fit inside the reserve
            amount = self.usd_amount(i, s, *((12, 300) if small else (50, 300_000))) + 1
        expected = None
        if amount == 0:
            expected = ("ZeroAmount", ())
        elif supplied + amount > cap:
            expected = ("SupplyCapExceeded", (self.assets[i], supplied + amount, cap))
        e = Expect.unchanged(s)
        ok = self.attempt(expected, actor, self.engine.deposit, key[0], key[1], self.assets[i], amount) is not None
        if ok:
            e.set_balance(key, i, s.pos[key].bals[i] + amount)
            e.supplied[i] += amount
            e.engine_bal[i] += amount
        return Step("deposit", f"deposit {key} {self.symbols[i]} {amount} by {actor[:8]}", ok, e)

    def op_withdraw(self, s: State) -> Step:
        key = self.pick_key(s, lambda p: p.mask != 0)
        p = s.pos[key]
        held = self.held(p)
        i = self.rng.choice(held) if held and self.rng.random() < 0.9 else self.rng.randrange(len(self.assets))
        amount = self.take_amount(p, i, s)
        bal = p.bals[i]
        if amount == 0:
            expected: Outcome = ("ZeroAmount", ())
        elif amount > bal:
            expected = ("InsufficientCollateral", (self.assets[i], bal, amount))
        else:
            bals = list(p.bals)
            bals[i] -= amount
            expected = self.margin_error(bals, p.scaled, s)
        receiver = key[0] if self.rng.random() < 0.8 else self.third
        e = Expect.unchanged(s)
        ok = self.attempt(expected, key[0], self.engine.withdraw, key[1], self.assets[i], amount, receiver) is not None
        if ok:
            e.set_balance(key, i, bal - amount)
            e.supplied[i] -= amount
            e.engine_bal[i] -= amount
        return Step("withdraw", f"withdraw {key} {self.symbols[i]} {amount} of {bal}", ok, e)

    def op_move(self, s: State) -> Step:
        key = self.pick_key(s, lambda p: p.mask != 0)
        p = s.pos[key]
        held = self.held(p)
        i = self.rng.choice(held) if held and self.rng.random() < 0.9 else self.rng.randrange(len(self.assets))
        to = key[1] if self.rng.random() < 0.08 else self.rng.choice([x for x in SUBS if x != key[1]])
        amount = self.take_amount(p, i, s)
        bal = p.bals[i]
        if amount == 0:
            expected: Outcome = ("ZeroAmount", ())
        elif to == key[1]:
            expected = ("SameSubAccount", ())
        elif amount > bal:
            expected = ("InsufficientCollateral", (self.assets[i], bal, amount))
        else:
            bals = list(p.bals)
            bals[i] -= amount
            expected = self.margin_error(bals, p.scaled, s)
        e = Expect.unchanged(s)
        ok = self.attempt(expected, key[0], self.engine.moveCollateral, key[1], to, self.assets[i], amount) is not None
        if ok:
            e.set_balance(key, i, bal - amount)
            dest = (key[0], to)
            e.set_balance(dest, i, s.pos[dest].bals[i] + amount)
        return Step("move", f"move {key}->{to} {self.symbols[i]} {amount} of {bal}", ok, e)

    def borrow_outcome(self, key: Key, assets: int, s: State) -> tuple[Outcome, int]:
        """Predicted error (or OK) of `borrow(assets)` on `key`, and the scaled debt it adds."""
        p = s.pos[key]
        if assets == 0:
            return ("ZeroAmount", ()), 0
        added = to_scaled_up(assets, s.index)
        new_scaled = p.scaled + added
        if new_scaled > UINT128_MAX:
            return ("SafeCastOverflowedUintDowncast", (128, new_scaled)), 0
        debt = to_assets_up(new_scaled, s.index)
        if debt < self.min_debt:
            return ("DebtBelowMinimum", (debt, self.min_debt)), 0
        f = self.figures(p.bals, new_scaled, s)
        if f.ltv_w < f.debt_value:
            return ("InsufficientMargin", (f.ltv_w, f.debt_value)), 0
        if assets > s.idle:
            return ("InsufficientLiquidity", (assets, s.idle)), 0
        return OK, added

    def op_borrow(self, s: State) -> Step:
        spare = [k for k in self.owner_keys if s.health[k].ltv_w > s.health[k].debt_value]
        key = self.rng.choice(spare) if spare and self.rng.random() < 0.85 else self.rng.choice(self.owner_keys)
        p = s.pos[key]
        f = s.health[key]
        upper = f.ltv_w * 10**self.debt_dec // s.debt_price + 2

        def margin_ok(a: int) -> bool:
            new = p.scaled + to_scaled_up(a, s.index)
            g = self.figures(p.bals, new, s)
            return g.ltv_w >= g.debt_value

        power = max(largest(0, upper, margin_ok), 0)  # the most the margin allows, to the unit
        if self.rng.random() < 0.7:
            power = min(power, s.idle)  # mostly stay within the vault's cash
        r = self.rng.random()
        if r < 0.03:
            assets = 0
        elif r < 0.33:
            assets = power + self.rng.choice((0, 0, 1))
        elif r < 0.40:
            debt = to_assets_up(p.scaled, s.index)
            assets = max(self.min_debt - debt + self.rng.choice((-1, 0)), 1)
        elif r < 0.43:
            assets = s.idle + self.rng.randint(1, 10**9)
        else:
            assets = power * self.rng.randint(1, 1000) // 1000
        expected, added = self.borrow_outcome(key, assets, s)
        receiver = key[0] if self.rng.random() < 0.8 else self.third
        e = Expect.unchanged(s)
        ok = self.attempt(expected, key[0], self.engine.borrow, key[1], assets, receiver) is not None
        if ok:
            e.set_scaled(key, p.scaled + added)
            e.total_scaled += added
            e.idle -= assets
            e.vault_usdc -= assets
        return Step("borrow", f"borrow {key} {assets}", ok, e)

    def op_repay(self, s: State) -> Step:
        key = self.pick_key(s, lambda p: p.scaled != 0, 0.9)
        p = s.pos[key]
        payer = key[0] if self.rng.random() < 0.7 else self.third
        debt = to_assets_up(p.scaled, s.index)
        r = self.rng.random()
        if r < 0.03:
            assets = 0
        elif r < 0.25:
            assets = MAX_UINT
        elif r < 0.33:
            assets = debt
        elif r < 0.41:
            assets = max(debt - self.min_debt, 1)
        elif r < 0.48:
            assets = max(debt - self.min_debt + 1, 1)
        elif r < 0.53:
            assets = debt + self.rng.randint(1, 10**8)
        else:
            assets = max(debt * self.rng.randint(1, 1000) // 1000, 1)
        scaled = repaid = 0
        expected: Outcome = OK
        if assets == 0:
            expected = ("ZeroAmount", ())
        elif p.scaled == 0:
            expected = ("NothingToRepay", ())
        elif assets >= debt:
            repaid, scaled = debt, p.scaled
        else:
            repaid, scaled = assets, to_scaled_down(assets, s.index)
            remaining = to_assets_up(p.scaled - scaled, s.index)
            if remaining < self.min_debt:
                expected = ("DebtBelowMinimum", (remaining, self.min_debt))
        before = self.node.read(self.usdc.balanceOf, payer)
        e = Expect.unchanged(s)
        events = self.attempt(expected, payer, self.engine.repay, key[0], key[1], assets)
        if events is not None:
            assert self.node.read(self.usdc.balanceOf, payer) == before - repaid, "payer paid != repaid"
            rep = [ev for ev in events if ev.name == "Repaid"]
            assert [(ev.args["assets"], ev.args["scaled"]) for ev in rep] == [(repaid, scaled)], f"Repaid {rep}"
            e.set_scaled(key, p.scaled - scaled)
            e.total_scaled -= scaled
            e.idle += repaid
            e.vault_usdc += repaid
        return Step("repay", f"repay {key} {assets} of {debt} by {payer[:8]}", events is not None, e)

    def cover(self, bals: Sequence[int], s: State) -> int:
        """Σ value_down(c_i) / (1 + min(minDiscount, maxDiscount_i)), each rounded down (IMarginEngine.writeOff)."""
        return sum(
            w_div_down(value_down(b, s.prices[i], self.dec[i]), WAD + min(self.min_discount, self.max_disc[i]))
            for i, b in enumerate(bals)
            if b
        )

    def written_off(self, bals: Sequence[int], scaled: int, s: State) -> int:
        """Scaled debt the insolvency write-off removes: down to the cover value, rounded up; 0 when covered."""
        f = self.figures(bals, scaled, s)
        cover = self.cover(bals, s)
        if not f.debt or cover >= f.debt_value:
            return 0
        target = amount_up(cover, s.debt_price, self.debt_dec)
        return scaled - to_scaled_up(target, s.index) if target < f.debt else 0

    def quote(
        self, key: Key, i: int, requested: int, s: State
    ) -> tuple[Outcome, tuple[int, int, int, int, int], int, int]:
        """Independent liquidation quote per IMarginEngine.liquidate: (error or OK, (repaid, seized, discount,
        maxRepay, badDebt), scaled repaid, scaled written off)."""
        p = s.pos[key]
        h = self.figures(p.bals, p.scaled, s)
        none = (0, 0, 0, 0, 0)
        if h.debt == 0 or h.lt_w >= h.debt_value:
            return ("NotLiquidatable", (h.health,)), none, 0, 0
        balance = p.bals[i]
        if balance == 0:
            return ("NothingSeized", ()), none, 0, 0
        off = self.written_off(p.bals, p.scaled, s)
        scaled = p.scaled - off
        h = self.figures(p.bals, scaled, s)
        neutral = w_div_down(h.health, self.lt[i])
        neutral = neutral - WAD - NEUTRAL_MARGIN if neutral > WAD + NEUTRAL_MARGIN else 0
        discount = min(self.min_discount + WAD - h.health, self.max_disc[i], neutral)
        full = h.health < self.full_close_health or h.debt_value <= self.full_close_debt_value
        max_repay = h.debt if full else w_mul_up(h.debt, WAD // 2)
        if h.debt - max_repay < self.min_debt:
            max_repay = h.debt
        repaid = min(requested, max_repay)
        if repaid == 0:
            return ("ZeroAmount", ()), none, 0, 0
        price, dec = s.prices[i], self.dec[i]
        seize_value = w_mul_down(value_down(repaid, s.debt_price, self.debt_dec), WAD + discount)
        seized = amount_down(seize_value, price, dec)
        if seized > balance:
            pay_value = w_div_up(value_up(balance, price, dec), WAD + discount)
            repaid = min(amount_up(pay_value, s.debt_price, self.debt_dec), repaid)
            seized = balance
        if seized == 0:
            return ("NothingSeized", ()), none, 0, 0
        scaled_repaid = scaled if repaid == h.debt else to_scaled_down(repaid, s.index)
        left, bad_scaled = scaled - scaled_repaid, off
        if seized == balance:
            if p.mask == 1 << i:  # the last collateral: the rest is bad debt
                bad_scaled, left = bad_scaled + left, 0
        elif 0 < to_assets_up(left, s.index) < self.min_debt:
            # A repayment the liquidator chose must not leave dust (one that took a whole collateral may): the debt
            # the account is left with, as `repay` measures it.
            return ("LiquidationLeavesDust", (to_assets_up(left, s.index), self.min_debt)), none, 0, 0
        if left:
            bals = list(p.bals)
            bals[i] -= seized
            after = self.figures(bals, left, s).health
            if after < h.health:
                return ("LiquidationLowersHealth", (h.health, after)), none, 0, 0
            bad_scaled += self.written_off(bals, left, s)  # what the rest cannot cover is written off at once
        bad = to_assets_up(bad_scaled, s.index) if bad_scaled else 0
        return OK, (repaid, seized, discount, max_repay, bad), scaled_repaid, bad_scaled

    def op_liquidate(self, s: State) -> Step:
        rng = self.rng
        targets = [k for k in self.owner_keys if s.health[k].liquidatable]
        key = rng.choice(targets) if targets and rng.random() < 0.95 else self.pick_key(s, lambda p: p.scaled != 0)
        p = s.pos[key]
        held = self.held(p)
        i = rng.choice(held) if held and rng.random() < 0.95 else rng.randrange(len(self.assets))
        debt = to_assets_up(p.scaled, s.index)
        r = rng.random()
        if r < 0.03:
            requested = 0
        elif r < 0.40:
            requested = MAX_UINT
        elif r < 0.47:
            requested = 1
        elif r < 0.57:
            requested = max(debt - self.min_debt + 1, 1)
        else:
            requested = max(debt * rng.randint(1, 1000) // 1000, 1)
        expected, q, scaled_repaid, bad_scaled = self.quote(key, i, requested, s)
        min_seized = 0
        if expected is OK and rng.random() < 0.15:
            min_seized = q[1] + rng.choice((0, 1))
            if min_seized > q[1]:
                expected = ("SeizedBelowMinimum", (q[1], min_seized))
        # previewLiquidation must agree with the independent quote.
        err, preview = None, None
        try:
            preview = self.node.read(self.engine.previewLiquidation, key[0], key[1], self.assets[i], requested)
        except RevertError as exc:
            err = exc
        self.expect_outcome(OK if q[1] else expected, err, "previewLiquidation")
        if preview is not None:
            quoted = tuple(preview[k] for k in ("repaid", "seized", "discount", "maxRepay", "badDebt"))
            assert quoted == q, f"previewLiquidation {quoted} != independent quote {q}"
        receiver = self.liquidator if rng.random() < 0.8 else self.third
        coll = self.tokens[i]
        before = self.node.reads([(self.usdc.balanceOf, (self.liquidator,)), (coll.balanceOf, (receiver,))])
        e = Expect.unchanged(s)
        step = Step("liquidate", f"liquidate {key} {self.symbols[i]} req={requested} debt={debt}", False, e)
        step.strict_health = False
        step.account = key
        if expected is not OK and expected[0] == "LiquidationLowersHealth":
            self.tally.lowers_health_refused += 1
        args = (key[0], key[1], self.assets[i], requested, min_seized, receiver, b"")
        events = self.attempt(expected, self.liquidator, self.engine.liquidate, *args)
        if events is None:
            return step
        step.ok = True
        repaid, seized, discount, _, bad = q
        pre_h = s.health[key]
        # 5: only unhealthy accounts are liquidated, at most at the asset's maximum discount.
        assert pre_h.liquidatable, f"liquidated {key} with health {pre_h.health}"
        assert discount <= self.max_disc[i]
        seized_value = seized * s.prices[i] * 10**self.debt_dec
        repaid_value = repaid * s.debt_price * 10 ** self.dec[i]
        assert seized_value * WAD <= repaid_value * (WAD + self.max_disc[i]), "seized value > repaid x (1 + max d)"
        after = self.node.reads([(self.usdc.balanceOf, (self.liquidator,)), (coll.balanceOf, (receiver,))])
        assert after[0] == before[0] - repaid, "liquidator paid != repaid"
        assert after[1] == before[1] + seized, "receiver got != seized"
        liq = [ev for ev in events if ev.name == "Liquidated"]
        assert len(liq) == 1
        got = liq[0].args
        assert (got["owner"], got["subId"], got["collateral"]) == (key[0].lower(), key[1], self.assets[i].lower())
        assert (got["repaid"], got["seized"], got["discount"]) == (repaid, seized, discount), f"event {got}"
        self.tally.written_off_in_liquidation += self.written_off(p.bals, p.scaled, s) > 0
        eng_bad = [ev for ev in events if ev.source == "engine" and ev.name == "BadDebtRealized"]
        vault_bad = [ev for ev in events if ev.source == "vault" and ev.name == "BadDebtRealized"]
        covered = 0
        if bad_scaled:
            assert [ev.args["assets"] for ev in eng_bad] == [bad], f"engine bad debt events {eng_bad}"
            assert len(vault_bad) == 1, "vault emitted no BadDebtRealized"
            vb = vault_bad[0].args
            covered = min(bad, s.reserve)
            assert (vb["assets"], vb["coveredByReserve"], vb["socialized"]) == (bad, covered, bad - covered), f"{vb}"
            step.socialized = bad - covered
            self.tally.bad_debt_events += 1
            self.tally.bad_debt_assets += bad
            self.tally.covered += covered
            self.tally.socialized += bad - covered
            self.tally.fully_covered += covered == bad
        else:
            assert eng_bad == vault_bad == [], "bad debt event without bad debt"
        self.tally.liquidations += 1
        self.tally.full_seizures += seized == p.bals[i]
        e.set_balance(key, i, p.bals[i] - seized)
        e.set_scaled(key, p.scaled - scaled_repaid - bad_scaled)
        e.total_scaled -= scaled_repaid + bad_scaled
        e.idle += repaid
        e.vault_usdc += repaid
        e.supplied[i] -= seized
        e.engine_bal[i] -= seized
        e.reserve -= covered
        left = to_assets_up(p.scaled - scaled_repaid - bad_scaled, s.index)
        took_whole = seized == p.bals[i]
        assert left == 0 or left >= self.min_debt or took_whole, f"liquidation left dust: {left} < {self.min_debt}"
        step.desc += f" -> repaid={repaid} seized={seized} bad={bad}"
        return step

    def op_writeoff(self, s: State) -> Step:
        """Anyone writes off an insolvent account's shortfall; a covered account (or one without debt) is refused
        with NotInsolvent(cover, debtValue)."""
        rng = self.rng
        insolvent = [k for k in self.owner_keys if self.written_off(s.pos[k].bals, s.pos[k].scaled, s)]
        key = rng.choice(insolvent) if insolvent and rng.random() < 0.9 else rng.choice(self.owner_keys)
        p = s.pos[key]
        off = self.written_off(p.bals, p.scaled, s)
        e = Expect.unchanged(s)
        step = Step("writeoff", f"writeOff {key} off={off}", False, e, account=key)
        if not off:
            f = self.figures(p.bals, p.scaled, s)
            self.attempt(("NotInsolvent", (self.cover(p.bals, s), f.debt_value)), self.stranger, self.engine.writeOff,
                         *key)  # fmt: skip
            return step
        events = self.must(self.stranger, self.engine.writeOff, *key)
        bad = to_assets_up(off, s.index)
        eng_bad = [ev.args for ev in events if ev.source == "engine" and ev.name == "BadDebtRealized"]
        assert eng_bad == [{"owner": key[0].lower(), "subId": key[1], "assets": bad}], f"{eng_bad}"
        covered = min(bad, s.reserve)
        vault_bad = [ev.args for ev in events if ev.source == "vault" and ev.name == "BadDebtRealized"]
        assert vault_bad == [{"assets": bad, "coveredByReserve": covered, "socialized": bad - covered}], f"{vault_bad}"
        e.set_scaled(key, p.scaled - off)
        e.total_scaled -= off
        e.reserve -= covered
        step.ok, step.socialized = True, bad - covered
        self.tally.write_offs += 1
        self.tally.bad_debt_events += 1
        self.tally.bad_debt_assets += bad
        self.tally.covered += covered
        self.tally.socialized += bad - covered
        return step

    def check_liveness(self, s: State) -> None:
        """Every liquidatable account has a liquidation that succeeds now: for each, at least one held collateral
        liquidates for the whole allowed amount (simulated as the liquidator, who holds plenty)."""
        keys = [k for k in self.owner_keys if s.health[k].liquidatable]
        calls = [(k, i) for k in keys for i in self.held(s.pos[k])]
        if not calls:
            return
        fn = self.engine.liquidate
        reqs = [("eth_call", [{"from": self.liquidator, "to": fn.address,
                               "data": fn.data(k[0], k[1], self.assets[i], MAX_UINT, 0, self.liquidator, b"")},
                              "latest"]) for k, i in calls]  # fmt: skip
        answers = self.node.w3.provider.make_batch_request(reqs)
        works = {k for (k, _), a in zip(calls, answers, strict=True) if "error" not in a}
        stuck = [k for k in keys if k not in works]
        assert not stuck, f"liquidatable accounts with no liquidation that succeeds: {stuck}"
        self.tally.liveness_checks += len(keys)

    def push(self, k: int, answer: int) -> None:
        feed = self.feeds[k] if k < len(self.feeds) else self.usdc_feed
        self.node.send(self.admin, feed.setAnswer, answer)
        self.answers[k] = answer

    def op_price(self, s: State) -> Step:
        rng, n = self.rng, len(self.assets)
        e = Expect.unchanged(s)
        mode = rng.random()
        moves: list[tuple[int, float]] = []
        if mode < 0.12:  # a market-wide crash or rally
            f = rng.uniform(0.45, 0.8) if rng.random() < 0.7 else rng.uniform(1.2, 1.8)
            moves = [(k, f * rng.uniform(0.95, 1.05)) for k in range(n)]
        else:
            k = rng.choices(range(n + 1), weights=[3] * n + [1])[0]
            m = rng.random()
            if k == n:
                f = 1.0 if m < 0.3 else rng.uniform(0.9, 1.1) if m < 0.9 else rng.uniform(0.7, 1.4)
                moves = [(k, f * self.initial[n] / self.answers[n])]
            elif m < 0.65:
                moves = [(k, math.exp(rng.gauss(0, 0.05)))]
            elif m < 0.82:
                moves = [(k, rng.uniform(0.3, 0.75))]
            elif m < 0.95:
                moves = [(k, rng.uniform(1.2, 2.0))]
            else:
                moves = [(k, math.exp(rng.uniform(math.log(0.1), math.log(10))) * self.initial[k] / self.answers[k])]
        desc = []
        for k, f in moves:
            answer = min(max(int(self.answers[k] * f), self.lo[k]), self.hi[k])
            self.push(k, answer)
            desc.append(f"{[*self.symbols, 'USDC'][k]}={answer / self.initial[k]:.3f}x")
        e.prices = [self.answers[k] * self.scale[k] for k in range(n)]
        e.debt_price = self.answers[n] * self.scale[n]
        return Step("price", "price " + " ".join(desc), True, e, strict_health=False)

    def op_skip(self, s: State) -> Step:
        rng = self.rng
        dt = rng.choice((60, 600, 3600, 6 * 3600, 86400, 86400, 7 * 86400, 30 * 86400))
        dt = int(dt * rng.uniform(0.5, 1.0)) + 1
        # Accrue at the current time so the stored index equals the view; then the skip's interest is exact.
        self.node.send(self.third, self.vault.accrue)
        self.node.now += dt
        for k in range(len(self.assets) + 1):
            self.push(k, self.answers[k])
        e = Expect.unchanged(s)
        if s.total_scaled:
            rate = self.rate(s.total_debt, s.idle)
            e.index = s.index + mul_div_down(s.index, rate * dt, WAD * YEAR)
            interest = to_assets_up(s.total_scaled, e.index) - s.total_debt
            e.reserve = s.reserve + w_mul_down(interest, self.reserve_factor)
        return Step("skip", f"skip {dt}s", True, e, strict_health=False)

    def op_donate(self, s: State) -> Step:
        e = Expect.unchanged(s)
        if self.rng.random() < 0.5:
            amount = self.rng.randint(1, 10**11)
            self.node.send(self.third, self.usdc.transfer, self.vault.address, amount)
            e.vault_usdc += amount
            desc = f"donate {amount} USDC to the vault"
        else:
            i = self.rng.randrange(len(self.assets))
            amount = self.rng.randint(1, 10 ** (self.dec[i] + 2))
            self.node.send(self.third, self.tokens[i].transfer, self.engine.address, amount)
            e.engine_bal[i] += amount
            desc = f"donate {amount} {self.symbols[i]} to the engine"
        return Step("donate", desc, True, e, donation=True)

    def op_stranger(self, s: State) -> Step:
        """Attacks by an address that owns nothing: each must revert with its exact error and change nothing."""
        rng, st = self.rng, self.stranger
        victim = self.pick_key(s, lambda p: p.mask != 0 or p.scaled != 0)
        vp = s.pos[victim]
        i = rng.choice(self.held(vp) or [0])
        amount = max(vp.bals[i], 1)
        sub = victim[1]
        kind = rng.randrange(8)
        if kind == 0:
            self.attempt(("InsufficientCollateral", (self.assets[i], 0, amount)), st, self.engine.withdraw,
                        sub, self.assets[i], amount, st)  # fmt: skip
        elif kind == 1:
            to = rng.choice(SUBS)
            expected = ("SameSubAccount", ()) if to == sub else ("InsufficientCollateral", (self.assets[i], 0, amount))
            self.attempt(expected, st, self.engine.moveCollateral, sub, to, self.assets[i], amount)
        elif kind == 2:
            assets = max(to_assets_up(vp.scaled, s.index), rng.randint(1, 10**12))
            expected, _ = self.borrow_outcome((st, sub), assets, s)
            assert expected is not OK
            self.attempt(expected, st, self.engine.borrow, sub, assets, st)
        elif kind == 3:
            healthy = [k for k in self.owner_keys if not s.health[k].liquidatable]
            if healthy:
                k = rng.choice(healthy)
                self.attempt(("NotLiquidatable", (s.health[k].health,)), st, self.engine.liquidate, k[0], k[1],
                            self.assets[i], MAX_UINT, 0, st, b"")  # fmt: skip
        elif kind == 4:
            fn = rng.choice((self.vault.lend, self.vault.noteRepayment))
            args = (s.idle, s.total_scaled, st) if fn.name == "lend" else (0, s.total_scaled)
            self.attempt(("NotEngine", (st,)), st, fn, *args)
        elif kind == 5:
            self.attempt(("NotEngine", (st,)), st, self.vault.realizeBadDebt, s.total_scaled)
        elif kind == 6:
            role = b"\x00" * 32
            choice = rng.randrange(3)
            if choice == 0:
                self.attempt(("AccessControlUnauthorizedAccount", (st, role)), st, self.engine.setAssetConfig,
                            self.assets[i], 0, 1, 0, 0)  # fmt: skip
            elif choice == 1:
                self.attempt(("AccessControlUnauthorizedAccount", (st, role)), st, self.vault.skim, st)
            else:
                self.attempt(("AccessControlUnauthorizedAccount", (st, role)), st, self.vault.withdrawReserve, 1, st)
        else:
            assets = min(s.lender_max_withdraw, rng.randint(1, 10**12))
            if assets:
                shares = self.shares_for(assets, s, up=True)
                self.attempt(("ERC20InsufficientAllowance", (st, 0, shares)), st, self.vault.withdraw,
                            assets, st, self.lender)  # fmt: skip
        return Step("stranger", f"stranger attack {kind} on {victim}", False, Expect.unchanged(s))

    def op_lender(self, s: State) -> Step:
        rng = self.rng
        e = Expect.unchanged(s)
        # Steer utilisation to a random target, now and then right up to the kink's far end.
        target = rng.uniform(0.995, 0.999) if rng.random() < 0.05 else rng.uniform(0.3, 0.85)
        desired_idle = int(s.total_debt * (1 - target) / target)
        if s.total_debt and desired_idle < s.idle:
            want = s.idle - desired_idle
            if rng.random() < 0.1:
                assets = s.lender_max_withdraw + 1
                self.attempt(("ERC4626ExceededMaxWithdraw", (self.lender, assets, s.lender_max_withdraw)),
                            self.lender, self.vault.withdraw, assets, self.lender, self.lender)  # fmt: skip
                return Step("lender", "lender over-withdraws", False, e)
            assets = min(want, s.lender_max_withdraw)
            if assets == 0:
                return Step("lender", "lender has nothing to withdraw", False, e)
            burned = self.shares_for(assets, s, up=True)
            self.must(self.lender, self.vault.withdraw, assets, self.lender, self.lender)
            e.idle -= assets
            e.vault_usdc -= assets
            e.lender_shares -= burned
            return Step("lender", f"lender withdraws {assets}", True, e)
        assets = min(max(desired_idle - s.idle, 0), 10**13) + rng.randint(1, 10**11)
        minted = self.shares_for(assets, s, up=False)
        self.must(self.lender, self.vault.deposit, assets, self.lender)
        e.idle += assets
        e.vault_usdc += assets
        e.lender_shares += minted
        return Step("lender", f"lender deposits {assets}", True, e)

    # ---------------------------------------------------------------- invariant 9: everyone can leave

    def settle(self, pre: State, stale: bool) -> None:
        """Inside a snapshot: every borrower repays in full, then withdraws every balance, then the lender redeems
        everything; all must succeed. With `stale`, the collateral feeds are stale first: exit needs no price."""
        saved_now = self.node.now
        sid = self.chain.snapshot()
        try:
            if stale:
                self.node.now += 2 * 3600
            for key in self.owner_keys:
                if pre.pos[key].scaled:
                    self.must(key[0], self.engine.repay, key[0], key[1], MAX_UINT)
            for key in self.owner_keys:
                for i, bal in enumerate(pre.pos[key].bals):
                    if bal:
                        self.must(key[0], self.engine.withdraw, key[1], self.assets[i], bal, key[0])
            v = self.vault
            calls = [(v.totalScaledDebt, ()), (v.totalDebt, ()), (v.idle, ()), (v.reserve, ()),
                     (v.balanceOf, (self.lender,)), (v.totalAssets, ())]  # fmt: skip
            calls += [(self.engine.assetSupply, (a,)) for a in self.assets]
            calls += [(t.balanceOf, (self.engine.address,)) for t in self.tokens]
            r = self.node.reads(calls)
            total_scaled, total_debt, idle, reserve, shares, total_assets = r[:6]
            n = len(self.assets)
            assert (total_scaled, total_debt) == (0, 0), "debt left after everyone repaid in full"
            assert all(x["totalSupplied"] == 0 for x in r[6 : 6 + n]), "collateral booked after everyone withdrew"
            for i in range(n):
                assert r[6 + n + i] == pre.engine_bal[i] - pre.supplied[i], "engine kept user collateral"
            assert total_assets + reserve == idle, "with no debt, idle must back totalAssets and the reserve"
            self.must(self.lender, self.vault.redeem, shares, self.lender, self.lender)
            left_idle, left_reserve = self.node.reads([(v.idle, ()), (v.reserve, ())])
            assert left_idle >= left_reserve, "the reserve is not backed by cash once the lender has left"
        finally:
            self.chain.restore(sid)
            self.node.now = saved_now
        self.tally.settle_checks += 1
        assert self.read() == pre, "state differs after restoring the settle snapshot"

    # ---------------------------------------------------------------- driver

    def pick(self, s: State) -> str:
        liquidatable = any(s.health[k].liquidatable for k in self.owner_keys)
        weights = {
            "deposit": 16, "withdraw": 9, "move": 5, "borrow": 18, "repay": 9, "price": 11, "skip": 3,
            "liquidate": 30 if liquidatable else 3, "donate": 2, "stranger": 3, "lender": 5,
            "writeoff": 4 if liquidatable else 1,
        }  # fmt: skip
        return self.rng.choices(list(weights), weights=list(weights.values()))[0]

    def run(self, steps: int, seed: int) -> None:
        """Runs `steps` steps in episodes of at most EPISODE_STEPS. Each episode ends with a settle check and,
        when more follow, a restore to the state after setup: the test node keeps a step trace of every mined
        transaction in memory (about a megabyte each), so one unbroken long run would exhaust the machine."""
        self.started = time.monotonic()
        start_now, start_answers = self.node.now, list(self.answers)
        done = 0
        while done < steps:
            count = min(EPISODE_STEPS, steps - done)
            last = done + count == steps
            sid = None if last else self.chain.snapshot()
            self.episode(done, count, steps, seed)
            if sid is not None:
                self.chain.restore(sid)
                self.node.now, self.answers = start_now, list(start_answers)
            done += count
            self.tally.episodes += 1

    def episode(self, first: int, count: int, steps: int, seed: int) -> None:
        settle_at = set(self.rng.sample(range(first, first + count), k=min(count, max(3, count // 400))))
        pre = self.read()
        self.check_state(pre)
        step_no, desc = first - 1, "episode start"
        try:
            for step_no in range(first, first + count):
                kind = self.pick(pre)
                step = getattr(self, f"op_{kind}")(pre)
                desc = step.desc
                self.trail.append(f"{step_no}: {desc} ok={step.ok}")
                (self.tally.ok if step.ok else self.tally.reverted)[kind] += 1
                post = self.read()
                self.check_state(post)
                self.check_step(pre, post, step)
                self.check_liveness(post)
                pre = post
                self.tally.max_utilization = max(self.tally.max_utilization, post.utilization)
                if (step_no + 1) % 1000 == 0:
                    rate = (step_no + 1) / (time.monotonic() - self.started)
                    print(
                        f"[invariants] seed={seed} step {step_no + 1}/{steps} ({rate:.1f} steps/s, "
                        f"liquidations {self.tally.liquidations}, node memory {_node_rss_mb(self.chain)} MB)",
                        flush=True,
                    )
                if step_no in settle_at:
                    desc = "settle check"
                    self.settle(pre, stale=self.rng.random() < 0.5)
            desc = "final settle check of the episode"
            self.settle(pre, stale=False)
        except Exception as exc:
            trail = "\n  ".join(self.trail)
            raise AssertionError(
                f"campaign failed: seed={seed} step={step_no} ({desc}): {type(exc).__name__}: {exc}\n"
                f"last steps:\n  {trail}"
            ) from exc


def _node_rss_mb(chain: Any) -> int | None:
    """Resident memory of the test node process (Linux), for the progress lines."""
    process = getattr(chain.provider, "process", None)
    try:
        with open(f"/proc/{process.pid}/status") as status:
            return int(status.read().split("VmRSS:")[1].split()[0]) // 1024
    except (AttributeError, OSError, IndexError, ValueError):
        return None


def _profile() -> tuple[int, int]:
    """Steps and seed from CK_INVARIANT_STEPS / CK_LONG / CK_SEED."""
    default = LONG_STEPS if os.environ.get("CK_LONG") == "1" else SHORT_STEPS
    steps = int(os.environ.get("CK_INVARIANT_STEPS") or default)
    return steps, int(os.environ.get("CK_SEED") or DEFAULT_SEED)


def _setup(
    system: Any, chain: Any, lender: Any, liquidator: Any, owners: list[Any], third: Any
) -> tuple[Node, dict[str, Handle]]:
    h: dict[str, Handle] = {
        "engine": Handle("engine", system.engine),
        "vault": Handle("vault", system.vault),
        "router": Handle("router", system.router),
        "lens": Handle("lens", system.lens),
        "USDC": Handle("USDC", system.usdc),
    }
    for sym, tok in system.tokens.items():
        h[sym] = Handle(sym, tok)
    for sym, feed in system.feeds.items():
        h[f"feed:{sym}"] = Handle(f"feed:{sym}", feed)
    node = Node(chain.provider.web3, [h["engine"], h["vault"], h["router"], h["USDC"]])
    node.now = int(node.rpc("eth_getBlockByNumber", ["latest", False])["timestamp"], 16)
    # Stocks of every token and unlimited approvals, so funding never limits an operation.
    for who in [*owners, third, liquidator]:
        for sym in [*system.tokens, "USDC"]:
            dec = 6 if sym == "USDC" else system.tokens[sym].decimals()
            node.send(who.address, h[sym].mint, who.address, STOCK_WHOLE_TOKENS * 10**dec)
            node.send(who.address, h[sym].approve, system.engine.address, MAX_UINT)
    node.send(lender.address, h["USDC"].mint, lender.address, STOCK_WHOLE_TOKENS * 10**6)
    return node, h


def test_random_operations_keep_every_invariant(system, accounts, chain, admin, lender, alice, bob, liquidator,
                                                stranger):  # fmt: skip
    """Random sequences of every user, liquidator, market and attacker action never break the accounting, solvency,
    liquidation, donation, share-price or authorisation invariants, and everyone can always repay and exit."""
    steps, seed = _profile()
    owners = [alice, bob, accounts[6], accounts[7]]
    third = accounts[8]
    node, handles = _setup(system, chain, lender, liquidator, owners, third)
    actors = {"admin": admin, "lender": lender, "liquidator": liquidator, "stranger": stranger, "third": third,
              "owners": owners}  # fmt: skip
    campaign = Campaign(node, handles, actors, chain, random.Random(seed))
    started = time.monotonic()
    campaign.run(steps, seed)
    elapsed = time.monotonic() - started
    t = campaign.tally
    ok = " ".join(f"{k}={v}" for k, v in sorted(t.ok.items()))
    rev = " ".join(f"{k}={v}" for k, v in sorted(t.reverted.items()))
    print(
        f"\ninvariant campaign: seed={seed} steps={steps} in {elapsed:.0f}s ({steps / elapsed:.1f}/s); ok: {ok}; "
        f"reverted: {rev}; liquidations={t.liquidations} (full seizures {t.full_seizures}); "
        f"bad debt events={t.bad_debt_events} assets={t.bad_debt_assets} covered={t.covered} "
        f"socialized={t.socialized} fully covered={t.fully_covered}; write-offs={t.write_offs} (and in "
        f"{t.written_off_in_liquidation} liquidations); refused for lowering health={t.lowers_health_refused}; "
        f"liveness checks={t.liveness_checks}; max utilization "
        f"{t.max_utilization / WAD:.3f}; settle checks={t.settle_checks}; episodes={t.episodes}; "
        f"node glitches={node.glitches}"
    )
    print("  reverts by function and error:", dict(sorted(t.errors.items())))
    if steps >= 300:
        assert t.liquidations >= 1, "the campaign never liquidated"
        assert t.bad_debt_events >= 1, "the campaign never realised bad debt"
        assert min(t.ok["borrow"], t.ok["repay"], t.ok["deposit"], t.ok["withdraw"]) >= 5, f"too few ops: {ok}"
        assert t.ok["move"] >= 1, "no collateral move succeeded"
        assert t.write_offs + t.written_off_in_liquidation >= 1, "no insolvency was ever written off"
        assert t.liveness_checks >= 10, "liveness was checked on too few liquidatable accounts"
