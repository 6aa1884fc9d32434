"""The live-chain side of the optimizer: measure an asset's inputs, plan one bounded update toward the optimizer's
choice, and send it through the keeper's transaction manager (`keeper optimize --apply` and `keeper run`)."""

from __future__ import annotations

import argparse
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from eth_abi.abi import decode
from eth_utils.abi import function_signature_to_4byte_selector
from web3 import Web3
from web3.contract import Contract
from web3.exceptions import ContractLogicError, TransactionNotFound
from web3.types import BlockIdentifier

from keeper.chain.deployment import AssetInfo, Deployment, contract
from keeper.core.errors import KeeperError
from keeper.engine.settings import Settings
from keeper.optimizer import stress, volatility
from keeper.optimizer.model import WAD, HistoryNeed, Measured

# Updates smaller than this (WAD, 0.25 %) are not worth a transaction or a ramp.
DEAD_BAND = 25 * 10**14
APPLY_TIMEOUT_S = 180.0


@dataclass(frozen=True)
class Chain:
    settings: Settings
    dep: Deployment
    w3: Web3


def open_chain(config: Path | None) -> Chain:
    """Settings, deployment and node, checked as `keeper run` checks them (`cli._startup`)."""
    from keeper.cli.startup import startup as _startup

    return Chain(*_startup(config))


def asset_info(dep: Deployment, symbol: str) -> AssetInfo:
    for a in dep.assets:
        if a.symbol.upper() == symbol.upper():
            return a
    listed = ", ".join(a.symbol for a in dep.assets)
    raise KeeperError(f"asset {symbol!r} is not a collateral of deployment {dep.source}; it lists {listed}")


# ---------------------------------------------------------------------------------------------- on-chain state


@dataclass(frozen=True)
class Onchain:
    """An asset's risk parameters as the engine holds them now (WAD integers, unix seconds)."""

    ltv: int
    lt: int  # effective now
    max_discount: int
    ltv_min: int
    ltv_max: int
    lt_min: int
    lt_max: int
    max_step: int  # 0: keeper updates disabled
    min_interval: int
    ramp_duration: int
    last_update: int
    ramp_end: int

    @property
    def next_allowed(self) -> int:
        return self.last_update + self.min_interval if self.last_update else 0


def read_onchain(engine: Contract, token: str, block: BlockIdentifier = "latest") -> Onchain:
    cfg = engine.functions.assetConfig(token).call(block_identifier=block)
    b = engine.functions.riskBounds(token).call(block_identifier=block)
    ramp = engine.functions.ltRamp(token).call(block_identifier=block)
    return Onchain(
        ltv=int(cfg[3]),
        lt=int(cfg[4]),
        max_discount=int(cfg[5]),
        ltv_min=int(b[0]),
        ltv_max=int(b[1]),
        lt_min=int(b[2]),
        lt_max=int(b[3]),
        max_step=int(b[4]),
        min_interval=int(b[5]),
        ramp_duration=int(b[6]),
        last_update=int(ramp[4]),
        ramp_end=int(cfg[6]),
    )


def has_role(engine: Contract, address: str) -> bool:
    role = engine.functions.RISK_KEEPER_ROLE().call()
    return bool(engine.functions.hasRole(role, Web3.to_checksum_address(address)).call())


# ---------------------------------------------------------------------------------------------- planning


@dataclass(frozen=True)
class Plan:
    ltv: int  # WAD, what updateRiskParams will be called with
    lt: int
    target_ltv: int  # the optimizer's choice, clamped into the bounds
    target_lt: int
    ramps: bool  # lt goes down: the engine ramps it over rampDuration


def _toward(current: int, target: int, step: int) -> int:
    return current + max(-step, min(step, target - current))


def _lt_cap(max_discount: int) -> int:
    """Largest lt with lt·(1 + maxDiscount) < 1 in the engine's rounding (wMulUp)."""
    lt = WAD * WAD // (WAD + max_discount)
    while -(-lt * (WAD + max_discount) // WAD) >= WAD:
        lt -= 1
    return lt


def _wad(x: float) -> int:
    """A ratio to WAD at a resolution of 1e-6: the optimizer is not more precise than that, and round values read
    better on-chain and in events."""
    return round(x * 1_000_000) * 10**12


def plan_update(ltv: float, lt: float, on: Onchain, now: int, dead_band: int = DEAD_BAND) -> Plan | str:
    """One update toward (ltv, lt) that the engine will accept, or why none is due. Pure: the same rules as
    `updateRiskParams` (bounds, max step from the current ltv and the effective lt, min interval, ltv < lt,
    lt·(1 + maxDiscount) < 1)."""
    if on.max_step == 0:
        return "governance has not set bounds for keeper updates of this asset"
    if now < on.next_allowed:
        return f"too soon: the next update is allowed at {on.next_allowed} (in {on.next_allowed - now} s)"
    cap = min(on.lt_max, _lt_cap(on.max_discount))
    target_lt = max(on.lt_min, min(cap, _wad(lt)))
    target_ltv = max(on.ltv_min, min(on.ltv_max, _wad(ltv)))
    new_lt = _toward(on.lt, target_lt, on.max_step)
    new_ltv = _toward(on.ltv, target_ltv, on.max_step)
    new_ltv = min(new_ltv, new_lt - 1)  # ltv < lt, even when the optimizer's buffer is smaller than a step
    if new_ltv < on.ltv_min or abs(new_ltv - on.ltv) > on.max_step:
        return "no update satisfies ltv < lt within the bounds and the step limit"
    if abs(new_lt - on.lt) < dead_band and abs(new_ltv - on.ltv) < dead_band:
        return f"already within {dead_band / WAD:.2%} of the choice"
    return Plan(ltv=new_ltv, lt=new_lt, target_ltv=target_ltv, target_lt=target_lt, ramps=new_lt < on.lt)


# ---------------------------------------------------------------------------------------------- measuring


def _history_text(history: volatility.History) -> str:
    phases = ", ".join(str(p) for p in history.phases)
    where = f"phases {phases}" if len(history.phases) > 1 else f"phase {phases}"
    return f"read back to {history.end}, {where}"


def _estimate(
    symbol: str, history: volatility.History, now: int, window_s: float, need: HistoryNeed, need_history: bool
) -> volatility.Estimate:
    """The estimate from `history`, refused (VolatilityError) when it holds fewer than `need.rounds` rounds, reaches
    back less than `need.days` from `now`, or gives a σ below `need.sigma`. With `need_history` off (σ was given),
    a history short of rounds or days gives zeros instead."""
    found, reach_s = volatility.coverage(history.rounds, now)
    if found < need.rounds or reach_s < need.days * volatility.DAY_S:
        if not need_history:
            return volatility.Estimate(found, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
        days = f"{need.days:g} day{'' if need.days == 1 else 's'}"
        too_short = window_s < need.days * volatility.DAY_S
        short_window = f" (the window itself is shorter than {days})" if too_short else ""
        raise volatility.VolatilityError(
            f"{symbol}'s feed {history.feed} has {found} rounds reaching back {reach_s / volatility.DAY_S:.2f} days "
            f"in the last {window_s / volatility.DAY_S:g} days{short_window} ({_history_text(history)}); at least "
            f"{need.rounds} rounds reaching back {days} are needed: {need.advice}"
        )
    est = volatility.estimate(history.rounds)
    measured = max(est.sigma, est.ewma)
    if need_history and measured < need.sigma:
        raise volatility.FlatFeedError(
            f"{symbol}'s feed {history.feed} gives σ {measured:.4f} from {found} rounds over "
            f"{est.span_s / volatility.DAY_S:.2f} days, below the minimum {need.sigma:g}: its answers (almost) never "
            f"move, as a frozen or hard-coded feed's do; no ratio is chosen from it: {need.advice}"
        )
    return est


def measure(
    w3: Web3,
    dep: Deployment,
    symbol: str,
    window_s: float,
    max_rounds: int,
    need: HistoryNeed,
    need_history: bool = True,
) -> Measured:
    """Volatility and jumps from the round history of the feed the router prices the asset with (across its proxy
    phases); discounts, lt and ltv from the engine; the heartbeat from the router's staleness limit; the lt ceiling
    from governance's bounds when set. A history thinner than `need` is refused (VolatilityError), as is a feed that
    cannot be read (FeedError); with `need_history` off (the volatility was given), a thin history gives zeros."""
    a = asset_info(dep, symbol)
    engine = contract(w3, dep, "MarginEngine")
    router = contract(w3, dep, "OracleRouter")
    head = w3.eth.get_block("latest")
    block = int(head["number"])
    feed_config = router.functions.feedConfig(a.token).call(block_identifier=block)
    feed, staleness = str(feed_config[0]), int(feed_config[1])
    if int(feed, 16) == 0:
        raise KeeperError(f"{a.symbol} has no feed on the router {router.address}; governance sets it (setFeed)")
    since = int(head["timestamp"]) - int(window_s)
    try:
        history = volatility.read_history(w3, feed, max_rounds, since=since, block=block)
    except volatility.FeedError as exc:
        raise volatility.FeedError(f"{a.symbol}: {exc}", exc.reason) from exc
    est = _estimate(a.symbol, history, int(head["timestamp"]), window_s, need, need_history)
    on = read_onchain(engine, a.token, block)
    params = engine.functions.riskParams().call(block_identifier=block)
    return Measured(
        symbol=a.symbol,
        rounds=est.rounds,
        span_s=est.span_s,
        realized=est.realized,
        ewma=est.ewma,
        sigma=est.sigma,
        jump_intensity=est.jump_intensity,
        jump_mean=est.jump_mean,
        jump_vol=est.jump_vol,
        heartbeat_s=float(staleness),
        min_discount=int(params[0]) / WAD,
        max_discount=on.max_discount / WAD,
        lt=on.lt / WAD,
        ltv=on.ltv / WAD,
        lt_max=on.lt_max / WAD if on.max_step else None,
        feed=history.feed,
        phases=tuple(history.phases),
    )


# ---------------------------------------------------------------------------------------------- sending


def submit(txm: Any, engine: Contract, token: str, plan: Plan, on: Onchain) -> Any:
    """Send `updateRiskParams` through the transaction manager: simulated first (nothing is sent if it would
    revert), journalled under one intent per asset and update window, so a restart never sends it twice."""
    data = engine.functions.updateRiskParams(
        Web3.to_checksum_address(token), plan.ltv, plan.lt
    )._encode_transaction_data()
    key = f"risk:{Web3.to_checksum_address(token)}:{on.last_update}"
    return txm.submit(key, {"to": engine.address, "data": data})


def apply(chain: Chain, symbol: str, choice: stress.Metrics) -> dict[str, Any]:
    """`keeper optimize --apply`: one bounded step toward `choice`, sent and waited for."""
    from keeper.chain.signer import load_signer
    from keeper.engine.compose import build_keeper

    a = asset_info(chain.dep, symbol)
    signer = load_signer(chain.settings, chain.dep.chain_id)
    engine = contract(chain.w3, chain.dep, "MarginEngine")
    if not has_role(engine, signer.address):
        raise KeeperError(
            f"{signer.address} does not hold RISK_KEEPER_ROLE on the engine {chain.dep.engine}: governance grants "
            "it (deploy config [roles] risk_keeper)"
        )
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
        # Wait for the receipt, not for confirmations: the journal keeps the intent, and `keeper run` (or the next
        # --apply) follows it to confirmation and replaces it if it gets stuck.
        deadline = time.monotonic() + APPLY_TIMEOUT_S
        status = "pending"
        while sub.status == "pending" and time.monotonic() < deadline:
            keeper.txm.poll(chain.w3.eth.block_number)
            receipt = _receipt(chain.w3, sub.tx_hash)
            if receipt is not None:
                status = "mined" if int(receipt["status"]) == 1 else "reverted"
                break
            time.sleep(1.0)
        if sub.status == "failed":
            status = f"refused by the node: {sub.error}"
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
        "plan": {k: v / WAD if isinstance(v, int) and not isinstance(v, bool) else v for k, v in asdict(plan).items()},
    }


UPDATE_FUNCTION = "updateRiskParams(address,uint64,uint64)"


def dry_run(chain: Chain, symbol: str, choice: stress.Metrics) -> dict[str, Any]:
    """`keeper optimize --dry-run`: the transaction `--apply` would send now (from, to, function, arguments,
    calldata) and what `eth_call` and gas estimation from the keeper's key say of it. Nothing is signed, sent or
    journalled, and the state file is not opened."""
    from keeper.chain.signer import load_signer

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
    data = engine.functions.updateRiskParams(token, plan.ltv, plan.lt)._encode_transaction_data()
    tx = {"from": signer.address, "to": engine.address, "data": data}
    return {
        **base,
        "role": has_role(engine, signer.address),
        "tx": {**tx, "function": UPDATE_FUNCTION, "args": {"asset": token, "ltv": plan.ltv, "lt": plan.lt}},
        "simulation": simulate(chain.w3, chain.dep.abis["MarginEngine"], tx),
        "ltv": plan.ltv / WAD,
        "lt_target": plan.lt / WAD,
        "ramps": plan.ramps,
        "plan": {k: v / WAD if isinstance(v, int) and not isinstance(v, bool) else v for k, v in asdict(plan).items()},
    }


def simulate(w3: Web3, abi: list[dict[str, Any]], tx: dict[str, Any]) -> dict[str, Any]:
    """`eth_call` and `eth_estimateGas` of `tx` at the latest block: `{"ok": True, "gas": n}`, or `{"ok": False,
    "error": ...}` with a custom error decoded from `abi` (name and arguments)."""
    call: Any = tx
    try:
        w3.eth.call(call, "latest")
        gas = int(w3.eth.estimate_gas(call))
    except ContractLogicError as exc:
        return {"ok": False, "error": revert_text(abi, exc)}
    return {"ok": True, "gas": gas}


def revert_text(abi: list[dict[str, Any]], exc: ContractLogicError) -> str:
    """A revert as `ErrorName(arg, ...)` when its data matches a custom error of `abi`, else the node's message."""
    data = exc.data if isinstance(exc.data, str) else ""
    if data.startswith("0x") and len(data) >= 10:
        selector = bytes.fromhex(data[2:10])
        for item in abi:
            if item.get("type") != "error":
                continue
            types = [str(i["type"]) for i in item.get("inputs", [])]
            if function_signature_to_4byte_selector(f"{item['name']}({','.join(types)})") != selector:
                continue
            values = decode(types, bytes.fromhex(data[10:]))
            shown = ["0x" + v.hex() if isinstance(v, bytes) else str(v) for v in values]
            return f"{item['name']}({', '.join(shown)})"
    return str(exc.message or exc)


def _receipt(w3: Web3, tx_hash: str) -> Any:
    try:
        return w3.eth.get_transaction_receipt(tx_hash)  # type: ignore[arg-type]
    except TransactionNotFound:
        return None


def describe(applied: dict[str, Any]) -> str:
    if applied.get("dry_run"):
        return describe_dry_run(applied)
    if not applied["sent"]:
        return f"not applied: {applied['reason']}"
    ramp = f", lt ramps down until {applied['ramp_end']}" if applied["ramps"] else ", lt applies at once"
    return (
        f"applied ({applied['status']}, tx {applied['tx']}): ltv {applied['before']['ltv']:.4f} -> {applied['ltv']:.4f}"
        f", lt {applied['before']['lt']:.4f} -> {applied['lt_target']:.4f}{ramp}"
    )


def describe_dry_run(d: dict[str, Any]) -> str:
    if "tx" not in d:
        return f"dry run: --apply would send nothing now: {d['reason']}"
    tx, args, sim = d["tx"], d["tx"]["args"], d["simulation"]
    ramp = "lt ramps down over the ramp duration" if d["ramps"] else "lt applies at once"
    outcome = f"succeeds, gas {sim['gas']:,}" if sim["ok"] else f"reverts: {sim['error']}"
    role = "" if d["role"] else f"\n  the key {tx['from']} lacks RISK_KEEPER_ROLE: --apply would refuse"
    return (
        f"dry run, nothing sent: {d['asset']} ltv {d['before']['ltv']:.4f} -> {d['ltv']:.4f}, "
        f"lt {d['before']['lt']:.4f} -> {d['lt_target']:.4f} ({ramp})\n"
        f"  to {tx['to']} (MarginEngine), from {tx['from']}\n"
        f"  {tx['function']} asset={args['asset']} ltv={args['ltv']} lt={args['lt']}\n"
        f"  calldata {tx['data']}\n"
        f"  simulation: {outcome}{role}"
    )


# ---------------------------------------------------------------------------------------------- keeper run job


def _job_args(settings: Any, asset: str) -> argparse.Namespace:
    """The optimizer's inputs as `keeper optimize --asset ASSET` would take them: the command's own defaults, with
    the keeper's settings where it has one."""
    from keeper.optimizer.model import add_arguments

    parser = argparse.ArgumentParser(add_help=False)
    add_arguments(parser)
    args = parser.parse_args(["--asset", asset, "--paths", str(settings.optimize_paths)])
    args.oracle_deviation = settings.optimize_oracle_deviation
    args.delay_s = settings.optimize_delay_s
    args.target_prob = settings.optimize_target_prob
    args.shortfall_budget = settings.optimize_shortfall_budget
    args.liq_prob = settings.optimize_liq_prob
    return args


JOB_ADVICE = (
    "the job leaves this asset's ratios as they are; optimize_window_s, optimize_min_rounds, "
    "optimize_min_history_days and optimize_min_sigma set what it asks for"
)
JOB_MAX_ROUNDS = 5000


def job_need(settings: Any) -> HistoryNeed:
    return HistoryNeed(
        rounds=settings.optimize_min_rounds,
        days=settings.optimize_min_history_days,
        sigma=settings.optimize_min_sigma,
        advice=JOB_ADVICE,
    )


class RiskJob:
    """`keeper run`'s optimizer job: for every asset governance has bounded, when its update window is open,
    measure, optimize and send one bounded step. Never raises; a run per `optimize_interval_s`. Each asset is on its
    own: one that cannot be measured (a feed that reverts, too little history, a frozen answer) is logged with the
    reason and counted (`keeper_risk_optimizer_failures`), and the others go on."""

    def __init__(self, keeper: Any, log: logging.Logger) -> None:
        self.keeper = keeper
        self.log = log
        self._role_logged: bool | None = None

    def __call__(self) -> None:
        try:
            self.run_once()
        except Exception:
            self.log.exception("risk optimizer job failed; retrying at the next interval")

    def run_once(self) -> list[dict[str, Any]]:
        k = self.keeper
        holds = has_role(k.engine, k.signer.address)
        if holds != self._role_logged:
            state = ("on", "holds") if holds else ("off", "lacks")
            self.log.info("risk updates %s: the key %s RISK_KEEPER_ROLE", *state)
            self._role_logged = holds
        if not holds:
            return []
        done = []
        for a in k.dep.assets:
            try:
                entry = self._one(a)
            except KeeperError as exc:  # the asset's own problem, said in words: history, σ, feed, node
                reason = str(getattr(exc, "reason", "error"))
                self.log.warning("risk %s: not optimized (%s): %s", a.symbol, reason, exc)
                entry = {"asset": a.symbol, "sent": False, "failed": reason, "error": str(exc)}
            except Exception as exc:  # a bug or an unexpected node answer: logged in full, the next asset still runs
                self.log.exception("risk %s: not optimized (error)", a.symbol)
                entry = {"asset": a.symbol, "sent": False, "failed": "error", "error": repr(exc)}
            if entry is None:
                continue
            if "failed" in entry:
                k.metrics.risk_optimizer_failures.labels(asset=a.symbol, reason=entry["failed"]).inc()
            done.append(entry)
        return done

    def _one(self, a: AssetInfo) -> dict[str, Any] | None:
        """Measure, optimize and send one asset's step; None when its bounds are unset or its window is closed."""
        from keeper.optimizer.model import build, solve

        k = self.keeper
        engine = k.engine
        head = k.w3.eth.get_block("latest")
        on = read_onchain(engine, a.token, int(head["number"]))
        if on.max_step == 0 or int(head["timestamp"]) < on.next_allowed:
            return None
        measured = measure(k.w3, k.dep, a.symbol, k.settings.optimize_window_s, JOB_MAX_ROUNDS, job_need(k.settings))
        sim, targets = build(_job_args(k.settings, a.symbol), measured)
        result = solve(sim, targets, (measured.lt, measured.ltv))
        k.metrics.risk_optimizer_runs.inc()
        choice = result.choice.metrics
        plan = plan_update(choice.ltv, choice.lt, on, int(head["timestamp"]))
        history = {"rounds": measured.rounds, "days": measured.span_s / 86400, "phases": list(measured.phases)}
        entry: dict[str, Any] = {
            "asset": a.symbol,
            "choice": {"ltv": choice.ltv, "lt": choice.lt},
            "measured": {**history, "sigma": sim.market.sigma},
        }
        if isinstance(plan, str):
            self.log.info("risk %s: no update (%s)", a.symbol, plan)
            return {**entry, "sent": False, "reason": plan}
        sub = submit(k.txm, engine, a.token, plan, on)
        if sub is not None:
            k.metrics.risk_updates_sent.inc()
        self.log.info(
            "risk %s: ltv %.4f -> %.4f, lt %.4f -> %.4f%s (choice ltv %.4f lt %.4f, P(bad debt) %.3g; σ %.3f from %d "
            "rounds over %.1f days)",
            a.symbol,
            on.ltv / WAD,
            plan.ltv / WAD,
            on.lt / WAD,
            plan.lt / WAD,
            " ramping" if plan.ramps else "",
            choice.ltv,
            choice.lt,
            choice.p_bad_debt,
            sim.market.sigma,
            measured.rounds,
            measured.span_s / 86400,
        )
        return {**entry, "sent": sub is not None, "ltv": plan.ltv / WAD, "lt": plan.lt / WAD}
