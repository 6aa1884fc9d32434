"""`keeper optimize`: choose an asset's lt and ltv from its risk (docs/risk-model.md).

Inputs come from flags (keeper/cli/optimize_flags.py), or are measured from a live chain with `--asset SYMBOL` (the
feed's round history for the volatility and jumps, the engine for the discount schedule, the router for the
heartbeat); a flag always wins over a measured value. Prints a table, or one JSON object with `--json`; `--plot`
draws the trade-off; `--apply` moves the on-chain parameters one bounded step toward the choice through the keeper's
transaction manager, `--dry-run` shows that step and sends nothing.

This module composes the optimizer with the chain and the engine; `keeper.cli.main` imports it only when the
command runs (it loads NumPy).
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from web3 import Web3
from web3.exceptions import TransactionNotFound
from web3.types import TxReceipt

from keeper.chain.deployment import Deployment, contract
from keeper.chain.signer import load_signer
from keeper.chain.txmanager import Submission, TxManager
from keeper.cli.optimize_flags import inputs_from
from keeper.cli.startup import startup
from keeper.drills.scenario import load_scenario
from keeper.engine.compose import build_keeper
from keeper.engine.settings import Settings
from keeper.optimizer import stress
from keeper.optimizer.inputs import Regime
from keeper.optimizer.model import (
    WAD,
    Measured,
    OptimizeError,
    build,
    calm_simulation,
    history_need,
    solve,
    table,
    to_json,
)
from keeper.optimizer.update import (
    UPDATE_FUNCTION,
    Plan,
    asset_info,
    describe,
    has_role,
    measure,
    plan_update,
    read_onchain,
    require_role,
    simulate,
    submit,
    update_calldata,
)

CLI_ADVICE = (
    "wait for more rounds, widen --window-s, lower --min-rounds / --min-history-days / --min-sigma, or give --sigma"
)
APPLY_TIMEOUT_S = 180.0


@dataclass(frozen=True)
class Chain:
    settings: Settings
    dep: Deployment
    w3: Web3


def open_chain(config: Path | None) -> Chain:
    """Settings, deployment and node, checked as `keeper run` checks them."""
    return Chain(*startup(config))


def scenario_regime(spec: str) -> Regime:
    """The stress inputs a scenario's price path implies for one asset: every change of its price is a jump."""
    name, _, symbol = spec.rpartition(":")
    if not name or not symbol:
        raise OptimizeError(f"--from-scenario {spec!r}: expected NAME:SYMBOL, e.g. black-thursday:WETH")
    sc = load_scenario(name)
    collateral = [a.symbol for a in sc.assets if not a.quote]
    if symbol.upper() not in collateral:
        raise OptimizeError(f"--from-scenario: {sc.name} has no collateral {symbol!r}; it has {', '.join(collateral)}")
    path = sc.price_path(symbol.upper())
    moves = [math.log(b / a) for (_, a), (_, b) in itertools.pairwise(path) if a > 0 and b > 0 and b != a]
    if len(moves) < 2 or sc.duration_s <= 0:
        raise OptimizeError(f"--from-scenario: {sc.name} moves {symbol} fewer than twice; nothing to calibrate on")
    mean = sum(moves) / len(moves)
    return Regime(
        jump_intensity=len(moves) / sc.duration_s * stress.SECONDS_PER_YEAR,
        jump_mean=mean,
        jump_vol=math.sqrt(sum((m - mean) ** 2 for m in moves) / len(moves)),
        horizon_s=float(sc.duration_s),
        delay_s=float(sc.block_time_s),
        step_s=float(sc.block_time_s),
    )


def run(args: argparse.Namespace) -> int:
    inputs = inputs_from(args)
    plot: Path | None = args.plot
    asset: str | None = args.asset
    measured: Measured | None = None
    current: tuple[float, float] | None = None
    chain: Chain | None = None
    if plot is not None and not plot.resolve().parent.is_dir():
        raise OptimizeError(f"--plot {plot}: folder {plot.resolve().parent} does not exist; create it first")
    if args.apply and args.dry_run:
        raise OptimizeError("--apply and --dry-run exclude each other: --dry-run shows what --apply would send")
    if args.grid:
        if asset or plot is not None or args.from_scenario:
            raise OptimizeError(
                "--grid calibrates the whole market from the chain's feeds: drop --asset, --plot and --from-scenario"
            )
        from keeper.cli import optimize_grid

        return optimize_grid.run(args, open_chain(args.config), inputs)
    for flag, wanted in (("--apply", args.apply), ("--dry-run", args.dry_run)):
        if wanted and not asset:
            raise OptimizeError(f"{flag} needs --asset SYMBOL (and a config for the chain)")
    need = history_need(inputs, CLI_ADVICE)
    if asset:
        chain = open_chain(args.config)
        measured = measure(
            chain.w3, chain.dep, asset, inputs.window_s, inputs.max_rounds, need, need_history=inputs.sigma is None
        )
        current = (measured.lt, measured.ltv)
    if args.from_scenario:
        inputs = inputs.under(scenario_regime(args.from_scenario))  # the scenario fills what the flags left unset
    sim, targets = build(inputs, measured)
    calm = calm_simulation(sim, inputs)
    result = solve(sim, targets, current, calm, with_curve=plot is not None)
    if result.curve is not None and plot is not None:
        source = asset or (args.from_scenario or "").replace(":", " ") or "flags"
        title = f"{source}: σ {sim.market.sigma:.2f}, delay {sim.liquidation.delay_s:g} s, horizon {sim.horizon_s:g} s"
        stress.plot(result.curve, result.choice, targets.p_bad_debt, plot, title)
    doc = to_json(result, measured)
    if chain is not None and asset:
        if args.apply:
            doc["applied"] = apply(chain, asset, result.choice.metrics)
        if args.dry_run:
            doc["dry_run"] = dry_run(chain, asset, result.choice.metrics)
    if args.json:
        print(json.dumps(doc, allow_nan=False))
    else:
        print(table(result, measured))
        if plot is not None:
            print(f"plot: {plot}")
        if "applied" in doc:
            print(describe(doc["applied"]))
        if "dry_run" in doc:
            print(describe(doc["dry_run"]))
    return 0


def _plan_doc(plan: Plan) -> dict[str, Any]:
    return {k: v / WAD if isinstance(v, int) and not isinstance(v, bool) else v for k, v in asdict(plan).items()}


def apply(chain: Chain, symbol: str, choice: stress.Metrics) -> dict[str, Any]:
    """`keeper optimize --apply`: one bounded step toward `choice`, sent and waited for."""
    a = asset_info(chain.dep, symbol)
    signer = load_signer(chain.settings, chain.dep.chain_id)
    engine = contract(chain.w3, chain.dep, "MarginEngine")
    require_role(engine, signer.address, chain.dep.engine)
    head = chain.w3.eth.get_block("latest")
    on = read_onchain(engine, a.token, int(head["number"]))
    plan = plan_update(choice.ltv, choice.lt, on, int(head["timestamp"]))
    base = {"asset": a.symbol, "before": {"ltv": on.ltv / WAD, "lt": on.lt / WAD}}
    if isinstance(plan, str):
        return {**base, "sent": False, "reason": plan}
    keeper = build_keeper(chain.settings, chain.dep, chain.w3, signer, log=logging.getLogger("keeper.optimize"))
    try:
        sub = submit(keeper.txm, engine, a.token, plan, on)
        if sub is None:
            return {**base, "sent": False, "reason": "not sent: simulation reverts or the same update is in flight"}
        status = wait_for(chain.w3, keeper.txm, sub)
    finally:
        keeper.close()
    after = read_onchain(engine, a.token)
    return {
        **base,
        "sent": True,
        "status": status,
        "tx": sub.tx_hash,
        "ltv": plan.ltv / WAD,
        "lt_target": plan.lt / WAD,
        "ramps": plan.ramps,
        "ramp_end": after.ramp_end if plan.ramps else 0,
        "after": {"ltv": after.ltv / WAD, "lt": after.lt / WAD},
        "plan": _plan_doc(plan),
    }


def dry_run(chain: Chain, symbol: str, choice: stress.Metrics) -> dict[str, Any]:
    """`keeper optimize --dry-run`: the transaction `--apply` would send now (from, to, function, arguments,
    calldata) and what `eth_call` and gas estimation from the keeper's key say of it. Nothing is signed, sent or
    journalled, and the state file is not opened."""
    a = asset_info(chain.dep, symbol)
    signer = load_signer(chain.settings, chain.dep.chain_id)
    engine = contract(chain.w3, chain.dep, "MarginEngine")
    head = chain.w3.eth.get_block("latest")
    on = read_onchain(engine, a.token, int(head["number"]))
    plan = plan_update(choice.ltv, choice.lt, on, int(head["timestamp"]))
    base = {"asset": a.symbol, "dry_run": True, "sent": False, "before": {"ltv": on.ltv / WAD, "lt": on.lt / WAD}}
    if isinstance(plan, str):
        return {**base, "reason": plan}
    token = Web3.to_checksum_address(a.token)
    tx = {"from": signer.address, "to": engine.address, "data": update_calldata(engine, token, plan)}
    return {
        **base,
        "role": has_role(engine, signer.address),
        "tx": {**tx, "function": UPDATE_FUNCTION, "args": {"asset": token, "ltv": plan.ltv, "lt": plan.lt}},
        "simulation": simulate(chain.w3, chain.dep.abis["MarginEngine"], tx),
        "ltv": plan.ltv / WAD,
        "lt_target": plan.lt / WAD,
        "ramps": plan.ramps,
        "plan": _plan_doc(plan),
    }


def wait_for(w3: Web3, txm: TxManager, sub: Submission) -> str:
    """Wait for the receipt of a sent update ("mined", "reverted", "pending" after APPLY_TIMEOUT_S, or why the node
    refused it), not for confirmations: the journal keeps the intent, and `keeper run` (or the next --apply)
    follows it to confirmation and replaces it if it gets stuck."""
    deadline = time.monotonic() + APPLY_TIMEOUT_S
    status = "pending"
    while sub.status == "pending" and time.monotonic() < deadline:
        txm.poll(w3.eth.block_number)
        receipt = _receipt(w3, sub.tx_hash)
        if receipt is not None:
            status = "mined" if int(receipt["status"]) == 1 else "reverted"
            break
        time.sleep(1.0)
    if sub.status == "failed":
        status = f"refused by the node: {sub.error}"
    return status


def _receipt(w3: Web3, tx_hash: str) -> TxReceipt | None:
    try:
        return w3.eth.get_transaction_receipt(tx_hash)  # type: ignore[arg-type]
    except TransactionNotFound:
        return None
