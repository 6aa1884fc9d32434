"""The drill runner end to end (keeper.drills, `keeper drill`): the small scenarios in tests/drills/
replayed on the drill's own Anvil, with the real contracts deployed by `ape run deploy` and the real keeper
in-process. Every verdict comes from what the chain showed: the DrillRecord's blocks, liquidations and keeper
transactions, or eth_call / eth_getLogs on the drill's node while it runs (the `on_block` callback); never from the
keeper's logs or metrics. One drill per fault kind, shared by its tests through a module-scoped fixture."""

from __future__ import annotations

import copy
import json
import math
import os
import subprocess
import sys
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from eth_abi.abi import decode as abi_decode
from eth_abi.abi import encode as abi_encode
from eth_utils.crypto import keccak

from keeper.chain.deployment import load_deployment
from keeper.chain.node import AnvilProcess, Rpc, RpcError
from keeper.drills import report
from keeper.drills.deploy import deploy_embedded, seeding_params
from keeper.drills.healths import read_healths
from keeper.drills.record import BlockRecord, DrillOptions, DrillRecord, KeeperTx, LiquidationRecord, Progress
from keeper.drills.run import run_drill
from keeper.drills.scenario import Fault, Scenario, load_scenario
from keeper.drills.seeding import plan_seeding
from keeper.engine.keeper import MAX_BACKOFF_S
from keeper.engine.strategy import LIQUIDATION_GAS_ESTIMATE

ROOT = Path(__file__).resolve().parent.parent
DRILLS = Path(__file__).resolve().parent / "drills"
LOCAL_CONFIG = ROOT / "deployments" / "configs" / "local.toml"
WAD = 10**18
GWEI = 10**9
USDC = 10**6
LIBRARY = [
    "black-thursday",
    "ftx-collapse",
    "gas-spike-crash",
    "grinding-bear-gaps",
    "may-19-2021",
    "october-10-2025",
    "october-10-2025-books",
    "pinned-lower-bound",
    "rpc-outage-crash",
    "slide-then-gap",
    "stablecoin-spike",
    "stale-feed-crash",
    "steth-depeg-june-2022",
]
PLOTS = ["price.png", "accounts.png", "health.png", "latency.png"]
BORROW = keccak(text="borrow(uint8,uint256,address)")[:4]
SEQUENCER_DOWN = keccak(text="SequencerDown()")[:4]
GRID_VIEW = keccak(text="grid(address)")[:4]
SEQUENCER_GRACE = keccak(text="SequencerGracePeriod(uint256,uint256)")[:4]


# ---------------------------------------------------------------------------------------------- helpers


def scenario(name: str) -> Scenario:
    return load_scenario(str(DRILLS / f"{name}.toml"))


def local_config() -> dict[str, Any]:
    return tomllib.loads(LOCAL_CONFIG.read_text(encoding="utf-8"))


def liquidatable(b: BlockRecord, i: int) -> bool:
    """What `liquidate` accepts at the end of block b, recounted from the record: valid prices, debt, health < 1."""
    return b.ok[i] and b.debt[i] > 0 and b.health[i] < WAD


def liquidated_log_topic(record: Path) -> str:
    """The Liquidated event's topic, from the deployed engine's ABI."""
    abi = load_deployment(record, 31337).abis["MarginEngine"]
    event = next(e for e in abi if e.get("type") == "event" and e["name"] == "Liquidated")
    signature = f"Liquidated({','.join(i['type'] for i in event['inputs'])})"
    return "0x" + keccak(text=signature).hex()


def revert_data(exc: RpcError) -> bytes:
    data = exc.data
    if isinstance(data, dict):
        data = data.get("data")
    return bytes.fromhex(str(data or "0x")[2:])


class Probe:
    """The drill's `on_block` callback: it looks at the drill's node while the drill runs. At the last block it
    reads every Liquidated log the engine has emitted since block 0 (the chain's own list, to compare with the
    record). `record` is the deployment record the drill uses; it is written before the replay starts."""

    def __init__(self, record: Path) -> None:
        self.record = record
        self.heads: list[int] = []
        self.chain_liquidations: set[tuple[str, int]] | None = None
        self._rpc: Rpc | None = None

    def __call__(self, p: Progress) -> None:
        if self._rpc is None or self._rpc.url != p.node_url:
            self._rpc = Rpc(p.node_url)
        self.heads.append(p.head)
        self.look(self._rpc, p)
        if p.block == p.blocks:
            dep = load_deployment(self.record, 31337)
            logs = self._rpc.call(
                "eth_getLogs",
                {
                    "address": dep.engine,
                    "fromBlock": "0x0",
                    "toBlock": hex(p.head),
                    "topics": [liquidated_log_topic(self.record)],
                },
            )
            self.chain_liquidations = {(str(x["transactionHash"]), int(x["logIndex"], 16)) for x in logs}
            self._rpc.close()

    def look(self, rpc: Rpc, p: Progress) -> None:
        """Per block; for subclasses."""


class BorrowProbe(Probe):
    """Also asks the engine at every block whether `owner` could borrow 1 USDC more on `sub` (an eth_call from the
    owner at the block just mined: the drill mines with automine off, so no transaction is sent)."""

    def __init__(self, record: Path, owner: str, sub: int) -> None:
        super().__init__(record)
        self.owner = owner
        self.sub = sub
        self.outcomes: dict[int, tuple[str, tuple[int, ...]]] = {}  # scenario second -> ("ok" | error, args)
        self.engine: str | None = None

    def look(self, rpc: Rpc, p: Progress) -> None:
        if self.engine is None:
            self.engine = load_deployment(self.record, 31337).engine
        engine = self.engine
        data = BORROW + abi_encode(["uint8", "uint256", "address"], [self.sub, USDC, self.owner])
        try:
            rpc.eth_call(engine, data, p.head, sender=self.owner)
            self.outcomes[p.scenario_s] = ("ok", ())
        except RpcError as exc:
            raw = revert_data(exc)
            if raw[:4] == SEQUENCER_DOWN:
                self.outcomes[p.scenario_s] = ("SequencerDown", ())
            elif raw[:4] == SEQUENCER_GRACE:
                self.outcomes[p.scenario_s] = ("SequencerGracePeriod", abi_decode(["uint256", "uint256"], raw[4:]))
            else:
                self.outcomes[p.scenario_s] = (f"revert 0x{raw.hex()}", ())


@dataclass
class Run:
    """One drill: its record, its folder and what the probe saw."""

    rec: DrillRecord
    out: Path
    probe: Probe

    def __post_init__(self) -> None:
        self.index = {b.number: j for j, b in enumerate(self.rec.blocks)}
        self.accounts = {a: i for i, a in enumerate(self.rec.accounts)}

    @property
    def sc(self) -> Scenario:
        return self.rec.scenario

    def account(self, liq: LiquidationRecord) -> int:
        return self.accounts[(liq.owner, liq.sub_id)]

    def parent(self, liq: LiquidationRecord) -> BlockRecord:
        j = self.index[liq.block]
        assert j > 0, f"liquidation in the first replay block {liq.block}"
        return self.rec.blocks[j - 1]

    def fault(self, kind: str, asset: str | None = None, gwei: float | None = None) -> Fault:
        return next(
            f
            for f in self.sc.faults
            if f.kind == kind and (asset is None or f.asset == asset) and (gwei is None or f.gwei == gwei)
        )

    def during(self, fault: Fault) -> list[BlockRecord]:
        """The blocks mined while the fault was on (the drill applies a fault before the first block at or after
        its `at` and lifts it before the first block at or after its end)."""
        return [b for b in self.rec.blocks if fault.at <= b.scenario_s < fault.end]

    def liquidation_blocks(self, i: int) -> list[int]:
        return sorted(x.block for x in self.rec.liquidations if self.account(x) == i)

    def keeper_mined(self, numbers: set[int]) -> list[KeeperTx]:
        return [t for t in self.rec.keeper_txs.values() if t.mined_block in numbers]

    def summary(self) -> dict[str, Any]:
        doc = report.build(self.rec)
        report.validate(doc)
        summary: dict[str, Any] = doc["summary"]
        return summary

    def missed(self) -> list[int]:
        last = self.rec.blocks[-1]
        return [i for i in range(len(self.rec.accounts)) if liquidatable(last, i)]

    def caught_up(self, j: int, within: int) -> None:
        """Every account liquidatable in block index j whose prices were invalid in the block before it (the ones
        a feed fault hid) is liquidated within `within` blocks after j. There must be some."""
        blocks = self.rec.blocks
        hidden = [i for i in range(len(self.rec.accounts)) if liquidatable(blocks[j], i) and not blocks[j - 1].ok[i]]
        assert hidden, f"no account was hidden by the fault and liquidatable at block {blocks[j].number}"
        for i in hidden:
            after = [n for n in self.liquidation_blocks(i) if n > blocks[j].number]
            assert after, f"account {self.rec.accounts[i]} liquidatable at block {blocks[j].number} never liquidated"
            assert after[0] - blocks[j].number <= within, (self.rec.accounts[i], blocks[j].number, after)


def drill(
    tmp_path_factory: pytest.TempPathFactory, name: str, probe: Callable[[Path], Probe] = Probe, **options: Any
) -> Run:
    """Run the scenario tests/drills/<name>.toml on an embedded Anvil, watched by `probe(deployment record)`."""
    out = tmp_path_factory.mktemp(name)
    watcher = probe(out / "31337.json")
    rec = run_drill(DrillOptions(scenario=scenario(name), out=out, on_block=watcher, **options))
    return Run(rec, out, watcher)


def keeper_cli(cwd: Path, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    """`keeper ...` as an operator runs it: the installed script beside this Python, KEEPER_* variables unset."""
    exe = Path(sys.executable).with_name("keeper")
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEEPER_")}
    return subprocess.run([str(exe), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


# ---------------------------------------------------------------------------------------------- the drills


@pytest.fixture(scope="module")
def crash(tmp_path_factory: pytest.TempPathFactory) -> Run:
    return drill(tmp_path_factory, "crash", settle_blocks=5)


@pytest.fixture(scope="module")
def stale(tmp_path_factory: pytest.TempPathFactory) -> Run:
    return drill(tmp_path_factory, "stale", settle_blocks=4)


@pytest.fixture(scope="module")
def zero_negative(tmp_path_factory: pytest.TempPathFactory) -> Run:
    return drill(tmp_path_factory, "zero-negative", settle_blocks=4)


@pytest.fixture(scope="module")
def sequencer(tmp_path_factory: pytest.TempPathFactory) -> Run:
    sc = scenario("sequencer")
    plans = plan_seeding(sc, seeding_params(LOCAL_CONFIG), sc.accounts.count, sc.seed)
    best = max(plans, key=lambda p: p.health)  # room to borrow 1 USDC more before the fault
    return drill(
        tmp_path_factory, "sequencer", probe=lambda record: BorrowProbe(record, best.owner, best.sub), settle_blocks=3
    )


@pytest.fixture(scope="module")
def base_fee(tmp_path_factory: pytest.TempPathFactory) -> Run:
    return drill(tmp_path_factory, "base-fee", settle_blocks=12)


@pytest.fixture(scope="module")
def outage(tmp_path_factory: pytest.TempPathFactory) -> Run:
    return drill(tmp_path_factory, "outage", settle_blocks=6)


class GridProbe(Probe):
    """Also reads the engine's grid size (IScenarioGrid.grid(debt asset).count) at every block."""

    def __init__(self, record: Path) -> None:
        super().__init__(record)
        self.counts: set[int] = set()

    def look(self, rpc: Rpc, p: Progress) -> None:
        dep = load_deployment(self.record, 31337)
        raw = rpc.eth_call(dep.engine, GRID_VIEW + abi_encode(["address"], [dep.debt.token]), p.head)
        self.counts.add(int.from_bytes(raw[:32], "big"))


@pytest.fixture(scope="module")
def hedged(tmp_path_factory: pytest.TempPathFactory) -> Run:
    return drill(tmp_path_factory, "hedged", probe=GridProbe, settle_blocks=5)


@pytest.fixture(scope="module")
def hedged_additive(tmp_path_factory: pytest.TempPathFactory) -> Run:
    out = tmp_path_factory.mktemp("hedged-additive")
    watcher = GridProbe(out / "31337.json")
    sc = replace(scenario("hedged"), margin=None)
    return Run(run_drill(DrillOptions(scenario=sc, out=out, on_block=watcher, settle_blocks=5)), out, watcher)


DRILL_FIXTURES = ["crash", "stale", "zero_negative", "sequencer", "base_fee", "outage", "hedged"]


@pytest.mark.parametrize("name", DRILL_FIXTURES)
def test_record_is_the_chain(name: str, request: pytest.FixtureRequest) -> None:
    """Whatever the fault: one record per block, consecutive, `block_time_s` apart; the record's liquidations are
    exactly the engine's Liquidated logs since block 0; each was sent by the keeper, mined successfully in that
    block, for a seeded account that was liquidatable in the parent block; the report follows the schema."""
    run: Run = request.getfixturevalue(name)
    rec = run.rec
    bt = run.sc.block_time_s
    assert rec.blocks[0].number == rec.start_block
    for k, b in enumerate(rec.blocks):
        assert b.number == rec.start_block + k
        assert b.scenario_s == k * bt
        assert b.timestamp == rec.blocks[0].timestamp + k * bt
        assert len(b.ok) == len(b.health) == len(b.debt) == len(rec.accounts)
    assert rec.replay_blocks == math.ceil(run.sc.duration_s / bt) + 1
    assert run.probe.heads == [b.number for b in rec.blocks]

    assert rec.liquidations
    assert {(x.tx, x.log_index) for x in rec.liquidations} == run.probe.chain_liquidations
    for liq in rec.liquidations:
        i = run.account(liq)
        assert liquidatable(run.parent(liq), i), (liq, run.parent(liq).health[i])
        assert liq.liquidator == rec.keeper
        assert liq.repaid > 0
        assert liq.seized > 0
        tx = rec.keeper_txs[liq.tx]
        assert (tx.mined_block, tx.status, tx.account) == (liq.block, 1, (liq.owner, liq.sub_id))
    report.validate(report.build(rec))


# ---------------------------------------------------------------------------------------------- hedged books


def test_hedged_books_under_the_grid(hedged: Run, hedged_additive: Run) -> None:
    """The scenario's [margin] grid is on the engine for the whole drill (and none under --additive); seeding
    reaches the drawn healths as the engine figures them under the grid; the keeper liquidates every loop the
    depeg makes liquidatable, none healthy, without bad debt; and against the same collateral the grid lends
    what its binding scenario supports over what the additive lt does (0.087752/0.092231 over 0.81)."""
    sc = hedged.sc
    assert sc.margin is not None
    assert hedged.probe.counts == {len(sc.margin.scenarios)}
    assert hedged_additive.probe.counts == {0}
    plans = {
        (p.owner, p.sub): p.health
        for p in plan_seeding(sc, seeding_params(LOCAL_CONFIG.parent / "local-weth.toml"), sc.accounts.count, sc.seed)
    }
    for (owner, sub), h in zip(hedged.rec.accounts, hedged.rec.initial_health, strict=True):
        assert h == pytest.approx(plans[(owner, sub)], rel=1e-3)  # the chain's grid health after seeding
    summary = hedged.summary()
    assert summary["liquidated_accounts"] > 0
    assert summary["missed_liquidations"] == 0
    assert summary["healthy_liquidations"] == 0
    assert summary["bad_debt_usd"] == 0
    grid_debt = hedged.rec.start_totals["debt_usd"]
    additive_debt = hedged_additive.rec.start_totals["debt_usd"]
    assert hedged.rec.start_totals["collateral_usd"] == pytest.approx(
        hedged_additive.rec.start_totals["collateral_usd"]
    )
    assert grid_debt / additive_debt == pytest.approx((0.087752 / 0.092231) / 0.81, rel=2e-3)


# ---------------------------------------------------------------------------------------------- several debts


class DebtProbe(Probe):
    """Also collects, at the last block, every LiquidatedDebt log since block 0 (a further debt repaid)."""

    def __init__(self, record: Path) -> None:
        super().__init__(record)
        self.debt_liquidations: list[dict[str, Any]] = []

    def look(self, rpc: Rpc, p: Progress) -> None:
        if p.block != p.blocks:
            return
        dep = load_deployment(self.record, 31337)
        topic = (
            "0x" + keccak(text="LiquidatedDebt(address,address,uint8,address,address,uint256,uint256,uint256)").hex()
        )
        self.debt_liquidations = rpc.call(
            "eth_getLogs", {"address": dep.engine, "fromBlock": "0x0", "toBlock": hex(p.head), "topics": [topic]}
        )


@pytest.fixture(scope="module")
def books(tmp_path_factory: pytest.TempPathFactory) -> Run:
    return drill(tmp_path_factory, "books", probe=DebtProbe, settle_blocks=5)


def test_books_with_several_debts(books: Run) -> None:
    """`[[accounts.book]]` books on a market with further debt assets (`borrow = true`): seeding reaches each
    account's drawn health by the engine's figures with the book's legs, and when BTC rises the keeper liquidates
    every account that becomes liquidatable, repaying WBTC from its inventory (`liquidateDebt`) as well as USDC,
    never a healthy one; the record's liquidations are the chain's Liquidated and LiquidatedDebt logs."""
    sc = books.sc
    params = seeding_params(LOCAL_CONFIG.parent / "local-multi.toml")
    plans = {(p.owner, p.sub): p for p in plan_seeding(sc, params, sc.accounts.count, sc.seed)}
    assert {p.book for p in plans.values()} == {"eth-vs-btc", "basket", "link"}
    for (owner, sub), h in zip(books.rec.accounts, books.rec.initial_health, strict=True):
        assert h == pytest.approx(plans[(owner, sub)].health, rel=1e-3)
    summary = books.summary()
    assert summary["liquidated_accounts"] > 0
    assert summary["missed_liquidations"] == 0
    assert summary["healthy_liquidations"] == 0
    probe = books.probe
    assert isinstance(probe, DebtProbe)
    assert probe.chain_liquidations is not None
    further = {(str(x["transactionHash"]), int(x["logIndex"], 16)) for x in probe.debt_liquidations}
    assert further, "no further debt was repaid"
    assert {(x.tx, x.log_index) for x in books.rec.liquidations} == probe.chain_liquidations | further
    wbtc = next(a.token for a in load_deployment(books.out / "31337.json", 31337).assets if a.symbol == "WBTC")
    assert all("0x" + x["topics"][3][-40:] == wbtc.lower() for x in probe.debt_liquidations)
    for liq in books.rec.liquidations:
        assert liquidatable(books.parent(liq), books.account(liq))
        assert liq.liquidator == books.rec.keeper


# ---------------------------------------------------------------------------------------------- 1. baseline crash


def test_crash_report_files(crash: Run) -> None:
    """report.write: report.json (the validated build, as written), report.md linking the four plots, four PNGs."""
    doc = report.build(crash.rec)
    report.validate(doc)
    paths = report.write(crash.rec, crash.out)
    for name in ["report.json", "report.md", *PLOTS]:
        path = crash.out / name
        assert path in paths.values()
        assert path.stat().st_size > 0, name
    for name in PLOTS:
        assert (crash.out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    written = json.loads((crash.out / "report.json").read_text(encoding="utf-8"))
    assert written == json.loads(json.dumps(doc))
    assert written["drill"]["target"] == "embedded"
    assert written["scenario"] == "test-crash"
    assert written["accounts"] == 20
    md = (crash.out / "report.md").read_text(encoding="utf-8")
    assert md.startswith("# Drill report: test-crash\n")
    for name in PLOTS:
        assert f"]({name})" in md


def test_crash_summary_recount(crash: Run) -> None:
    """The summary against a recount from the record: every account that became liquidatable was liquidated, the
    first liquidation of each came in the very next block, nothing healthy was touched, nothing missed or
    submitted twice."""
    rec = crash.rec
    n = len(rec.accounts)
    summary = crash.summary()
    ever = {i for b in rec.blocks for i in range(n) if liquidatable(b, i)}
    liquidated = {crash.account(x) for x in rec.liquidations}
    assert rec.liquidations
    assert summary["liquidatable_accounts"] == len(ever) > 0
    assert summary["liquidated_accounts"] == len(liquidated) == len(ever)
    assert liquidated == ever
    assert summary["missed_liquidations"] == len(crash.missed()) == 0
    healthy = [x for x in rec.liquidations if not liquidatable(crash.parent(x), crash.account(x))]
    assert summary["healthy_liquidations"] == len(healthy) == 0
    # Duplicates, recounted: two keeper transactions for one account, different nonces, in the pool at the same
    # inspection (a transaction seen after block s and mined in block m was pending at inspections s .. m-1).
    pending = [t for t in rec.keeper_txs.values() if t.account is not None and t.seen_block >= 0]
    overlapping = [
        (a.hash, b.hash)
        for a in pending
        for b in pending
        if a.hash < b.hash
        and a.account == b.account
        and a.nonce != b.nonce
        and a.seen_block < (b.mined_block or math.inf)
        and b.seen_block < (a.mined_block or math.inf)
    ]
    assert summary["duplicate_submissions"] == sum(t.duplicate for t in rec.keeper_txs.values()) == 0
    assert overlapping == []
    # Latency: from the first block an account is liquidatable to its first liquidation.
    for i in ever:
        first = next(b.number for b in rec.blocks if liquidatable(b, i))
        assert crash.liquidation_blocks(i)[0] - first == 1, rec.accounts[i]
    assert summary["latency_blocks_p50"] == summary["latency_blocks_p99"] == summary["latency_blocks_max"] == 1
    penalty = sum(x.seized_usd - x.repaid_usd for x in rec.liquidations)
    assert penalty > 0
    assert summary["user_penalty_usd"] == pytest.approx(penalty, abs=1e-5)
    assert summary["reverted_liquidations"] == 0


def test_crash_seeding(crash: Run) -> None:
    """Seeding is reproducible from the seed (the plan is a pure function of scenario and seed), the record holds the
    planned accounts, and the chain's initial healths are the drawn ones: inside the scenario's range, including
    healths below lt/ltv that borrowing alone could not reach."""
    sc = crash.sc
    params = seeding_params(LOCAL_CONFIG)
    plans = plan_seeding(sc, params, 20, sc.seed)
    again = plan_seeding(sc, params, 20, sc.seed)
    other = plan_seeding(sc, params, 20, sc.seed + 1)
    assert plans == again
    assert [p.health for p in other] != [p.health for p in plans]
    assert {p.owner for p in other}.isdisjoint({p.owner for p in plans})
    rec = crash.rec
    assert rec.seed == sc.seed == 42
    assert rec.accounts == [(p.owner, p.sub) for p in plans]
    assert len(set(rec.accounts)) == 20
    lo, hi = sc.accounts.health
    for plan, health in zip(plans, rec.initial_health, strict=True):
        assert health == pytest.approx(plan.health, abs=1e-3)
        assert lo - 1e-3 <= health <= hi + 1e-3
    floor = min(params.lt[s] / params.ltv[s] for s in sc.accounts.assets)  # 0.85 / 0.80 for WETH
    assert min(rec.initial_health) < floor


def test_report_schema_rejects_corruption(crash: Run) -> None:
    """The schema is strict: a missing summary key, a negative count, an unknown key or a malformed hash fail."""
    doc = report.build(crash.rec)
    report.validate(doc)
    missing = copy.deepcopy(doc)
    del missing["summary"]["missed_liquidations"]
    negative = copy.deepcopy(doc)
    negative["summary"]["liquidated_accounts"] = -1
    extra = copy.deepcopy(doc)
    extra["summary"]["liquidations_total"] = 3
    bad_tx = copy.deepcopy(doc)
    bad_tx["liquidations"][0]["tx"] = "0x1234"
    for broken in (missing, negative, extra, bad_tx):
        with pytest.raises(jsonschema.ValidationError):
            report.validate(broken)


def test_percentile_nearest_rank() -> None:
    """Nearest rank: always an observed value; 0 for none."""
    assert report.percentile([], 99) == 0
    assert report.percentile([5], 50) == 5
    assert report.percentile([3, 1, 2, 4], 50) == 2
    assert report.percentile(list(range(1, 101)), 99) == 99
    assert report.percentile([1] * 99 + [7], 99) == 1
    assert report.percentile([1] * 98 + [7, 7], 99) == 7


# ---------------------------------------------------------------------------------------------- 2. stale feed


def test_stale_feed_refused_then_caught_up(stale: Run) -> None:
    """WETH's feed is frozen past its max_staleness: the router refuses it exactly from max_staleness after its last
    update until the fault ends; while it is refused WETH is never seized (accounts with other collateral are
    liquidated on that, valued with WETH at zero), and when the fault ends (the market price is pushed) the accounts
    it hid are liquidated within two blocks."""
    rec = stale.rec
    fault = stale.fault("stale", "WETH")
    max_staleness = next(a["max_staleness"] for a in local_config()["asset"] if a["symbol"] == "WETH")
    assert fault.duration > max_staleness
    # The feed's last update: the last step before the fault refreshes every feed.
    last_step = max(s.at for s in stale.sc.steps if s.at < fault.at)
    updated = next(b.timestamp for b in rec.blocks if b.scenario_s == last_step)
    refused = [b.number for b in rec.blocks if b.oracle["WETH"] is None]
    expected = [b.number for b in stale.during(fault) if b.timestamp - updated > max_staleness]
    assert refused == expected
    assert len(refused) >= 2
    for b in rec.blocks:
        assert b.oracle["WBTC"] is not None
        assert b.oracle["USDC"] is not None

    # Accounts whose only collateral is WETH cannot be acted on while its price is refused; the others are valued
    # with WETH at zero and may be liquidated on their other collateral, never on WETH.
    holders = {i for b in rec.blocks if b.oracle["WETH"] is None for i in range(len(rec.accounts)) if not b.ok[i]}
    assert holders
    for liq in rec.liquidations:
        parent = stale.parent(liq)
        if parent.oracle["WETH"] is None:
            assert parent.ok[stale.account(liq)], liq
            assert liq.collateral != "WETH"
    # Accounts were liquidated while WETH was frozen (the fault is on one feed only).
    assert any(stale.parent(x).oracle["WETH"] is None for x in rec.liquidations)

    back = next(j for j in range(stale.index[refused[-1]] + 1, len(rec.blocks)) if rec.blocks[j].oracle["WETH"])
    assert rec.blocks[back].scenario_s == math.ceil(fault.end / stale.sc.block_time_s) * stale.sc.block_time_s
    stale.caught_up(back, within=2)
    assert stale.summary()["missed_liquidations"] == len(stale.missed()) == 0


# ---------------------------------------------------------------------------------------------- 3. zero, negative


@pytest.mark.parametrize(("kind", "asset"), [("zero", "WETH"), ("negative", "WBTC")])
def test_invalid_answer_refused_then_caught_up(zero_negative: Run, kind: str, asset: str) -> None:
    """A zero or negative answer is refused for exactly the fault's blocks; while it is, the asset is never seized
    and only accounts with other collateral are liquidated (on that), and the accounts it hid are liquidated within
    two blocks of its end."""
    run = zero_negative
    rec = run.rec
    fault = run.fault(kind, asset)
    window = {b.number for b in run.during(fault)}
    assert window
    assert {b.number for b in rec.blocks if b.oracle[asset] is None} == window
    hidden = {i for b in rec.blocks if b.number in window for i in range(len(rec.accounts)) if not b.ok[i]}
    assert hidden
    for liq in rec.liquidations:
        parent = run.parent(liq)
        if parent.number in window:
            assert parent.ok[run.account(liq)], liq  # it had collateral with a valid price
            assert liq.collateral != asset
    back = run.index[max(window)] + 1
    assert rec.blocks[back].oracle[asset] is not None
    run.caught_up(back, within=2)
    assert run.summary()["missed_liquidations"] == len(run.missed()) == 0


# ---------------------------------------------------------------------------------------------- 4. sequencer


def test_sequencer_down_blocks_borrowing_not_liquidations(sequencer: Run) -> None:
    """Down, then the grace period: the engine refuses a borrow (SequencerDown, then SequencerGracePeriod from the
    block the sequencer came back up) that it accepted before the fault, and liquidations go on in both."""
    rec = sequencer.rec
    probe = sequencer.probe
    assert isinstance(probe, BorrowProbe)
    fault = sequencer.fault("sequencer_down")
    grace = int(local_config()["sequencer"]["grace_period"])
    up = next(b for b in rec.blocks if b.scenario_s >= fault.end)
    assert up.scenario_s == fault.end  # the scenario puts the end on a block
    before = [b.scenario_s for b in rec.blocks if b.scenario_s < fault.at]
    down = [b.scenario_s for b in sequencer.during(fault)]
    in_grace = [b.scenario_s for b in rec.blocks if fault.end <= b.scenario_s and b.timestamp - up.timestamp <= grace]
    assert before
    assert down
    assert in_grace
    assert len(before) + len(down) + len(in_grace) == len(rec.blocks)  # the drill ends inside the grace period
    for s in before:
        assert probe.outcomes[s] == ("ok", ()), s
    for s in down:
        assert probe.outcomes[s] == ("SequencerDown", ()), s
    for s in in_grace:
        assert probe.outcomes[s] == ("SequencerGracePeriod", (up.timestamp, grace)), s

    second = {b.number: b.scenario_s for b in rec.blocks}
    during_down = [x for x in rec.liquidations if fault.at <= second[x.block] < fault.end]
    during_grace = [x for x in rec.liquidations if second[x.block] >= fault.end]
    assert during_down
    assert during_grace
    assert sequencer.summary()["missed_liquidations"] == len(sequencer.missed()) == 0


# ---------------------------------------------------------------------------------------------- 5. base fee


def test_base_fee_of_80_gwei(base_fee: Run) -> None:
    """80 gwei (Black Thursday's level): every block of the window has that base fee exactly, and the keeper's
    liquidations are mined in it, each paying at least the base fee."""
    run = base_fee
    fault = run.fault("base_fee", gwei=80)
    window = run.during(fault)
    assert window
    assert [b.base_fee for b in window] == [80 * GWEI] * len(window)
    base = {b.number: b.base_fee for b in run.rec.blocks}
    mined = run.keeper_mined({b.number for b in window})
    assert mined
    for tx in mined:
        assert tx.status == 1
        assert tx.gas_cost_wei // tx.gas_used >= base[tx.mined_block or 0] == 80 * GWEI
    assert {x.block for x in run.rec.liquidations} & {b.number for b in window}


def test_base_fee_over_the_old_cap_does_not_stop_liquidations_that_pay_for_it(base_fee: Run) -> None:
    """500 gwei, far over the fixed 200 gwei cap the keeper used to bid under (and wait behind): liquidations are bid
    by their economics instead. Those that earn more than their gas at that fee are liquidated in the spike, the very
    next block; every liquidation the keeper got mined, in the spike or not, earned more than the fee it paid
    (measured from the chain: seized minus repaid at the oracle's prices, minus gas used x effective gas price at
    the native token's price); and an account left waiting through the spike is one whose liquidation, when it
    came, earned less than its estimated gas at the spike's base fee."""
    run = base_fee
    rec = run.rec
    fault = run.fault("base_fee", gwei=500)
    window = run.during(fault)
    spike = 500 * GWEI
    assert [b.base_fee for b in window] == [spike] * len(window)
    assert spike > 200 * GWEI
    in_window = {b.number for b in window}
    mined = [x for x in rec.liquidations if x.block in in_window]
    assert mined, "nothing liquidated during the spike: the keeper waited for the fee to fall"
    step = next(b.number for b in rec.blocks if b.scenario_s >= fault.at)  # the crash leg's price update
    assert min(x.block for x in mined) == step + 1
    eth = rec.eth_usd
    for liq in rec.liquidations:
        tx = rec.keeper_txs[liq.tx]
        fee_usd = tx.gas_cost_wei / 1e18 * eth[liq.block]
        assert tx.gas_cost_wei // tx.gas_used >= next(b.base_fee for b in rec.blocks if b.number == liq.block)
        assert liq.seized_usd - liq.repaid_usd - fee_usd >= 0, (liq, fee_usd)
    waited = {
        i
        for b in window
        for i in range(len(rec.accounts))
        if liquidatable(b, i) and not any(x.block in in_window and x.block > b.number for x in _liqs(run, i))
    }
    for i in waited:
        later = [x for x in _liqs(run, i) if x.block > window[-1].number]
        for x in later[:1]:
            could_pay = LIQUIDATION_GAS_ESTIMATE * spike / 1e18 * eth[window[-1].number]
            assert x.seized_usd - x.repaid_usd < could_pay, (rec.accounts[i], x, could_pay)
    assert run.summary()["keeper_fees_paid_eth"] == pytest.approx(
        sum(t.gas_cost_wei for t in rec.keeper_txs.values() if t.mined_block is not None) / 1e18
    )


def _liqs(run: Run, i: int) -> list[LiquidationRecord]:
    return sorted((x for x in run.rec.liquidations if run.account(x) == i), key=lambda x: x.block)


# ---------------------------------------------------------------------------------------------- 6. rpc outage


def test_rpc_outage_catch_up(outage: Run) -> None:
    """While the keeper's RPC is down nothing of the keeper's is mined (past the first block, which may hold what it
    sent before); the accounts that became liquidatable meanwhile are liquidated once it is back, within the
    keeper's longest backoff, and nothing is missed."""
    run = outage
    rec = run.rec
    bt = run.sc.block_time_s
    fault = run.fault("rpc_outage")
    window = run.during(fault)
    assert window
    blind = {b.number for b in rec.blocks if fault.at < b.scenario_s <= fault.end}
    assert run.keeper_mined(blind) == []
    assert not {x.block for x in rec.liquidations} & blind
    became = {i for b in window for i in range(len(rec.accounts)) if liquidatable(b, i)}
    assert became
    end = next(b.number for b in rec.blocks if b.scenario_s >= fault.end)
    for i in became:
        later = [n for n in run.liquidation_blocks(i) if n > end]
        assert later, rec.accounts[i]
        assert later[0] - end <= math.ceil(MAX_BACKOFF_S / bt) + 2, (rec.accounts[i], end, later)
    assert run.summary()["missed_liquidations"] == len(run.missed()) == 0


# ---------------------------------------------------------------------------------------------- 7. fork


def _origin_state(rpc: Rpc, record: Path) -> dict[str, Any]:
    dep = load_deployment(record, 31337)
    latest_round = keccak(text="latestRoundData()")[:4]
    head = rpc.block("latest")
    return {
        "block": int(head["number"], 16),
        "hash": head["hash"],
        "feeds": {a.symbol: rpc.eth_call(a.feed, latest_round).hex() for a in [dep.debt, *dep.assets]},
        "pool": rpc.pool_size(),
    }


def test_fork_drill_leaves_the_origin_alone(tmp_path: Path) -> None:
    """--fork-url: the drill runs on an Anvil forking another node that holds a deployment, liquidates there, and
    the origin node is left exactly as it was (same head, same feed answers, the drill's accounts unknown there)."""
    sc = scenario("crash")
    with AnvilProcess(["--chain-id", "31337"], log_path=tmp_path / "origin-anvil.log") as origin:
        deployed = tmp_path / "origin"
        deployed.mkdir()
        record = deploy_embedded(sc, origin.url, deployed, ROOT)
        assert record == deployed / "31337.json"
        before = _origin_state(origin.rpc, record)
        out = tmp_path / "drill"
        probe = Probe(out / "deployment.json")
        rec = run_drill(
            DrillOptions(
                scenario=sc,
                out=out,
                fork_url=origin.url,
                deployment=record,
                accounts=12,
                settle_blocks=4,
                on_block=probe,
            )
        )
        after = _origin_state(origin.rpc, record)
        dep = load_deployment(record, 31337)
        ok, _health, debt = read_healths(origin.rpc, dep.lens, rec.accounts, after["block"])
    assert rec.target == "fork"
    doc = report.build(rec)
    report.validate(doc)
    assert doc["drill"]["target"] == "fork"
    assert rec.liquidations
    assert {(x.tx, x.log_index) for x in rec.liquidations} == probe.chain_liquidations
    run = Run(rec, out, probe)
    for liq in rec.liquidations:
        assert liquidatable(run.parent(liq), run.account(liq))
    assert doc["summary"]["missed_liquidations"] == 0
    assert after == before
    assert all(ok)
    assert debt == [0] * len(rec.accounts)  # seeded on the fork only


# ---------------------------------------------------------------------------------------------- a node with history


DEEPER = (DRILLS / "crash.toml").read_text(encoding="utf-8").replace("1500.0", "1150.0").replace("45000.0", "34000.0")


def test_drill_on_a_node_with_earlier_borrowers_counts_every_account_consistently(tmp_path: Path) -> None:
    """`keeper drill --rpc-url` on a node earlier drills left borrowers on. A drill with the first one's seed: its
    owners would collide with the earlier, still open positions, so it seeds fresh ones with the same draw instead
    of piling onto them. Then a drill with another seed and a deeper crash: the keeper liquidates the earlier drills'
    accounts too, and the report counts them (each liquidated account is counted as liquidatable; the earlier
    accounts are reported apart, the seeded ones alone make `accounts` and the protection groups)."""
    deeper = tmp_path / "deeper.toml"
    deeper.write_text(DEEPER, encoding="utf-8")
    with AnvilProcess(["--chain-id", "31337", "--accounts", "4"], log_path=tmp_path / "anvil.log") as node:
        (tmp_path / "deployed").mkdir()
        record = deploy_embedded(scenario("crash"), node.url, tmp_path / "deployed", ROOT)

        def run(sc: Scenario, name: str, seed: int) -> DrillRecord:
            opts = DrillOptions(
                scenario=sc,
                out=tmp_path / name,
                rpc_url=node.url,
                deployment=record,
                accounts=8,
                seed=seed,
                settle_blocks=3,
            )
            return run_drill(opts)

        first = run(scenario("crash"), "first", 42)
        again = run(scenario("crash"), "again", 42)
        deep = run(load_scenario(str(deeper)), "deep", 43)

    first_seeded = set(first.accounts[: first.seeded])
    assert len(first_seeded) == first.seeded == 8
    assert any(first.blocks[-1].debt[:8]), "the first drill left no open position: the collision tests nothing"
    again_seeded = set(again.accounts[: again.seeded])
    assert again_seeded.isdisjoint(first_seeded)
    assert first_seeded <= set(again.accounts[again.seeded :])
    # The same draw as the first drill: the same debts and healths at the start, not the open positions plus
    # another copy of them.
    assert again.start_debt_usd[:8] == pytest.approx(first.start_debt_usd[:8], rel=1e-6)
    assert again.initial_health[:8] == pytest.approx(first.initial_health[:8], abs=1e-3)

    earlier = first_seeded | again_seeded
    doc = report.build(deep)
    report.validate(doc)
    summary = doc["summary"]
    liquidated = {(x.owner, x.sub_id) for x in deep.liquidations}
    assert earlier.isdisjoint(deep.accounts[: deep.seeded])
    assert liquidated & earlier, "the deeper crash liquidated none of the earlier accounts: nothing tested"
    assert liquidated <= set(deep.accounts)  # every liquidation the chain has is of a measured account
    assert earlier <= set(deep.accounts[deep.seeded :])
    assert summary["liquidated_accounts"] == len(liquidated) <= summary["liquidatable_accounts"]
    # Recount: accounts liquidatable at the start or at the end of some block, plus every liquidated one.
    ever = {deep.accounts[i] for b in deep.blocks for i in range(len(deep.accounts)) if liquidatable(b, i)}
    ever |= {deep.accounts[i] for i in deep.liquidatable_at_start}
    assert summary["liquidatable_accounts"] == len(ever | liquidated)
    pre = doc["drill"]["preexisting"]
    assert pre["accounts"] == len(deep.accounts) - 8 >= 16
    assert pre["liquidated"] == len(liquidated & earlier)
    assert doc["accounts"] == 8
    assert summary["unprotected"]["accounts"] == 8  # the groups are the seeded accounts


# ---------------------------------------------------------------------------------------------- seeded below 1


def test_accounts_seeded_liquidatable_are_measured(tmp_path_factory: pytest.TempPathFactory) -> None:
    """The scenario format allows any health range with 0 < lo (docs/drills.md), so accounts may be seeded below
    health 1: liquidatable from the start. The drill must then measure them like any other: the record (and so the
    report) holds every liquidation the chain has, and counts the accounts as liquidatable."""
    run = drill(tmp_path_factory, "underwater", settle_blocks=3)
    rec = run.rec
    assert max(rec.initial_health) < 1
    chain = run.probe.chain_liquidations
    assert chain, "nobody liquidated the underwater accounts"
    recorded = {(x.tx, x.log_index) for x in rec.liquidations}
    assert recorded == chain, (
        f"the chain has {len(chain)} liquidations, the record {len(recorded)}: "
        f"{len(chain - recorded)} happened before the replay's first block and are not measured"
    )
    assert run.summary()["liquidatable_accounts"] == len(rec.accounts)


# ---------------------------------------------------------------------------------------------- 8. the CLI


def test_cli_bad_scenario(tmp_path: Path) -> None:
    """An unknown key: exit 2, one `keeper: <file>:<line>: ...` line, no traceback, no report folder made."""
    lines = (DRILLS / "crash.toml").read_text(encoding="utf-8").splitlines(keepends=True)
    at = next(n for n, line in enumerate(lines) if line.startswith("block_time_s"))
    lines.insert(at + 1, 'colour = "red"\n')
    (tmp_path / "bad.toml").write_text("".join(lines), encoding="utf-8")
    result = keeper_cli(tmp_path, "drill", "bad.toml", "--out", "out")
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith(f"keeper: bad.toml:{at + 2}: top level: unknown key `colour`; "), result.stderr
    assert result.stderr.count("\n") == 1
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
    assert not (tmp_path / "out").exists()


def test_cli_list() -> None:
    """--list: the twelve library scenarios, by name, each with the start of its description."""
    result = keeper_cli(ROOT, "drill", "--list")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    rows = result.stdout.splitlines()
    assert [row.split()[0] for row in rows] == LIBRARY
    assert all(len(row.split()) > 1 for row in rows)


def test_cli_out_not_empty(tmp_path: Path) -> None:
    """An --out folder that holds something is refused before anything starts, and left as it was."""
    full = tmp_path / "full"
    full.mkdir()
    (full / "keep.txt").write_text("mine")
    result = keeper_cli(tmp_path, "drill", "black-thursday", "--out", "full")
    assert result.returncode == 2, result.stderr
    message = "keeper: full already exists and is not an empty folder: choose another --out, or remove it\n"
    assert result.stderr == message
    assert result.stdout == ""
    assert [p.name for p in full.iterdir()] == ["keep.txt"]
    assert (full / "keep.txt").read_text() == "mine"


def test_cli_drill_check(tmp_path: Path) -> None:
    """A real `keeper drill --check` on a tiny scenario, run from a folder of the operator's (not the checkout) with
    a relative --out, as one types it."""
    result = keeper_cli(
        tmp_path,
        "drill",
        str(DRILLS / "crash.toml"),
        "--out",
        "run",
        "--accounts",
        "4",
        "--settle-blocks",
        "3",
        "--quiet",
        "--check",
    )
    log = tmp_path / "run" / "deploy.log"
    detail = log.read_text(encoding="utf-8")[-600:] if log.exists() else ""
    assert result.returncode == 0, result.stderr + detail
    assert "Traceback" not in result.stderr
    doc = json.loads((tmp_path / "run" / "report.json").read_text(encoding="utf-8"))
    report.validate(doc)
    assert doc["accounts"] == 4
    assert doc["summary"]["missed_liquidations"] == 0
    assert "report:" in result.stdout
