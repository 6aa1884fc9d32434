"""`keeper drill`: replay a scenario against the real contracts and the real keeper on a local node, and record what
the chain did.

A drill has four phases:

1. **Target** (`keeper.drills.target`). By default an Anvil is started for the drill and the system deployed to it
   with `ape run deploy` (from a config made of deployments/configs/local.toml and the scenario's prices).
   `--rpc-url` uses a running Anvil that already holds a deployment; `--fork-url` starts an Anvil forking another
   node and takes over the deployment's feeds there, installing the mock aggregator's code at each feed address
   (each keeps its decimals).
2. **Seeding** (`keeper.drills.seeding`). `[accounts]` borrowers, reproducible from the seed: each gets one or more
   collateral assets and borrows to a health drawn uniformly from the range. Healths below what the initial margin
   allows (`lt/ltv`) are reached by borrowing at prices raised for the seeding only; the scenario's prices are
   restored before the start. The vault is funded so every borrow fits, and the keeper gets a debt-asset inventory
   and gas money.
3. **Replay** (`keeper.drills.replay`, `keeper.drills.observe`). The drill mines every block itself,
   `block_time_s` of chain time apart, with automine off: before each block it sends the price updates and fault
   changes due by then, mines, records the chain's state (every account's health, events, the keeper's receipts),
   then lets the keeper handle the block (`Keeper.tick`, the same code `keeper run` schedules) and inspects the
   node's pool for what the keeper sent. Chain time is therefore compressed: a drill of two hours of chain time
   takes as long as the keeper needs for its blocks.
4. **Settle and measure.** After the last step (and fault) a settle period lets the keeper finish; then
   `keeper.drills.report` turns the record into report.json, report.md and the plots.

Everything measured comes from the node (blocks, logs, receipts, pool, eth_call on each block), never from the
keeper's own journal or metrics.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from pathlib import Path

from pydantic import ValidationError
from web3 import Web3

from keeper.chain.deployment import Deployment, load_deployment
from keeper.chain.discovery import Discovery
from keeper.chain.index import MemoryIndex
from keeper.chain.node import Rpc
from keeper.chain.signer import load_signer
from keeper.core.errors import DeploymentError
from keeper.core.units import WAD
from keeper.drills.driver import Driver
from keeper.drills.healths import HealthRow, debts_usd, health_rows, liquidatable, split_rows, totals
from keeper.drills.observe import Observer
from keeper.drills.record import DrillError, DrillOptions, DrillRecord
from keeper.drills.relay import FlakyRelay
from keeper.drills.replay import DrillClock, Replay
from keeper.drills.scenario import Scenario
from keeper.drills.seeding import SeedPlan, opt_in, plan_seeding, protected_owners, seed_accounts
from keeper.drills.system import System, calldata
from keeper.drills.target import TargetKind, open_target, takeover_feeds
from keeper.engine.compose import build_keeper
from keeper.engine.keeper import Keeper, NativePrice
from keeper.engine.settings import Settings
from keeper.optimizer.gridfit import set_grid_calldata, to_columns

DRIVER_INDEX = 0  # Anvil dev account that pushes prices and funds accounts (also the embedded deployer)
KEEPER_INDEX = 1  # Anvil dev account the keeper under drill signs with
WARMUP_BLOCKS = 3

log = logging.getLogger("keeper.drill")

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
    url: str, chain_id: int, record: Path, out: Path, bt: int, protect: bool, extra: Mapping[str, object]
) -> Settings:
    """The settings of the keeper under drill: the drill's own (node, record, dev key, journal, loop timing) and
    `extra` (`--set NAME=VALUE`). Nothing comes from the caller's environment (Settings reads none)."""
    owned = sorted(set(extra) & DRILL_OWNED_SETTINGS)
    if owned:
        raise DrillError(f"--set {', '.join(owned)}: the drill sets this for its keeper itself")
    unknown = sorted(set(extra) - set(Settings.model_fields))
    if unknown:
        raise DrillError(f"--set {', '.join(unknown)}: not a keeper setting (see docs/keeper.md for the list)")
    values: dict[str, object] = {
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
    extra: Mapping[str, object] | None = None,
) -> tuple[Keeper, str]:
    """The keeper under drill, built as `keeper run` builds it, on the drill's node (through `url`) and clock."""
    chain_id = rpc.chain_id()
    settings = keeper_settings(url, chain_id, record, out, bt, protect, extra or {})
    w3 = Web3(Web3.HTTPProvider(url, request_kwargs={"timeout": 10}, exception_retry_configuration=None))
    dep = load_deployment(record, chain_id)
    signer = load_signer(settings, chain_id)
    keeper = build_keeper(settings, dep, w3, signer, clock=clock, log=logging.getLogger("keeper.drill.keeper"))
    return keeper, signer.address


def _phase(opts: DrillOptions, text: str) -> None:
    log.info(text)
    if opts.on_phase is not None:
        opts.on_phase(text)


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


def _load_system(rpc: Rpc, record_path: Path, scenario: Scenario) -> tuple[Web3, Deployment, System]:
    """The deployment on the drill's node, checked against the node and the scenario."""
    w3 = Web3(Web3.HTTPProvider(rpc.url, request_kwargs={"timeout": 60}))
    dep = load_deployment(record_path, rpc.chain_id())
    if len(rpc.code(dep.engine)) == 0:
        raise DeploymentError(
            f"no MarginEngine code at {dep.engine} on the drill's node: the deployment record "
            f"{record_path} is for another chain or the node was reset"
        )
    system = System.load(w3, dep)
    _check_scenario(scenario, system)
    return w3, dep, system


def _plan(
    opts: DrillOptions, rpc: Rpc, w3: Web3, dep: Deployment, system: System, count: int, seed: int
) -> tuple[list[tuple[str, int]], list[SeedPlan]]:
    """The accounts already on the engine (an earlier drill on this node, a fork's users: measured like the seeded
    ones, since the keeper finds and liquidates them too), and the seeding plan, for owners who hold none."""
    found = MemoryIndex()
    Discovery(w3, found, dep.engine, dep.abis["MarginEngine"], dep.start_block, confirmations=0).scan()
    preexisting = found.accounts()
    plans = plan_seeding(opts.scenario, system, count, seed)
    taken = {owner for owner, _ in preexisting}
    if any(p.owner in taken for p in plans):
        # The seed's owners already hold accounts here (an earlier drill with this seed): seeding on top of them
        # would not give the drawn healths. Draw the same plan for fresh owners instead.
        salt = f" at block {rpc.block_number()}"
        _phase(opts, f"the seed's owners already have accounts on this node: new owners (salt {salt.strip()!r})")
        plans = plan_seeding(opts.scenario, system, count, seed, salt)
    return preexisting, plans


def _relay(rpc: Rpc, scenario: Scenario, stack: ExitStack) -> tuple[FlakyRelay | None, str]:
    """The relay between the keeper and the node when the scenario has an rpc_outage fault; the keeper's node URL."""
    if not any(f.kind == "rpc_outage" for f in scenario.faults):
        return None, rpc.url
    host, port = rpc.url.removeprefix("http://").split(":")
    relay = FlakyRelay((host, int(port)))
    stack.callback(relay.close)
    return relay, relay.url


def _start_record(
    opts: DrillOptions,
    seed: int,
    kind: TargetKind,
    system: System,
    keeper_address: str,
    accounts: list[tuple[str, int]],
    seeded: int,
    rows: list[HealthRow],
    protected: set[tuple[str, int]],
) -> DrillRecord:
    """The record as the replay starts: the accounts, their healths and totals, and what the drill is."""
    scenario = opts.scenario
    ok, health, debt = split_rows(rows)
    if not all(ok[:seeded]):
        raise DrillError("after seeding, some accounts have no valid price: the feeds did not take the prices")
    return DrillRecord(
        scenario=scenario,
        seed=seed,
        chain_id=system.dep.chain_id,
        target=kind,
        keeper=keeper_address,
        accounts=accounts,
        initial_health=[h / WAD if d else math.inf for h, d in zip(health, debt, strict=True)],
        start_block=0,
        replay_blocks=math.ceil(scenario.duration_s / scenario.block_time_s) + 1,
        seeded=seeded,
        liquidatable_at_start={
            i for i, (o, h, d) in enumerate(zip(ok, health, debt, strict=True)) if liquidatable(o, h, d)
        },
        start_totals=totals(rows[:seeded]),
        start_debt_usd=debts_usd(rows),
        risk={s: {"ltv": system.ltv[s], "lt": system.lt[s]} for s in system.ltv},
        protected=protected,
    )


@contextmanager
def relaxed_margin(driver: Driver, scenario: Scenario) -> Iterator[None]:
    """For seeding books (`[[accounts.book]]`): every listed collateral's ltv just under its lt and a grid's initial
    scale at 1 while the accounts borrow, so that any drawn health above 1 can be reached without moving a price (a
    book may borrow an asset another holds as collateral); governance's figures are restored after. Sent by the
    driver, the embedded deployer, who holds the admin role."""
    sys_ = driver.sys
    engine = sys_.engine
    saved = []
    for symbol in sys_.lt:
        token = sys_.tokens[symbol]
        cfg = engine.functions.assetConfig(token).call()  # listed, index, decimals, ltv, lt, maxDiscount, rampEnd
        cap = int(engine.functions.assetSupply(token).call()[0])
        saved.append((token, int(cfg[3]), int(cfg[4]), int(cfg[5]), cap))

    def configure(relaxed: bool) -> None:
        txs = [
            driver.send(
                driver.me,
                engine.address,
                calldata(engine, "setAssetConfig", t, lt - 1 if relaxed else ltv, lt, md, cap),
            )
            for t, ltv, lt, md, cap in saved
        ]
        driver.mine_all()
        driver.check_mined(txs, "setting the initial margin around the seeding (needs the admin role)")
        if scenario.margin is not None:
            set_margin_grid(driver, scenario, initial_scale=1.0 if relaxed else None)

    configure(relaxed=True)
    try:
        yield
    finally:
        configure(relaxed=False)


def set_margin_grid(driver: Driver, scenario: Scenario, initial_scale: float | None = None) -> None:
    """The engine's `setGrid` from the scenario's `[margin]`, sent by the driver (the embedded deployer, who holds
    the admin role): every listed asset's column and the debt asset's, an asset a scenario does not name at 1, a
    listed asset the scenario does not use at its lt (no credit)."""
    margin = scenario.margin
    assert margin is not None
    sys_ = driver.sys
    used = {a.symbol for a in scenario.assets}
    unused = {s: lt for s, lt in sys_.lt.items() if s not in used}
    symbols = [*sys_.lt, sys_.debt_symbol]
    # whole millionths, rounded against the account (the debt up, collateral down), as `keeper optimize --grid` does
    columns = to_columns([{**unused, **sc} for sc in margin.scenarios], symbols, sys_.debt_symbol)
    scale = margin.initial_scale if initial_scale is None else initial_scale
    data = set_grid_calldata([sys_.tokens[s] for s in symbols], [columns[s] for s in symbols], int(scale * WAD))
    tx = driver.send(driver.me, sys_.engine.address, data, gas=2_000_000)
    driver.mine_all()
    try:
        driver.check_mined([tx], "setting the scenario's margin grid")
    except DrillError as exc:
        raise DrillError(
            f"{exc}: the drill's driver {driver.me} must hold the engine's admin role to set the [margin] grid "
            "(the embedded deployment gives it; on --rpc-url, run with --additive or set the grid yourself)"
        ) from None


def run_drill(opts: DrillOptions) -> DrillRecord:
    """Set up the target, seed, replay, settle; the DrillRecord of everything the chain showed."""
    scenario = opts.scenario
    seed = scenario.seed if opts.seed is None else opts.seed
    count = scenario.accounts.count if opts.accounts is None else opts.accounts
    opts.out = opts.out.resolve()
    opts.out.mkdir(parents=True, exist_ok=True)
    with ExitStack() as stack:
        # Anvil: checked for --rpc-url, started by us otherwise
        rpc, record_path, kind = open_target(opts, stack, lambda text: _phase(opts, text))
        w3, dep, system = _load_system(rpc, record_path, scenario)
        dev_accounts = rpc.call("eth_accounts")
        if len(dev_accounts) <= KEEPER_INDEX:
            raise DrillError("the drill's node has fewer than two dev accounts (one drives, one is the keeper)")
        driver = Driver(rpc, system, Web3.to_checksum_address(dev_accounts[DRIVER_INDEX]))
        if kind == "fork":
            _phase(opts, "taking over the feeds of the fork")
            takeover_feeds(driver, opts.project)
        was_automine = rpc.automine()
        rpc.set_automine(False)
        stack.callback(lambda: rpc.set_automine(was_automine))

        if scenario.margin is not None:
            _phase(opts, f"setting the scenario's margin grid ({len(scenario.margin.scenarios)} scenarios)")
            set_margin_grid(driver, scenario)
        preexisting, plans = _plan(opts, rpc, w3, dep, system, count, seed)
        _phase(opts, f"seeding {count} accounts (seed {seed})")
        keeper_address = Web3.to_checksum_address(dev_accounts[KEEPER_INDEX])
        if scenario.accounts.books:
            with relaxed_margin(driver, scenario):
                seed_accounts(driver, scenario, plans, keeper_address)
        else:
            seed_accounts(driver, scenario, plans, keeper_address)
        owners = protected_owners(plans, scenario.accounts.protected, seed)
        opt_in(driver, plans, owners, keeper_address)
        seeded = [(p.owner, p.sub) for p in plans]
        accounts = seeded + [a for a in preexisting if a not in set(seeded)]
        rows = health_rows(rpc, system.lens.address, accounts, rpc.block_number())
        protected = {(p.owner, p.sub) for p in plans if p.owner in owners}
        record = _start_record(opts, seed, kind, system, keeper_address, accounts, len(seeded), rows, protected)

        relay, keeper_url = _relay(rpc, scenario, stack)
        clock = DrillClock(float(int(rpc.block()["timestamp"], 16)))
        protect = scenario.accounts.protected > 0
        keeper, address = _keeper(
            keeper_url, rpc, record_path, opts.out, clock, scenario.block_time_s, protect, opts.keeper_settings
        )
        stack.callback(keeper.close)
        assert address == keeper_address
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
        # The native token's USD price values the keeper's fees: the keeper's own source (deployment or setting).
        observer = Observer(
            rpc,
            system,
            record,
            {a.symbol: a.price for a in scenario.assets},
            NativePrice(system.w3, keeper.native.source),
        )
        Replay(opts, driver, observer, keeper.tick, relay, clock).run()
        return record
