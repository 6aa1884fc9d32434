"""The live-chain side of the optimizer: read an asset's risk parameters and measure its inputs, plan one bounded
update toward the optimizer's choice, and hand it to a transaction submitter. Used by `keeper optimize --asset`
(keeper/cli/optimize.py) and by `keeper run`'s job (keeper/optimizer/job.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from eth_abi.abi import decode
from eth_utils.abi import function_signature_to_4byte_selector
from web3 import Web3
from web3.contract import Contract
from web3.exceptions import ContractLogicError
from web3.types import BlockIdentifier

from keeper.chain.deployment import AssetInfo, Deployment, contract
from keeper.chain.txmanager import Submission, TxRequest
from keeper.core.errors import KeeperError
from keeper.optimizer import volatility
from keeper.optimizer.model import WAD, HistoryNeed, Measured

# Updates smaller than this (WAD, 0.25 %) are not worth a transaction or a ramp.
DEAD_BAND = 25 * 10**14


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


def require_role(engine: Contract, address: str, engine_address: str) -> None:
    """KeeperError, saying how to get it, unless `address` holds RISK_KEEPER_ROLE: `--apply` checks before it
    plans anything."""
    if not has_role(engine, address):
        raise KeeperError(
            f"{address} does not hold RISK_KEEPER_ROLE on the engine {engine_address}: governance grants it "
            "(deploy config [roles] risk_keeper)"
        )


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


class Submitter(Protocol):
    """What the optimizer needs of the keeper's transaction manager (keeper.chain.txmanager.TxManager): journalled,
    simulated sending under an intent key; None when nothing was sent."""

    def submit(self, intent_key: str, tx: TxRequest) -> Submission | None: ...


UPDATE_FUNCTION = "updateRiskParams(address,uint64,uint64)"


def update_calldata(engine: Contract, token: str, plan: Plan) -> str:
    """The calldata of `updateRiskParams(token, plan.ltv, plan.lt)`."""
    data = engine.functions.updateRiskParams(
        Web3.to_checksum_address(token), plan.ltv, plan.lt
    )._encode_transaction_data()
    return str(data)


def submit(txm: Submitter, engine: Contract, token: str, plan: Plan, on: Onchain) -> Submission | None:
    """Send `updateRiskParams` through the transaction manager: simulated first (nothing is sent if it would
    revert), journalled under one intent per asset and update window, so a restart never sends it twice."""
    key = f"risk:{Web3.to_checksum_address(token)}:{on.last_update}"
    return txm.submit(key, {"to": engine.address, "data": update_calldata(engine, token, plan)})


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
