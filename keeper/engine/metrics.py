"""Prometheus metrics of one keeper process, on their own registry (nothing global)."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

# Why a liquidatable account got no liquidation in a block (the `reason` label of keeper_accounts_skipped):
# inventory: the keeper's debt-asset balance cannot repay it; fee: the base fee is above what the liquidation can
# pay and still earn min_profit_usd; profit: it earns less than min_profit_usd before gas; price: the native token's
# price is unknown, so gas cannot be priced; cooldown: its liquidation reverted a few blocks ago; simulation: eth_call
# says it reverts; pending: a liquidation of it is in flight; rescued: a rebalance is lifting it instead; paused:
# the circuit breaker holds sending; rejected: the node refused the transaction.
SKIP_REASONS = (
    "inventory",
    "fee",
    "profit",
    "price",
    "cooldown",
    "simulation",
    "pending",
    "rescued",
    "paused",
    "rejected",
)


@dataclass
class Metrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.accounts_tracked = Gauge("keeper_accounts_tracked", "Accounts discovered and read every block", registry=r)
        self.accounts_liquidatable = Gauge(
            "keeper_accounts_liquidatable",
            "Accounts the risk mirror finds liquidatable, whether or not a liquidation is sent",
            registry=r,
        )
        self.accounts_skipped = Gauge(
            "keeper_accounts_skipped",
            "Liquidatable accounts no liquidation was sent for in the last block, by reason",
            ["reason"],
            registry=r,
        )
        for reason in SKIP_REASONS:
            self.accounts_skipped.labels(reason=reason).set(0)
        self.debt_inventory = Gauge(
            "keeper_debt_inventory", "Debt-asset balance of the signing key, whole tokens", registry=r
        )
        self.accounts_unpriced = Gauge(
            "keeper_accounts_unpriced", "Accounts with debt whose prices the router refuses", registry=r
        )
        self.grid_scenarios = Gauge(
            "keeper_margin_grid_scenarios",
            "Scenarios of the engine's margin grid the mirror follows (0: the additive rule)",
            registry=r,
        )
        self.liquidations_sent = Counter("keeper_liquidations_sent", "Liquidation transactions sent", registry=r)
        self.liquidations_confirmed = Counter(
            "keeper_liquidations_confirmed", "Liquidations mined and confirmed", registry=r
        )
        self.liquidations_reverted = Counter(
            "keeper_liquidations_reverted", "Liquidations mined but reverted", registry=r
        )
        self.simulation_failures = Counter(
            "keeper_simulation_failures", "Liquidations not sent because eth_call said they revert", registry=r
        )
        self.profit_usd = Counter("keeper_profit_usd", "Expected profit of confirmed liquidations, USD", registry=r)
        self.latency_blocks = Histogram(
            "keeper_liquidation_latency_blocks",
            "Blocks from first seeing an account liquidatable to its liquidation being mined",
            buckets=(0, 1, 2, 3, 5, 10, 20, 50),
            registry=r,
        )
        self.signer_balance = Gauge("keeper_signer_balance_eth", "Native balance of the signing key", registry=r)
        self.last_block = Gauge("keeper_last_processed_block", "Last block the keeper fully processed", registry=r)
        self.pre_liquidations_sent = Counter(
            "keeper_pre_liquidations_sent", "Pre-liquidation transactions sent", registry=r
        )
        self.rebalances_sent = Counter("keeper_rebalances_sent", "Rebalance transactions sent", registry=r)
        self.write_offs_sent = Counter(
            "keeper_write_offs_sent", "writeOff transactions sent for insolvent accounts not liquidated", registry=r
        )
        self.protection_reverted = Counter(
            "keeper_protection_reverted",
            "Rebalance and pre-liquidation transactions that reverted on chain",
            registry=r,
        )
        self.rescues_sent = Counter(
            "keeper_rescues_sent", "Rebalances sent instead of a liquidation (rescues, also in rebalances)", registry=r
        )
        self.risk_updates_sent = Counter(
            "keeper_risk_updates_sent", "updateRiskParams transactions sent by the optimizer job", registry=r
        )
        self.risk_optimizer_runs = Counter(
            "keeper_risk_optimizer_runs", "Optimizer runs (one per asset with bounds, per interval)", registry=r
        )
        self.risk_optimizer_failures = Counter(
            "keeper_risk_optimizer_failures",
            "Assets the optimizer job could not optimize, by asset and reason (history, sigma, feed, rpc, error)",
            ["asset", "reason"],
            registry=r,
        )
        self.rpc_errors = Counter("keeper_rpc_errors", "Failed RPC calls (any job)", registry=r)
        self.node_stale = Gauge("keeper_node_stale", "1 while the node has produced no block for too long", registry=r)
        self.circuit_open = Gauge(
            "keeper_circuit_open", "1 while sending is paused after repeated failures", registry=r
        )

    def serve(self, port: int, host: str = "127.0.0.1") -> None:
        start_http_server(port, addr=host, registry=self.registry)
