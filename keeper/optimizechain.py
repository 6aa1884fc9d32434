"""The live-chain side of `keeper optimize`: measure an asset's inputs, and apply a bounded update."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from web3 import Web3

from keeper import volatility
from keeper.config import Settings, load_settings
from keeper.deployment import AssetInfo, Deployment, check_chain, connect, contract, load_deployment
from keeper.errors import KeeperError
from keeper.optimizecli import WAD, Measured


@dataclass(frozen=True)
class Chain:
    settings: Settings
    dep: Deployment
    w3: Web3


def open_chain(config: Path | None) -> Chain:
    settings = load_settings(config)
    dep = load_deployment(settings.deployment, settings.chain_id)
    w3 = connect(settings.rpc_url, settings.rpc_timeout_s)
    check_chain(w3, settings, dep)
    return Chain(settings, dep, w3)


def asset_info(chain: Chain, symbol: str) -> AssetInfo:
    for a in chain.dep.assets:
        if a.symbol.upper() == symbol.upper():
            return a
    listed = ", ".join(a.symbol for a in chain.dep.assets)
    raise KeeperError(f"asset {symbol!r} is not a collateral of deployment {chain.dep.source}; it lists {listed}")


def measure(chain: Chain, symbol: str, window_s: float, max_rounds: int) -> Measured:
    """Volatility and jumps from the feed's round history; discounts, lt and ltv from the engine; the heartbeat from
    the router's staleness limit; the lt ceiling from the on-chain bounds when governance has set them."""
    a = asset_info(chain, symbol)
    engine = contract(chain.w3, chain.dep, "MarginEngine")
    router = contract(chain.w3, chain.dep, "OracleRouter")
    feed = contract(chain.w3, chain.dep, "MockAggregator", a.feed)  # only the AggregatorV3Interface part is used
    head = chain.w3.eth.get_block("latest")
    since = int(head["timestamp"]) - int(window_s)
    try:
        rounds = volatility.read_rounds(feed, max_rounds, since=since, block=int(head["number"]))
        est = volatility.estimate(rounds)
    except volatility.VolatilityError as exc:
        raise KeeperError(
            f"{a.symbol}'s feed {a.feed} has too little history in the last {window_s / 86400:g} days ({exc}); "
            "widen --window-s or give --sigma"
        ) from exc
    cfg = engine.functions.assetConfig(a.token).call()
    params = engine.functions.riskParams().call()
    staleness = router.functions.feedConfig(a.token).call()[1]
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
        max_discount=int(cfg[5]) / WAD,
        lt=int(cfg[4]) / WAD,
        ltv=int(cfg[3]) / WAD,
        lt_max=None,
    )
