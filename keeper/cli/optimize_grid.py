"""`keeper optimize --grid`: the market's scenario grid from the feeds' joint history (keeper/optimizer/gridfit.py),
printed as a table or JSON; `--apply` sends the risk keeper's bounded `updateGrid`, `--dry-run` shows it (or, when
only governance can act, the `setGrid` it would send) and sends nothing."""

from __future__ import annotations

import argparse
import json
import logging
import math
from typing import Any

from web3 import Web3

from keeper.chain.deployment import contract
from keeper.chain.signer import load_signer
from keeper.chain.txmanager import TxRequest
from keeper.core.errors import KeeperError
from keeper.engine.compose import build_keeper
from keeper.optimizer import gridfit
from keeper.optimizer import inputs as opt
from keeper.optimizer.correlation import CommonJump
from keeper.optimizer.update import has_role, require_role, simulate

DEFAULT_INITIAL_SCALE = 0.9


def run(args: argparse.Namespace, chain: Any, inputs: opt.OptimizerInputs) -> int:
    w3, dep = chain.w3, chain.dep
    if args.apply:
        _require_role(chain)  # before the slow part: an operator without the role learns it at once
    head = w3.eth.get_block("latest")
    block, now = int(head["number"]), int(head["timestamp"])
    assets = gridfit.market_assets(w3, dep, block)
    intensity = inputs.jump_intensity if inputs.jump_intensity is not None else opt.JUMP_INTENSITY
    common = None
    if intensity > 0:
        mean = inputs.jump_mean if inputs.jump_mean is not None else opt.JUMP_MEAN
        vol = inputs.jump_vol if inputs.jump_vol is not None else opt.JUMP_VOL
        common = CommonJump(intensity, mean, vol)
    joint = gridfit.measure_joint(
        w3, assets, inputs.window_s, inputs.max_rounds, args.joint_step_s, inputs.min_rounds, inputs.min_sigma,
        inputs.min_history_days, common, block, now,
    )  # fmt: skip
    engine = contract(w3, dep, "MarginEngine")
    lt = {a.symbol: int(engine.functions.assetConfig(a.token).call(block_identifier=block)[4]) / 1e18
          for a in assets if not a.debt}  # fmt: skip
    horizon = inputs.horizon_s if inputs.horizon_s is not None else opt.HORIZON_S
    choice = gridfit.calibrate(joint, lt, horizon, inputs.paths, inputs.seed, inputs.target_prob)
    on = gridfit.read_grid(w3, dep.engine, assets, block)
    doc = _doc(joint, choice, on)
    if args.apply:
        doc["applied"] = _apply(chain, assets, choice, on, now)
    if args.dry_run:
        doc["dry_run"] = _dry_run(chain, assets, choice, on, now, args.initial_scale)
    if args.json:
        print(json.dumps(doc, allow_nan=False))
    else:
        print(_table(joint, choice, on))
        for key in ("applied", "dry_run"):
            if key in doc:
                print(_describe(doc[key]))
    return 0


def _doc(joint: gridfit.JointInputs, choice: gridfit.GridChoice, on: gridfit.OnchainGrid) -> dict[str, Any]:
    est = joint.estimate
    return {
        "assets": [a.symbol for a in joint.assets],
        "held_at_one": list(joint.held),
        "rounds": dict(joint.rounds),
        "vols": {a: float(math.sqrt(joint.market.covariance[i, i])) for i, a in enumerate(est.assets)},
        "ewma_vols": {a: float(v) for a, v in zip(est.assets, est.vols, strict=True)},
        "sample_vols": {a: float(math.sqrt(est.sample[i, i])) for i, a in enumerate(est.assets)},
        "correlation": [[float(x) for x in row] for row in est.correlation],
        "sample_correlation": [
            [float(est.sample[i, k] / math.sqrt(est.sample[i, i] * est.sample[k, k])) for k in range(len(est.assets))]
            for i in range(len(est.assets))
        ],
        "horizon_s": choice.horizon_s,
        "paths": choice.paths,
        "target_prob": choice.target,
        "scale": choice.scale,
        "binding_book": choice.binding_book,
        "scenarios": len(choice.scenarios),
        "columns": choice.columns,
        "books": [vars(b) for b in choice.books],
        "onchain": {"count": on.count, "initial_scale": on.initial_scale / 1e18, "columns": on.effective},
    }


def _table(joint: gridfit.JointInputs, choice: gridfit.GridChoice, on: gridfit.OnchainGrid) -> str:
    lines = [
        f"scenario grid for {', '.join(a.symbol for a in joint.assets)}: {len(choice.scenarios)} scenarios over "
        f"{choice.horizon_s:g} s, P(insolvent) <= {choice.target:g} on {choice.paths:,} paths; template scale "
        f"{choice.scale:.3f}, set by the book {choice.binding_book}",
        *gridfit.covariance_table(joint),
    ]
    if joint.held:
        lines.append(f"held at 1 in every scenario (flat feed, the debt asset): {', '.join(joint.held)}")
    lines.append("scenario  " + "  ".join(f"{s:>9}" for s in choice.columns))
    for i in range(len(choice.scenarios)):
        lines.append(f"s{i:<8} " + "  ".join(f"{choice.columns[s][i] / 1e6:9.4f}" for s in choice.columns))
    lines.append(f"{'book':<22}{'grid health':>12}{'additive':>10}{'P(insolv.)':>12}{'collateral vs additive':>24}")
    for b in choice.books:
        lines.append(
            f"{b.name:<22}{b.grid_health:12.4f}{b.additive_health:10.4f}{b.p_insolvent:12.4%}"
            f"{b.collateral_vs_additive:+24.1%}"
        )
    lines.append(
        "on chain: additive rule"
        if on.count == 0
        else f"on chain: a grid of {on.count} scenarios, initial scale {on.initial_scale / 1e18:.3f}"
    )
    return "\n".join(lines)


def _describe(d: dict[str, Any]) -> str:
    if not d.get("tx"):
        prefix = "dry run: --apply would send nothing now" if d.get("dry_run") else "not applied"
        text = f"{prefix}: {d['reason']}"
        if "set_grid" in d:
            g = d["set_grid"]
            text += (
                f"\n  governance's call (the admin sends it): {g['function']} to {g['to']}, {g['scenarios']} "
                f"scenarios, initial scale {g['initial_scale'] / 1e18:.3f}\n  calldata {g['data']}"
            )
        return text
    if d.get("dry_run"):
        sim = d["simulation"]
        outcome = f"succeeds, gas {sim['gas']:,}" if sim["ok"] else f"reverts: {sim['error']}"
        role = "" if d["role"] else f"\n  the key {d['tx']['from']} lacks RISK_KEEPER_ROLE: --apply would refuse"
        return (
            f"dry run, nothing sent: updateGrid moving multipliers by up to {d['largest_move'] / 1e6:.4f} "
            f"({d['clamped']} held back by bounds or steps)\n  to {d['tx']['to']} (MarginEngine), from "
            f"{d['tx']['from']}\n  calldata {d['tx']['data']}\n  simulation: {outcome}{role}"
        )
    return (
        f"applied ({d['status']}, tx {d['tx']}): updateGrid moved multipliers by up to {d['largest_move'] / 1e6:.4f}; "
        "the engine ramps them in"
    )


def _apply(
    chain: Any, assets: tuple[gridfit.Asset, ...], choice: gridfit.GridChoice, on: gridfit.OnchainGrid, now: int
) -> dict[str, Any]:
    from keeper.cli.optimize import wait_for

    signer = _require_role(chain)
    step = gridfit.plan_step(choice, on, now)
    if isinstance(step, str):
        return {"sent": False, "reason": step}
    keeper = build_keeper(chain.settings, chain.dep, chain.w3, signer, log=logging.getLogger("keeper.optimize"))
    try:
        tx: TxRequest = {"to": chain.dep.engine, "data": gridfit.update_calldata(assets, step)}
        sub = keeper.txm.submit(f"grid:{chain.dep.engine}:{on.last_update}", tx)
        if sub is None:
            return {"sent": False, "reason": "not sent: simulation reverts or the same update is in flight"}
        status = wait_for(chain.w3, keeper.txm, sub)
    finally:
        keeper.close()
    return {"sent": True, "status": status, "tx": sub.tx_hash, "largest_move": step.largest_move,
            "clamped": step.clamped, "columns": step.columns}  # fmt: skip


def _require_role(chain: Any) -> Any:
    signer = load_signer(chain.settings, chain.dep.chain_id)
    require_role(contract(chain.w3, chain.dep, "MarginEngine"), signer.address, chain.dep.engine)
    return signer


def _dry_run(
    chain: Any,
    assets: tuple[gridfit.Asset, ...],
    choice: gridfit.GridChoice,
    on: gridfit.OnchainGrid,
    now: int,
    initial_scale: float | None,
) -> dict[str, Any]:
    signer = load_signer(chain.settings, chain.dep.chain_id)
    engine = contract(chain.w3, chain.dep, "MarginEngine")
    step = gridfit.plan_step(choice, on, now)
    base: dict[str, Any] = {"dry_run": True, "sent": False}
    if isinstance(step, str):
        out = {**base, "reason": step}
        if on.count != len(choice.scenarios):
            scale = (
                int(initial_scale * 1e18)
                if initial_scale is not None
                else (on.initial_scale or int(DEFAULT_INITIAL_SCALE * 1e18))
            )
            if not 0 < scale <= 10**18:
                raise KeeperError(f"--initial-scale {initial_scale}: must be in (0, 1]")
            out["set_grid"] = {
                "function": gridfit.SET_GRID,
                "to": chain.dep.engine,
                "scenarios": len(choice.scenarios),
                "initial_scale": scale,
                "data": gridfit.set_grid_calldata(
                    [a.token for a in assets], [choice.columns[a.symbol] for a in assets], scale
                ),
            }
        return out
    tx = {"from": signer.address, "to": Web3.to_checksum_address(chain.dep.engine),
          "data": gridfit.update_calldata(assets, step)}  # fmt: skip
    return {
        **base,
        "role": has_role(engine, signer.address),
        "tx": {**tx, "function": gridfit.UPDATE_GRID},
        "simulation": simulate(chain.w3, chain.dep.abis["MarginEngine"], tx),
        "largest_move": step.largest_move,
        "clamped": step.clamped,
        "columns": step.columns,
    }
