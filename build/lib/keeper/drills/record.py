"""The drill's vocabulary: its error, its options, the progress it reports, and the record of what the chain showed
(the input of `keeper.drills.report`). Plain data, no I/O."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from keeper.core.errors import KeeperError
from keeper.drills.scenario import Scenario


class DrillError(KeeperError):
    """A drill that cannot start or cannot go on: a target without a deployment, a scenario asset the deployment
    does not list, a node that is not Anvil."""


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
    keeper_settings: Mapping[str, object] = field(default_factory=dict)  # settings of the keeper under drill (`--set`)
    anvil: Path | None = None  # the Anvil binary (the `anvil` setting, KEEPER_ANVIL); None: .venv/bin, then PATH
    on_block: Callable[[Progress], None] | None = None
    on_phase: Callable[[str], None] | None = None


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
