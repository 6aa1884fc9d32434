"""`keeper drill`: replay a scenario against the real contracts and the real keeper on a local node, and record what
the chain did.

A drill has four phases:

1. **Target.** By default an Anvil is started for the drill and the system deployed to it with `ape run deploy`
   (from a config made of deployments/configs/local.toml and the scenario's prices). `--rpc-url` uses a running
   Anvil that already holds a deployment; `--fork-url` starts an Anvil forking another node and takes over the
   deployment's feeds there, installing the mock aggregator's code at each feed address (each keeps its decimals).
2. **Seeding.** `[accounts]` borrowers, reproducible from the seed: each gets one or more collateral assets and
   borrows to a health drawn uniformly from the range. Healths below what the initial margin allows (`lt/ltv`) are
   reached by borrowing at prices raised for the seeding only; the scenario's prices are restored before the start.
   The vault is funded so every borrow fits, and the keeper gets a debt-asset inventory and gas money.
3. **Replay.** The drill mines every block itself, `block_time_s` of chain time apart, with automine off: before
   each block it sends the price updates and fault changes due by then, mines, records the chain's state (every
   account's health, events, the keeper's receipts), then lets the keeper handle the block (`Keeper.tick`, the same
   code `keeper run` schedules) and inspects the node's pool for what the keeper sent. Chain time is therefore
   compressed: a drill of two hours of chain time takes as long as the keeper needs for its blocks.
4. **Settle and measure.** After the last step (and fault) a settle period lets the keeper finish; then
   `keeper.drills.report` turns the record into report.json, report.md and the plots.

Everything measured comes from the node (blocks, logs, receipts, pool, eth_call on each block), never from the
keeper's own journal or metrics.
"""

from __future__ import annotations

import json
import logging
import math
import random
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eth_abi.abi import decode as abi_decode
from eth_abi.abi import encode as abi_encode
from eth_utils.crypto import keccak
from pydantic import ValidationError
from web3 import Web3
from web3.contract import Contract

from keeper.chain.deployment import Deployment, contract, load_deployment
from keeper.chain.discovery import Discovery
from keeper.chain.index import MemoryIndex
from keeper.chain.node import AnvilProcess, Rpc, deal, find_balance_slot
from keeper.chain.reads import read_market
from keeper.chain.signer import load_signer
from keeper.core.errors import DeploymentError, KeeperError
from keeper.drills.relay import FlakyRelay
from keeper.drills.scenario import FEED_FAULTS, Fault, Scenario
from keeper.engine.compose import build_keeper
from keeper.engine.keeper import Keeper, NativePrice
from keeper.engine.settings import Settings

WAD = 10**18
GWEI = 10**9
MAX_UINT = 2**256 - 1
DRIVER_INDEX = 0  # Anvil dev account that pushes prices and funds accounts (also the embedded deployer)
KEEPER_INDEX = 1  # Anvil dev account the keeper under drill signs with
SUBS_PER_OWNER = 4  # seeded sub-accounts per owner address
HEALTH_CHUNK = 250  # accounts per Lens.liquidationHealths call (each read costs gas in eth_call)
DRIVER_TIP = 100 * GWEI  # the drill's price updates go first in their block, as oracle transmissions do
DRIVER_MAX_FEE = 100_000 * GWEI
SETTLE_MIN_BLOCKS = 30
SETTLE_MIN_S = 300
WARMUP_BLOCKS = 3
SEED_COLLATERAL_USD = (2_000.0, 40_000.0)  # per collateral asset of a seeded account, drawn log-uniformly
SEQUENCER_UP, SEQUENCER_DOWN = 0, 1

log = logging.getLogger("keeper.drill")


class DrillError(KeeperError):
    """A drill that cannot start or cannot go on: a target without a deployment, a scenario asset the deployment
    does not list, a node that is not Anvil."""


# ------------------------------------------------------------------------------------------------ options


@dataclass
class DrillOptions:
    scenario: Scenario
    out: Path
    accounts: int | None = None  # overrides [accounts] count
    seed: int | None = None  # overrides the scenario's seed
    rpc_url: str | None = None
    fork_url: str | None = None
    deployment: Path | None = None  # the record for --rpc-url / --fork-url (default deployments/<chainId>.json)
    project: Path | None = None  # the checkout holding ape-config.yaml (to deploy); found from here by default
    settle_blocks: int | None = None
    risk: dict[str, tuple[float, float]] | None = None  # embedded only: symbol -> (ltv, lt) instead of the template's
    keeper_settings: dict[str, Any] = field(default_factory=dict)  # settings of the keeper under drill (`--set`)
    anvil: Path | None = None  # the Anvil binary (the `anvil` setting, KEEPER_ANVIL); None: .venv/bin, then PATH
    on_block: Callable[[Progress], None] | None = None
    on_phase: Callable[[str], None] | None = None


@dataclass
class Progress:
    block: int  # blocks of the replay so far
    blocks: int  # total blocks planned (replay + settle)
    scenario_s: int
    liquidatable: int  # accounts liquidatable in this block
    liquidations: int  # so far
    liquidated_accounts: int
    faults: list[str]
    settling: bool
    node_url: str  # the drill's node (for callers that want to look at it while it runs)
    head: int  # the block just mined


# ------------------------------------------------------------------------------------------------ the record


@dataclass
class BlockRecord:
    number: int
    timestamp: int
    scenario_s: int
    base_fee: int
    gas_used: int
    gas_limit: int
    ok: list[bool]  # per account: its prices were valid
    health: list[int]  # per account: WAD health (MAX_UINT without debt)
    debt: list[int]  # per account: debt-asset units
    oracle: dict[str, float | None]  # USD price each feed reported after this block (None: invalid answer)


@dataclass
class LiquidationRecord:
    block: int
    tx: str
    log_index: int
    liquidator: str
    owner: str
    sub_id: int
    collateral: str  # symbol
    repaid: int
    seized: int
    discount: int
    repaid_usd: float
    seized_usd: float


@dataclass
class KeeperTx:
    hash: str
    nonce: int
    account: tuple[str, int] | None  # the account a liquidate() call targets; None for other calls
    seen_block: int  # the block after which the drill first saw it in the pool (-1: mined without being seen)
    duplicate: bool = False
    mined_block: int | None = None
    status: int | None = None
    gas_used: int = 0
    gas_cost_wei: int = 0


@dataclass
class DrillRecord:
    """Everything the drill observed; `keeper.drills.report` computes the report from it."""

    scenario: Scenario
    seed: int
    chain_id: int
    target: str  # "embedded" | "rpc" | "fork"
    keeper: str
    accounts: list[tuple[str, int]]
    initial_health: list[float]
    start_block: int  # the block at scenario time 0
    replay_blocks: int
    seeded: int = 0  # the first `seeded` of `accounts` are the drill's; the rest were on the engine before it
    liquidatable_at_start: set[int] = field(default_factory=set)  # indexes of accounts liquidatable at the start
    blocks: list[BlockRecord] = field(default_factory=list)
    liquidations: list[LiquidationRecord] = field(default_factory=list)
    bad_debt: list[tuple[int, str, int, float]] = field(default_factory=list)  # block, owner, sub, usd
    keeper_txs: dict[str, KeeperTx] = field(default_factory=dict)
    eth_usd: dict[int, float] = field(default_factory=dict)  # block -> native token's USD price (gas costs); 0: none
    wall_s: float = 0.0
    tick_s: list[float] = field(default_factory=list)  # wall time of the keeper's turn after each block
    start_totals: dict[str, float] = field(default_factory=dict)  # collateral, borrowing power, debt (USD) at start
    start_debt_usd: list[float] = field(default_factory=list)  # per account, at the start
    protected: set[tuple[str, int]] = field(default_factory=set)  # accounts whose owner opted in to protection
    pre_liquidations: list[LiquidationRecord] = field(default_factory=list)
    rebalances: list[tuple[int, str, int, int]] = field(default_factory=list)  # block, owner, from sub, to sub
    risk: dict[str, dict[str, float]] = field(default_factory=dict)  # symbol -> {"ltv", "lt"} at the start


# ------------------------------------------------------------------------------------------------ contracts


@dataclass
class System:
    """The deployment as the drill drives it: web3 contracts, symbols, decimals and risk parameters."""

    w3: Web3
    dep: Deployment
    engine: Contract
    vault: Contract
    router: Contract
    lens: Contract
    tokens: dict[str, str]  # symbol -> token address (debt asset included)
    feeds: dict[str, str]  # symbol -> feed address
    decimals: dict[str, int]  # symbol -> token decimals
    feed_decimals: dict[str, int]
    max_staleness: dict[str, int]
    ltv: dict[str, float]
    lt: dict[str, float]
    debt_symbol: str
    sequencer_feed: str | None
    sequencer_grace: int
    protection: Contract | None = None  # the ProtectionModule, when the deployment has one

    @classmethod
    def load(cls, w3: Web3, dep: Deployment) -> System:
        engine, router = contract(w3, dep, "MarginEngine"), contract(w3, dep, "OracleRouter")
        tokens = {a.symbol: a.token for a in [dep.debt, *dep.assets]}
        feeds = {a.symbol: a.feed for a in [dep.debt, *dep.assets]}
        decimals = {a.symbol: a.decimals for a in [dep.debt, *dep.assets]}
        feed_decimals: dict[str, int] = {}
        staleness: dict[str, int] = {}
        for a in [dep.debt, *dep.assets]:
            cfg = router.functions.feedConfig(a.token).call()
            staleness[a.symbol] = int(cfg[1])
            feed_decimals[a.symbol] = int(cfg[2])
        ltv: dict[str, float] = {}
        lt: dict[str, float] = {}
        for a in dep.assets:
            cfg = engine.functions.assetConfig(a.token).call()
            ltv[a.symbol], lt[a.symbol] = int(cfg[3]) / WAD, int(cfg[4]) / WAD
        seq_feed, grace = router.functions.sequencer().call()
        return cls(
            w3=w3,
            dep=dep,
            engine=engine,
            vault=contract(w3, dep, "Vault"),
            router=router,
            lens=contract(w3, dep, "Lens"),
            tokens=tokens,
            feeds=feeds,
            decimals=decimals,
            feed_decimals=feed_decimals,
            max_staleness=staleness,
            ltv=ltv,
            lt=lt,
            debt_symbol=dep.debt.symbol,
            sequencer_feed=None if int(seq_feed, 16) == 0 else Web3.to_checksum_address(seq_feed),
            sequencer_grace=int(grace),
            protection=contract(w3, dep, "ProtectionModule", dep.protection) if dep.protection else None,
        )

    def contract(self, name: str, address: str) -> Contract:
        return contract(self.w3, self.dep, name, address)


def _data(contract: Contract, fn: str, *args: Any) -> str:
    return str(contract.encode_abi(fn, list(args)))


# ------------------------------------------------------------------------------------------------ project / deploy


def find_project(start: Path | None = None) -> Path:
    """The collateral-keeper checkout (it holds ape-config.yaml and contracts/): from `start`, the current folder,
    or the folder this package was installed from in editable mode."""
    here = Path(__file__).resolve().parent
    for base in [p for p in (start, Path.cwd(), here) if p is not None]:
        for candidate in [base, *base.parents]:
            if (candidate / "ape-config.yaml").is_file() and (candidate / "contracts").is_dir():
                return candidate
    raise DrillError(
        "the embedded drill deploys the contracts with `ape run deploy`, which needs the collateral-keeper checkout: "
        "run it from the checkout, or drill a node that already has a deployment with --rpc-url"
    )


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    return repr(value)


def deploy_config(scenario: Scenario, template: Path, risk: dict[str, tuple[float, float]] | None = None) -> str:
    """The deploy config for the embedded drill, as TOML text: the template's parameters for the scenario's assets
    (only those), at the scenario's initial prices, with a mock sequencer feed if a fault needs one; `risk` replaces
    the template's (ltv, lt) of the assets it names."""
    risk = risk or {}
    unknown = sorted(set(risk) - {a.symbol for a in scenario.assets if not a.quote})
    if unknown:
        raise DrillError(
            f"--risk names {', '.join(unknown)}, which scenario {scenario.name!r} does not use as collateral"
        )
    raw = tomllib.loads(template.read_text(encoding="utf-8"))
    quote = scenario.quote
    if raw["debt"]["symbol"] != quote.symbol:
        raise DrillError(
            f"scenario {scenario.name!r} borrows {quote.symbol} but {template} deploys {raw['debt']['symbol']} as "
            f"the debt asset: make {raw['debt']['symbol']} the quote asset of the scenario"
        )
    raw["debt"]["price"] = quote.price
    by_symbol = {a["symbol"]: a for a in raw["asset"]}
    assets = []
    for a in scenario.assets:
        if a.quote:
            continue
        if a.symbol not in by_symbol:
            raise DrillError(
                f"scenario {scenario.name!r} uses {a.symbol}, which {template} does not list: the embedded drill "
                f"deploys the assets of that config ({', '.join(by_symbol)}); add {a.symbol} there or use those"
            )
        spec = dict(by_symbol[a.symbol])
        spec["price"] = a.price
        if a.symbol in risk:
            spec["ltv"], spec["lt"] = risk[a.symbol]
        assets.append(spec)
    raw["asset"] = assets
    native = raw.get("native") or {}
    if native.get("asset") and native["asset"] not in {a["symbol"] for a in assets}:
        # The template prices gas through an asset this scenario does not deploy: the drill's keeper then runs with
        # gas unpriced (a local chain), unless --set native_price names another source.
        del raw["native"]
    if any(f.kind == "sequencer_down" for f in scenario.faults):
        raw.setdefault("sequencer", {})["feed"] = "mock"
    lines = [f"# made by keeper drill for scenario {scenario.name!r} from {template.name}"]
    for section, table in raw.items():
        if section == "asset":
            continue
        lines.append(f"\n[{section}]")
        lines += [f"{k} = {_toml_value(v)}" for k, v in table.items()]
    for spec in assets:
        lines.append("\n[[asset]]")
        lines += [f"{k} = {_toml_value(v)}" for k, v in spec.items()]
    return "\n".join(lines) + "\n"


def deploy_embedded(
    scenario: Scenario, url: str, out: Path, project: Path, risk: dict[str, tuple[float, float]] | None = None
) -> Path:
    """Deploy with `ape run deploy` to the node at `url`; the record goes to out/<chainId>.json."""
    out = out.resolve()  # `ape run deploy` runs in the project folder: a relative path would point there
    config = out / "deploy-config.toml"
    template = project / "deployments" / "configs" / "local.toml"
    config.write_text(deploy_config(scenario, template, risk), encoding="utf-8")
    ape = Path(sys.prefix) / "bin" / "ape"
    cmd = [str(ape), "run", "deploy", "--network", url, "--config", str(config), "--out-dir", str(out), "--fresh"]
    with open(out / "deploy.log", "wb") as sink:
        done = subprocess.run(cmd, cwd=project, stdout=sink, stderr=subprocess.STDOUT, check=False)
    if done.returncode != 0:
        raise DrillError(f"deploying to the drill's Anvil failed (exit {done.returncode}); see {out / 'deploy.log'}")
    return out / "31337.json"


# ------------------------------------------------------------------------------------------------ the driver


class Driver:
    """Pushes prices and faults, funds and seeds accounts, mines blocks. Signs nothing itself: the node signs for
    its dev accounts and for impersonated addresses."""

    def __init__(self, rpc: Rpc, system: System, driver: str) -> None:
        self.rpc = rpc
        self.sys = system
        self.me = driver
        self._layouts: dict[str, tuple[int, bool]] = {}
        self.updated_at: dict[str, int] = {}

    def send(self, sender: str, to: str, data: str, gas: int = 500_000, tip: int = DRIVER_TIP) -> str:
        return self.rpc.send(
            {
                "from": sender,
                "to": to,
                "data": data,
                "gas": hex(gas),
                "maxFeePerGas": hex(DRIVER_MAX_FEE),
                "maxPriorityFeePerGas": hex(tip),
            }
        )

    def deal(self, symbol: str, owner: str, amount: int) -> None:
        token = self.sys.tokens[symbol]
        if token not in self._layouts:
            self._layouts[token] = find_balance_slot(self.rpc, token, self.me)
        deal(self.rpc, token, owner, amount, self._layouts[token])

    def answer(self, symbol: str, usd: float) -> int:
        scale: int = 10 ** self.sys.feed_decimals[symbol]
        return round(usd * scale)

    def push(self, symbol: str, answer: int, at: int) -> None:
        """Send `answer` to the symbol's feed, to land in the block stamped `at`."""
        feed = self.sys.contract("MockAggregator", self.sys.feeds[symbol])
        self.send(self.me, feed.address, _data(feed, "setAnswer", answer), gas=120_000)
        self.updated_at[symbol] = at

    def push_usd(self, symbol: str, usd: float, at: int) -> None:
        self.push(symbol, self.answer(symbol, usd), at)

    def sequencer(self, status: int, at: int) -> None:
        assert self.sys.sequencer_feed is not None
        feed = self.sys.contract("MockAggregator", self.sys.sequencer_feed)
        self.send(self.me, feed.address, _data(feed, "setAnswerAt", status, at, at), gas=120_000)

    def mine_all(self, timestamp: int | None = None, limit: int = 10_000) -> list[int]:
        """Mine until the pool is empty; the numbers of the blocks mined."""
        mined = []
        while self.rpc.pool_size() > 0:
            self.rpc.mine(timestamp)
            mined.append(self.rpc.block_number())
            timestamp = None if timestamp is None else timestamp + 1
            if len(mined) > limit:
                raise DrillError("the node's pool does not drain: transactions are stuck (fee too low?)")
        return mined

    def check_mined(self, hashes: list[str], what: str) -> None:
        for h in hashes:
            receipt = self.rpc.receipt(h)
            if receipt is None or int(receipt["status"], 16) != 1:
                raise DrillError(f"{what} failed in transaction {h}; the drill cannot seed this deployment")


def takeover_feeds(driver: Driver, project: Path | None) -> None:
    """Fork mode: replace every feed of the deployment (and its sequencer feed) with the mock aggregator's runtime
    code, keeping each feed's decimals, so the drill can drive prices. The mock's first slot packs decimals,
    the latest round and the revert/gas-bomb switches; it is cleared so the real feed's storage means nothing."""
    rpc, system = driver.rpc, driver.sys
    code = _mock_runtime(rpc, system, project)
    feeds = [(s, f) for s, f in system.feeds.items()]
    if system.sequencer_feed is not None:
        feeds.append(("sequencer", system.sequencer_feed))
    for symbol, feed in feeds:
        decimals = 0 if symbol == "sequencer" else system.feed_decimals[symbol]
        if rpc.code(feed) == code:
            continue
        rpc.set_code(feed, code)
        rpc.set_storage(feed, 0, decimals)
    if system.sequencer_feed is not None:
        # up, and past its grace period; the drill's own sequencer_down faults take it from here
        since = int(rpc.block()["timestamp"], 16) - system.sequencer_grace - 1
        seq = system.contract("MockAggregator", system.sequencer_feed)
        driver.send(driver.me, seq.address, _data(seq, "setAnswerAt", SEQUENCER_UP, since, since), gas=120_000)


def _mock_runtime(rpc: Rpc, system: System, project: Path | None) -> bytes:
    # A deployment made with mock feeds already carries the code; otherwise take it from the compiled project.
    set_answer = keccak(text="setAnswer(int256)")[:4]
    for feed in system.feeds.values():
        code = rpc.code(feed)
        if set_answer in code:
            return code
    root = find_project(project)
    manifest = root / ".build" / "__local__.json"
    try:
        types = json.loads(manifest.read_text(encoding="utf-8"))["contractTypes"]
        return bytes.fromhex(types["MockAggregator"]["runtimeBytecode"]["bytecode"].removeprefix("0x"))
    except (OSError, KeyError, ValueError):
        raise DrillError(f"no compiled MockAggregator in {manifest}: run `make compile` in the checkout") from None


# ------------------------------------------------------------------------------------------------ seeding


@dataclass
class SeedPlan:
    owner: str
    sub: int
    collateral: dict[str, int]  # symbol -> token units
    debt: int  # debt-asset units
    health: float  # drawn target


def _owner(seed: int, i: int, salt: str = "") -> str:
    return Web3.to_checksum_address(keccak(f"collateral-keeper drill owner {seed} {i}{salt}".encode())[12:])


def plan_seeding(scenario: Scenario, system: System, count: int, seed: int, salt: str = "") -> list[SeedPlan]:
    """The accounts to seed, a pure function of the scenario, the seed and `salt` (empty but on a node where the
    seed's owners already hold accounts, from an earlier drill: see run_drill)."""
    rng = random.Random(seed)
    lo, hi = scenario.accounts.health
    quote = scenario.quote
    plans = []
    for i in range(count):
        owner, sub = _owner(seed, i // SUBS_PER_OWNER, salt), i % SUBS_PER_OWNER
        k = rng.randint(1, len(scenario.accounts.assets))
        mix = rng.sample(list(scenario.accounts.assets), k)
        collateral: dict[str, int] = {}
        weighted = 0.0
        for symbol in mix:
            usd = math.exp(rng.uniform(*map(math.log, SEED_COLLATERAL_USD)))
            price = scenario.asset(symbol).price
            units = int(usd / price * 10 ** system.decimals[symbol])
            if units == 0:
                continue
            collateral[symbol] = units
            weighted += units / 10 ** system.decimals[symbol] * price * system.lt[symbol]
        health = rng.uniform(lo, hi)
        debt = int(weighted / health / quote.price * 10 ** system.decimals[quote.symbol])
        plans.append(SeedPlan(owner, sub, collateral, debt, health))
    return plans


def seed_accounts(driver: Driver, scenario: Scenario, plans: list[SeedPlan], keeper: str) -> None:
    """Deposits, borrows and funding, with automine off and many transactions per block."""
    sys_ = driver.sys
    rpc = driver.rpc
    quote = scenario.quote
    debt_sym = sys_.debt_symbol
    total_debt = sum(p.debt for p in plans)
    rpc.set_balance(driver.me, 10**30)
    rpc.set_balance(keeper, 10**24)
    rpc.call("anvil_autoImpersonateAccount", True)
    hashes = []
    # the vault lends what the accounts borrow, with room to spare
    need = total_debt * 2 - int(sys_.vault.functions.idle().call()) + 10 ** sys_.decimals[debt_sym]
    if need > 0:
        driver.deal(debt_sym, driver.me, need)
        token = sys_.contract("MockERC20", sys_.tokens[debt_sym])
        hashes.append(driver.send(driver.me, token.address, _data(token, "approve", sys_.vault.address, need)))
        hashes.append(driver.send(driver.me, sys_.vault.address, _data(sys_.vault, "deposit", need, driver.me)))
    # the keeper's inventory: enough to repay every debt once, and then some
    driver.deal(debt_sym, keeper, total_debt * 2 + 10 ** (sys_.decimals[debt_sym] + 6))
    # collateral: dealt to the driver, deposited into each account by the driver
    totals: dict[str, int] = {}
    for p in plans:
        for symbol, units in p.collateral.items():
            totals[symbol] = totals.get(symbol, 0) + units
    for symbol, units in totals.items():
        driver.deal(symbol, driver.me, units)
        token = sys_.contract("MockERC20", sys_.tokens[symbol])
        hashes.append(driver.send(driver.me, token.address, _data(token, "approve", sys_.engine.address, units)))
    for p in plans:
        rpc.set_balance(p.owner, 10**21)
        for symbol, units in p.collateral.items():
            data = _data(sys_.engine, "deposit", p.owner, p.sub, sys_.tokens[symbol], units)
            hashes.append(driver.send(driver.me, sys_.engine.address, data, gas=250_000))
    driver.mine_all()
    driver.check_mined(hashes, "seeding (funding or a deposit)")

    # Borrowing: a health below lt/ltv is past the initial margin, so raise collateral prices for the borrows.
    lift = 1.0
    for p in plans:
        power = sum(u / 10 ** sys_.decimals[s] * scenario.asset(s).price * sys_.ltv[s] for s, u in p.collateral.items())
        need_usd = p.debt / 10 ** sys_.decimals[debt_sym] * quote.price
        if power > 0:
            lift = max(lift, need_usd / power)
    now = int(rpc.block()["timestamp"], 16)
    # every feed at the scenario's prices (collateral lifted for the borrows), whatever the target held before
    for a in scenario.assets:
        price = a.price if a.quote else a.price * lift * 1.01
        driver.push_usd(a.symbol, price, now)
    driver.mine_all()
    hashes = []
    for p in plans:
        if p.debt > 0:
            data = _data(sys_.engine, "borrow", p.sub, p.debt, p.owner)
            hashes.append(driver.send(p.owner, sys_.engine.address, data, gas=400_000, tip=GWEI))
    driver.mine_all()
    driver.check_mined(hashes, "seeding (a borrow)")
    for a in scenario.assets:
        driver.push_usd(a.symbol, a.price, now)
    driver.mine_all()


# Opt-in terms a protected drill owner chooses, each capped by the module's bounds.
PROTECT_TARGET_HEALTH = 1.15
PROTECT_PRE_THRESHOLD = 1.05
PROTECT_DISCOUNT = 0.01
PROTECT_SHARE = 0.5


def protected_owners(plans: list[SeedPlan], fraction: float, seed: int) -> set[str]:
    """The owners that opt in: `fraction` of the seeded owners, drawn with the drill's seed."""
    owners = sorted({p.owner for p in plans})
    k = round(fraction * len(owners))
    return set(random.Random(f"protect-{seed}").sample(owners, k)) if k else set()


def opt_in(driver: Driver, plans: list[SeedPlan], owners: set[str], keeper: str) -> None:
    """Each protected owner authorises the keeper as its rebalancer and opts every sub-account into the band."""
    module = driver.sys.protection
    if not owners:
        return
    if module is None:
        raise DrillError(
            "the scenario protects accounts ([accounts] protected > 0) but the deployment has no ProtectionModule: "
            "redeploy with `ape run deploy`"
        )
    bounds = module.functions.preLiquidationBounds().call()
    cap = int(module.functions.maxTargetHealth().call())
    target = min(int(PROTECT_TARGET_HEALTH * WAD), cap)
    pre = min(int(PROTECT_PRE_THRESHOLD * WAD), int(bounds[0]))
    discount = min(int(PROTECT_DISCOUNT * WAD), int(bounds[1]))
    share = min(int(PROTECT_SHARE * WAD), int(bounds[2]))
    hashes = []
    for owner in sorted(owners):
        data = _data(module, "setRebalancer", keeper, target)
        hashes.append(driver.send(owner, module.address, data, gas=120_000))
    for p in plans:
        if p.owner in owners:
            data = _data(module, "setPreLiquidation", p.sub, pre, discount, share)
            hashes.append(driver.send(p.owner, module.address, data, gas=120_000))
    driver.mine_all()
    driver.check_mined(hashes, "opting in to protection")


# ------------------------------------------------------------------------------------------------ reading the chain

# The accounts as `liquidate` values them (Lens.liquidationHealths): a held asset whose price the router refuses
# counts at zero, so during an oracle fault an account is liquidatable on its other collateral.
_HEALTHS_SELECTOR = keccak(text="liquidationHealths(address[],uint8[])")[:4]
_HEALTHS_OUT = ["(bool,(uint256,uint256,uint256,uint256,uint256,uint256))[]"]


def read_healths(
    rpc: Rpc, lens: str, accounts: list[tuple[str, int]], block: int
) -> tuple[list[bool], list[int], list[int]]:
    """Every account's (can be acted on, health, debt) at `block`, from Lens.liquidationHealths in chunks."""
    return split_rows(_health_rows(rpc, lens, accounts, block))


def split_rows(rows: list[tuple[bool, tuple[int, ...]]]) -> tuple[list[bool], list[int], list[int]]:
    """(can be acted on, health, debt) per account from Lens.liquidationHealths rows. An account can be acted on
    when the engine can value it (the debt asset's price is valid) and, with debt, some of its collateral has a
    valid price: one whose every collateral is refused a price cannot be liquidated, as before."""
    ok = [good and (int(h[3]) == 0 or int(h[0]) > 0) for good, h in rows]
    health = [int(h[5]) if good else 0 for good, h in rows]
    debt = [int(h[3]) if good else 0 for good, h in rows]
    return ok, health, debt


def debts_usd(rows: list[tuple[bool, tuple[int, ...]]]) -> list[float]:
    """Every account's debt value in USD from Lens.liquidationHealths rows (0 where it cannot be valued)."""
    return [int(h[4]) / WAD if good else 0.0 for good, h in rows]


def totals(all_rows: list[tuple[bool, tuple[int, ...]]]) -> dict[str, float]:
    """USD totals over Lens.liquidationHealths rows: collateral value, borrowing power (Σ value·ltv) and debt value."""
    rows = [h for good, h in all_rows if good]
    return {
        "collateral_usd": sum(int(h[0]) for h in rows) / WAD,
        "borrowing_power_usd": sum(int(h[2]) for h in rows) / WAD,
        "debt_usd": sum(int(h[4]) for h in rows) / WAD,
    }


def _health_rows(
    rpc: Rpc, lens: str, accounts: list[tuple[str, int]], block: int
) -> list[tuple[bool, tuple[int, ...]]]:
    """Lens.liquidationHealths in chunks: (valued, AccountHealth) per account."""
    out: list[tuple[bool, tuple[int, ...]]] = []
    for i in range(0, len(accounts), HEALTH_CHUNK):
        chunk = accounts[i : i + HEALTH_CHUNK]
        data = _HEALTHS_SELECTOR + abi_encode(["address[]", "uint8[]"], [[o for o, _ in chunk], [s for _, s in chunk]])
        (rows,) = abi_decode(_HEALTHS_OUT, rpc.eth_call(lens, data, block))
        out += [(bool(good), tuple(int(v) for v in h)) for good, h in rows]
    return out


def liquidatable(ok: bool, health: int, debt: int) -> bool:
    """What the engine would let anyone liquidate: valid prices, some debt, health below 1."""
    return ok and debt > 0 and health < WAD


# ------------------------------------------------------------------------------------------------ the replay


class Replay:
    """Block by block: faults and prices in, one block mined, the chain read, the keeper's turn, the pool read."""

    def __init__(
        self,
        opts: DrillOptions,
        rpc: Rpc,
        system: System,
        driver: Driver,
        keeper: Keeper,
        relay: FlakyRelay | None,
        record: DrillRecord,
        clock: DrillClock,
    ) -> None:
        self.opts = opts
        self.clock = clock
        self.rpc = rpc
        self.sys = system
        self.driver = driver
        self.keeper = keeper
        self.relay = relay
        self.rec = record
        self.sc = opts.scenario
        self.bt = self.sc.block_time_s
        self.market = {a.symbol: a.price for a in self.sc.assets}
        self.faulted: dict[str, str] = {}  # symbol -> fault kind
        self.active: list[Fault] = []
        self.symbol_of: dict[str, str] = {Web3.to_checksum_address(t): s for s, t in system.tokens.items()}
        self.liquidated_accounts: set[tuple[str, int]] = set()
        # The native token's USD price, to value the keeper's fees: the keeper's own source (deployment or setting).
        self.native = NativePrice(system.w3, keeper.native.source)
        self.settle_blocks = opts.settle_blocks or max(SETTLE_MIN_BLOCKS, math.ceil(SETTLE_MIN_S / self.bt))
        self.liq_event = system.engine.events.Liquidated()
        self.bad_event = system.engine.events.BadDebtRealized()
        self.topic_liq = "0x" + keccak(text="Liquidated(address,address,uint8,address,uint256,uint256,uint256)").hex()
        self.topic_bad = "0x" + keccak(text="BadDebtRealized(address,uint8,uint256)").hex()
        self.module = system.protection
        if self.module is not None:
            self.pre_event = self.module.events.PreLiquidated()
            self.reb_event = self.module.events.Rebalanced()
            self.topic_pre = (
                "0x"
                + keccak(
                    text="PreLiquidated(address,address,uint8,address,uint256,uint256,uint256,uint256,uint256)"
                ).hex()
            )
            self.topic_reb = (
                "0x" + keccak(text="Rebalanced(address,address,uint8,uint8,address,uint256,uint256,uint256)").hex()
            )

    # ---- scheduling

    def _due(self, lo: int | None, hi: int) -> Iterator[tuple[int, int, Any]]:
        """Everything scheduled in (lo, hi] (or <= hi for the first block), in time order: fault ends (0) before
        fault starts (1) before steps (2) at the same second."""
        events: list[tuple[int, int, Any]] = []
        for f in self.sc.faults:
            events.append((f.end, 0, f))
            events.append((f.at, 1, f))
        events += [(s.at, 2, s) for s in self.sc.steps]
        for at, order, item in sorted(events, key=lambda e: (e[0], e[1])):
            if (lo is None or at > lo) and at <= hi:
                yield at, order, item

    def _before_block(self, prev_s: int | None, s: int, ts: int) -> None:
        refresh = prev_s is None
        for _at, order, item in self._due(prev_s, s):
            if order == 0:
                self._end_fault(item, ts)
            elif order == 1:
                self._start_fault(item, ts)
            else:
                self.market.update(item.prices)
                refresh = True
        self._refresh(ts, everything=refresh)
        for f in self.active:
            if f.kind == "base_fee":
                assert f.gwei is not None
                self.rpc.set_next_base_fee(int(f.gwei * GWEI))

    def _start_fault(self, f: Fault, ts: int) -> None:
        self.active.append(f)
        if f.kind in FEED_FAULTS:
            assert f.asset is not None
            self.faulted[f.asset] = f.kind
            if f.kind == "zero":
                self.driver.push(f.asset, 0, ts)
            elif f.kind == "negative":
                self.driver.push(f.asset, -self.driver.answer(f.asset, self.market[f.asset]), ts)
        elif f.kind == "sequencer_down":
            self.driver.sequencer(SEQUENCER_DOWN, ts)
        elif f.kind == "rpc_outage" and self.relay is not None:
            self.relay.down()

    def _end_fault(self, f: Fault, ts: int) -> None:
        if f not in self.active:
            return
        self.active.remove(f)
        if f.kind in FEED_FAULTS:
            assert f.asset is not None
            self.faulted.pop(f.asset, None)
            self.driver.push_usd(f.asset, self.market[f.asset], ts)
        elif f.kind == "sequencer_down":
            self.driver.sequencer(SEQUENCER_UP, ts)
        elif f.kind == "rpc_outage" and self.relay is not None:
            self.relay.up()

    # ---- one block

    def _after_block(self, s: int) -> BlockRecord:
        block = self.rpc.block("latest", full=True)
        number = int(block["number"], 16)
        keeper = self.rec.keeper.lower()
        for tx in block["transactions"]:
            if str(tx["from"]).lower() == keeper:
                self._mined(tx, number)
        market = read_market(self.sys.lens, number)
        oracle: dict[str, float | None] = {}
        for view in (market.debt_price, *[a.price for a in market.assets]):
            oracle[self.symbol_of[view.asset]] = view.price / WAD if view.ok else None
        self.rec.eth_usd[number] = self.native.read(market, number) / WAD
        for raw in self.rpc.logs(self.sys.engine.address, number, number):
            topic = str(raw["topics"][0])
            if topic == self.topic_liq:
                self._liquidation(raw, number, oracle)
            elif topic == self.topic_bad:
                e = self.bad_event.process_log(_log(raw))["args"]
                debt_sym = self.sys.debt_symbol
                usd = e["assets"] / 10 ** self.sys.decimals[debt_sym] * self._price(debt_sym, oracle)
                self.rec.bad_debt.append((number, e["owner"], int(e["subId"]), usd))
        if self.module is not None:
            self._protection_logs(number, oracle)
        ok, health, debt = read_healths(self.rpc, self.sys.lens.address, self.rec.accounts, number)
        rec = BlockRecord(
            number=number,
            timestamp=int(block["timestamp"], 16),
            scenario_s=s,
            base_fee=int(block.get("baseFeePerGas", "0x0"), 16),
            gas_used=int(block["gasUsed"], 16),
            gas_limit=int(block["gasLimit"], 16),
            ok=ok,
            health=health,
            debt=debt,
            oracle=oracle,
        )
        self.rec.blocks.append(rec)
        return rec

    def _protection_logs(self, number: int, oracle: dict[str, float | None]) -> None:
        assert self.module is not None
        debt_sym = self.sys.debt_symbol
        for raw in self.rpc.logs(self.module.address, number, number):
            topic = str(raw["topics"][0])
            if topic == self.topic_pre:
                e = self.pre_event.process_log(_log(raw))["args"]
                symbol = self.symbol_of[Web3.to_checksum_address(e["collateral"])]
                self.rec.pre_liquidations.append(
                    LiquidationRecord(
                        block=number,
                        tx=str(raw["transactionHash"]),
                        log_index=int(raw["logIndex"], 16),
                        liquidator=Web3.to_checksum_address(e["caller"]),
                        owner=Web3.to_checksum_address(e["owner"]),
                        sub_id=int(e["subId"]),
                        collateral=symbol,
                        repaid=int(e["repaid"]),
                        seized=int(e["seized"]),
                        discount=int(e["discount"]),
                        repaid_usd=int(e["repaid"]) / 10 ** self.sys.decimals[debt_sym] * self._price(debt_sym, oracle),
                        seized_usd=int(e["seized"]) / 10 ** self.sys.decimals[symbol] * self._price(symbol, oracle),
                    )
                )
            elif topic == self.topic_reb:
                e = self.reb_event.process_log(_log(raw))["args"]
                owner = Web3.to_checksum_address(e["owner"])
                self.rec.rebalances.append((number, owner, int(e["fromSubId"]), int(e["toSubId"])))

    def _price(self, symbol: str, oracle: dict[str, float | None]) -> float:
        got = oracle.get(symbol)
        return got if got is not None else self.market[symbol]

    def _liquidation(self, raw: dict[str, Any], number: int, oracle: dict[str, float | None]) -> None:
        e = self.liq_event.process_log(_log(raw))["args"]
        symbol = self.symbol_of[Web3.to_checksum_address(e["collateral"])]
        debt_sym = self.sys.debt_symbol
        owner, sub_id = Web3.to_checksum_address(e["owner"]), int(e["subId"])
        self.rec.liquidations.append(
            LiquidationRecord(
                block=number,
                tx=str(raw["transactionHash"]),
                log_index=int(raw["logIndex"], 16),
                liquidator=Web3.to_checksum_address(e["liquidator"]),
                owner=owner,
                sub_id=sub_id,
                collateral=symbol,
                repaid=int(e["repaid"]),
                seized=int(e["seized"]),
                discount=int(e["discount"]),
                repaid_usd=e["repaid"] / 10 ** self.sys.decimals[debt_sym] * self._price(debt_sym, oracle),
                seized_usd=e["seized"] / 10 ** self.sys.decimals[symbol] * self._price(symbol, oracle),
            )
        )
        self.liquidated_accounts.add((owner, sub_id))

    def _mined(self, tx: dict[str, Any], number: int) -> None:
        h = str(tx["hash"])
        entry = self.rec.keeper_txs.get(h)
        if entry is None:
            entry = KeeperTx(h, int(tx["nonce"], 16), self._target(str(tx.get("input", "0x"))), -1)
            self.rec.keeper_txs[h] = entry
        receipt = self.rpc.receipt(h)
        assert receipt is not None
        entry.mined_block = number
        entry.status = int(receipt["status"], 16)
        entry.gas_used = int(receipt["gasUsed"], 16)
        entry.gas_cost_wei = entry.gas_used * int(receipt["effectiveGasPrice"], 16)

    def _target(self, data: str) -> tuple[str, int] | None:
        try:
            fn, args = self.sys.engine.decode_function_input(data)
        except ValueError:
            return None
        if fn.fn_name != "liquidate":
            return None
        return Web3.to_checksum_address(args["owner"]), int(args["subId"])

    def _inspect_pool(self, number: int) -> None:
        """What the keeper just sent. A new transaction for an account another of the keeper's pending transactions
        (a different nonce) already covers is a duplicate submission; a replacement (same nonce) is not."""
        pending = self.rpc.pending_from(self.rec.keeper)
        by_account: dict[tuple[str, int], set[int]] = {}
        fresh: list[KeeperTx] = []
        for tx in pending:
            h = str(tx["hash"])
            entry = self.rec.keeper_txs.get(h)
            if entry is None:
                entry = KeeperTx(h, int(tx["nonce"], 16), self._target(str(tx.get("input", "0x"))), number)
                self.rec.keeper_txs[h] = entry
                fresh.append(entry)
            if entry.account is not None:
                by_account.setdefault(entry.account, set()).add(entry.nonce)
        for entry in fresh:
            if entry.account is not None and len(by_account[entry.account] - {entry.nonce}) > 0:
                entry.duplicate = True

    # ---- the whole replay

    def run(self) -> None:
        head = self.rpc.block("latest")
        t0 = int(head["timestamp"], 16) + self.bt
        total = self.rec.replay_blocks + self.settle_blocks
        prev_s: int | None = None
        started = time.monotonic()
        for k in range(total):
            s = k * self.bt
            ts = t0 + s
            settling = k >= self.rec.replay_blocks
            if not settling:
                self._before_block(prev_s, s, ts)
            else:
                self._refresh(ts, everything=False)
            self.rpc.mine(ts)
            rec = self._after_block(s)
            if k == 0:
                self.rec.start_block = rec.number
            self.clock.now = float(ts)
            tick_started = time.monotonic()
            self.keeper.tick()
            self.rec.tick_s.append(time.monotonic() - tick_started)
            self._inspect_pool(rec.number)
            prev_s = s
            if self.opts.on_block is not None:
                self.opts.on_block(
                    Progress(
                        block=k + 1,
                        blocks=total,
                        scenario_s=s,
                        liquidatable=sum(
                            liquidatable(o, h, d) for o, h, d in zip(rec.ok, rec.health, rec.debt, strict=True)
                        ),
                        liquidations=len(self.rec.liquidations),
                        liquidated_accounts=len(self.liquidated_accounts),
                        faults=[f.kind + (f":{f.asset}" if f.asset else "") for f in self.active],
                        settling=settling,
                        node_url=self.rpc.url,
                        head=rec.number,
                    )
                )
        self.rec.wall_s = time.monotonic() - started

    def _refresh(self, ts: int, everything: bool) -> None:
        """Push the market price to every feed not under a fault: all of them (at a step), or those whose last
        update is half their max_staleness old (the heartbeat that keeps a price valid between steps)."""
        for symbol, price in self.market.items():
            if symbol in self.faulted:
                continue
            if everything or ts - self.driver.updated_at.get(symbol, 0) >= self.sys.max_staleness[symbol] // 2:
                self.driver.push_usd(symbol, price, ts)


class DrillClock:
    """The keeper's clock during a drill: chain time, moved by the replay (backoff and staleness in chain seconds)."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _log(raw: dict[str, Any]) -> Any:
    """A raw eth_getLogs entry in the shape web3's event decoder takes."""
    return {
        "address": Web3.to_checksum_address(raw["address"]),
        "topics": [bytes.fromhex(str(t)[2:]) for t in raw["topics"]],
        "data": bytes.fromhex(str(raw["data"])[2:]),
        "blockNumber": int(raw["blockNumber"], 16),
        "transactionHash": bytes.fromhex(str(raw["transactionHash"])[2:]),
        "transactionIndex": int(raw["transactionIndex"], 16),
        "blockHash": bytes.fromhex(str(raw["blockHash"])[2:]),
        "logIndex": int(raw["logIndex"], 16),
        "removed": False,
    }


# ------------------------------------------------------------------------------------------------ the whole drill


def _phase(opts: DrillOptions, text: str) -> None:
    log.info(text)
    if opts.on_phase is not None:
        opts.on_phase(text)


def _target(opts: DrillOptions, stack: ExitStack) -> tuple[Rpc, Path, str]:
    """The node and the deployment record the drill uses: (rpc, record path, target kind). What it starts is
    stopped when `stack` closes."""
    out = opts.out
    if opts.rpc_url is not None:
        rpc = Rpc(opts.rpc_url)
        stack.callback(rpc.close)
        _require_anvil(rpc, opts.rpc_url)
        chain_id = rpc.chain_id()
        record = opts.deployment or Path("deployments") / f"{chain_id}.json"
        return rpc, _local_copy(record, chain_id, chain_id, out), "rpc"
    if opts.fork_url is not None:
        origin = Rpc(opts.fork_url)
        stack.callback(origin.close)
        origin_chain = origin.chain_id()
        record = opts.deployment or Path("deployments") / f"{origin_chain}.json"
        _phase(opts, f"starting Anvil forking chain {origin_chain}")
        node = AnvilProcess(
            ["--fork-url", opts.fork_url, "--chain-id", "31337"], log_path=out / "anvil.log", anvil=opts.anvil
        )
        stack.callback(node.stop)
        return node.rpc, _local_copy(record, origin_chain, 31337, out), "fork"
    project = find_project(opts.project)
    _phase(opts, "starting Anvil")
    node = AnvilProcess(["--chain-id", "31337", "--accounts", "4"], log_path=out / "anvil.log", anvil=opts.anvil)
    stack.callback(node.stop)
    _phase(opts, "deploying the contracts (ape run deploy)")
    return node.rpc, deploy_embedded(opts.scenario, node.url, out, project, opts.risk), "embedded"


def _require_anvil(rpc: Rpc, url: str) -> None:
    if not rpc.is_anvil():
        raise DrillError(
            f"the node at {url} is not Anvil: a drill mines blocks, sets time and base fee and drives feeds with "
            "anvil_* methods; use an Anvil node, or --fork-url to fork this one"
        )


def _local_copy(record: Path, chain_id: int, local_chain_id: int, out: Path) -> Path:
    """The deployment record, checked, copied into the drill folder with the drill node's chain id."""
    load_deployment(record, chain_id)  # a clear error if it is missing, malformed or for another chain
    raw = json.loads(record.read_text(encoding="utf-8"))
    raw["chain_id"] = local_chain_id
    copy = out / "deployment.json"
    copy.write_text(json.dumps(raw, indent=1), encoding="utf-8")
    return copy


def _check_scenario(scenario: Scenario, system: System) -> None:
    listed = set(system.tokens)
    missing = sorted({a.symbol for a in scenario.assets} - listed)
    if missing:
        raise DrillError(
            f"scenario {scenario.name!r} uses {', '.join(missing)}, which the deployment does not list "
            f"(it has {', '.join(sorted(listed))})"
        )
    if scenario.quote.symbol != system.debt_symbol:
        raise DrillError(
            f"scenario {scenario.name!r} borrows {scenario.quote.symbol} but the deployment lends {system.debt_symbol}"
        )
    if any(f.kind == "sequencer_down" for f in scenario.faults) and system.sequencer_feed is None:
        raise DrillError(
            f"scenario {scenario.name!r} has a sequencer_down fault but the deployment has no sequencer feed: "
            'deploy with `[sequencer] feed = "mock"`'
        )


# Settings the drill sets for the keeper under drill itself; `--set` may give any other.
DRILL_OWNED_SETTINGS = frozenset(
    {
        "rpc_url",
        "submit_url",
        "chain_id",
        "deployment",
        "keystore",
        "password_file",
        "dev_account_index",
        "private_key",
        "state_db",
        "anvil",
        "rebalance_enabled",
        "pre_liquidation_enabled",
    }
)


def keeper_settings(
    url: str, chain_id: int, record: Path, out: Path, bt: int, protect: bool, extra: dict[str, Any]
) -> Settings:
    """The settings of the keeper under drill: the drill's own (node, record, dev key, journal, loop timing) and
    `extra` (`--set NAME=VALUE`). Nothing comes from the caller's environment (Settings reads none)."""
    owned = sorted(set(extra) & DRILL_OWNED_SETTINGS)
    if owned:
        raise DrillError(f"--set {', '.join(owned)}: the drill sets this for its keeper itself")
    unknown = sorted(set(extra) - set(Settings.model_fields))
    if unknown:
        raise DrillError(f"--set {', '.join(unknown)}: not a keeper setting (see docs/keeper.md for the list)")
    values: dict[str, Any] = {
        "poll_interval_s": float(bt),
        "stale_node_s": float(max(60, 10 * bt)),
        **extra,
        "rebalance_enabled": protect,
        "pre_liquidation_enabled": protect,
        "rpc_url": url,
        "chain_id": chain_id,
        "deployment": record,
        "dev_account_index": KEEPER_INDEX,
        "state_db": out / "keeper-state.db",
    }
    try:
        return Settings.model_validate(values)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'settings'}: {e['msg'].removeprefix('Value error, ')}"
            for e in exc.errors(include_url=False, include_input=False)
        )
        raise DrillError(f"the keeper's settings for the drill are invalid ({problems}); fix --set") from None


def _keeper(
    url: str,
    rpc: Rpc,
    record: Path,
    out: Path,
    clock: DrillClock,
    bt: int,
    protect: bool = False,
    extra: dict[str, Any] | None = None,
) -> tuple[Keeper, str]:
    chain_id = rpc.chain_id()
    settings = keeper_settings(url, chain_id, record, out, bt, protect, extra or {})
    w3 = Web3(Web3.HTTPProvider(url, request_kwargs={"timeout": 10}, exception_retry_configuration=None))
    dep = load_deployment(record, chain_id)
    signer = load_signer(settings, chain_id)
    keeper = build_keeper(settings, dep, w3, signer, clock=clock, log=logging.getLogger("keeper.drill.keeper"))
    return keeper, signer.address


def run_drill(opts: DrillOptions) -> DrillRecord:
    """Set up the target, seed, replay, settle; the DrillRecord of everything the chain showed."""
    scenario = opts.scenario
    seed = scenario.seed if opts.seed is None else opts.seed
    count = scenario.accounts.count if opts.accounts is None else opts.accounts
    opts.out = opts.out.resolve()
    opts.out.mkdir(parents=True, exist_ok=True)
    with ExitStack() as stack:
        rpc, record_path, kind = _target(opts, stack)  # Anvil: checked for --rpc-url, started by us otherwise
        w3 = Web3(Web3.HTTPProvider(rpc.url, request_kwargs={"timeout": 60}))
        dep = load_deployment(record_path, rpc.chain_id())
        if len(rpc.code(dep.engine)) == 0:
            raise DeploymentError(
                f"no MarginEngine code at {dep.engine} on the drill's node: the deployment record "
                f"{record_path} is for another chain or the node was reset"
            )
        system = System.load(w3, dep)
        _check_scenario(scenario, system)
        accounts_ = rpc.call("eth_accounts")
        if len(accounts_) <= KEEPER_INDEX:
            raise DrillError("the drill's node has fewer than two dev accounts (one drives, one is the keeper)")
        driver = Driver(rpc, system, Web3.to_checksum_address(accounts_[DRIVER_INDEX]))
        if kind == "fork":
            _phase(opts, "taking over the feeds of the fork")
            takeover_feeds(driver, opts.project)
        was_automine = rpc.automine()
        rpc.set_automine(False)
        stack.callback(lambda: rpc.set_automine(was_automine))

        # Accounts already on the engine (an earlier drill on this node, a fork's users): measured like the seeded
        # ones, since the keeper finds and liquidates them too.
        found = MemoryIndex()
        Discovery(w3, found, dep.engine, dep.abis["MarginEngine"], dep.start_block, confirmations=0).scan()
        preexisting = found.accounts()
        plans = plan_seeding(scenario, system, count, seed)
        taken = {owner for owner, _ in preexisting}
        if any(p.owner in taken for p in plans):
            # The seed's owners already hold accounts here (an earlier drill with this seed): seeding on top of them
            # would not give the drawn healths. Draw the same plan for fresh owners instead.
            salt = f" at block {rpc.block_number()}"
            _phase(opts, f"the seed's owners already have accounts on this node: new owners (salt {salt.strip()!r})")
            plans = plan_seeding(scenario, system, count, seed, salt)
        _phase(opts, f"seeding {count} accounts (seed {seed})")
        keeper_address = Web3.to_checksum_address(accounts_[KEEPER_INDEX])
        seed_accounts(driver, scenario, plans, keeper_address)
        owners = protected_owners(plans, scenario.accounts.protected, seed)
        opt_in(driver, plans, owners, keeper_address)
        seeded = [(p.owner, p.sub) for p in plans]
        accounts = seeded + [a for a in preexisting if a not in set(seeded)]
        start_rows = _health_rows(rpc, system.lens.address, accounts, rpc.block_number())
        ok, health, debt = split_rows(start_rows)
        if not all(ok[: len(seeded)]):
            raise DrillError("after seeding, some accounts have no valid price: the feeds did not take the prices")

        relay = None
        keeper_url = rpc.url
        if any(f.kind == "rpc_outage" for f in scenario.faults):
            host, port = rpc.url.removeprefix("http://").split(":")
            relay = FlakyRelay((host, int(port)))
            stack.callback(relay.close)
            keeper_url = relay.url
        clock = DrillClock(float(int(rpc.block()["timestamp"], 16)))
        protect = scenario.accounts.protected > 0
        keeper, address = _keeper(
            keeper_url, rpc, record_path, opts.out, clock, scenario.block_time_s, protect, opts.keeper_settings
        )
        stack.callback(keeper.close)
        assert address == keeper_address
        record = DrillRecord(
            scenario=scenario,
            seed=seed,
            chain_id=dep.chain_id,
            target=kind,
            keeper=keeper_address,
            accounts=accounts,
            initial_health=[h / WAD if d else math.inf for h, d in zip(health, debt, strict=True)],
            start_block=0,
            replay_blocks=math.ceil(scenario.duration_s / scenario.block_time_s) + 1,
            seeded=len(seeded),
            liquidatable_at_start={
                i for i, (o, h, d) in enumerate(zip(ok, health, debt, strict=True)) if liquidatable(o, h, d)
            },
            start_totals=totals(start_rows[: len(seeded)]),
            start_debt_usd=debts_usd(start_rows),
            risk={s: {"ltv": system.ltv[s], "lt": system.lt[s]} for s in system.ltv},
            protected={(p.owner, p.sub) for p in plans if p.owner in owners},
        )
        _phase(opts, "the keeper indexes the accounts")
        keeper.ensure_allowance()
        for _ in range(WARMUP_BLOCKS):
            rpc.mine()
            # index only: a liquidation before the replay's first block would go unrecorded
            keeper.discovery.scan()
        driver.mine_all()
        if keeper.index.account_count() < len(set(accounts)):
            raise DrillError(
                f"the keeper indexed {keeper.index.account_count()} of {len(accounts)} accounts before the start"
            )
        _phase(opts, f"replaying {scenario.name}: {record.replay_blocks} blocks, then settling")
        Replay(opts, rpc, system, driver, keeper, relay, record, clock).run()
        return record
