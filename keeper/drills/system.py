"""The deployment as the drill drives it: web3 contracts, symbols, decimals and risk parameters, read once."""

from __future__ import annotations

from dataclasses import dataclass

from web3 import Web3
from web3.contract import Contract

from keeper.chain.deployment import Deployment, contract
from keeper.core.units import WAD


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
    further: dict[str, Contract] | None = None  # symbol -> the Vault of each further debt asset (`listDebt`)

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
        further: dict[str, Contract] = {}
        if any(f.get("name") == "debtAssets" for f in engine.abi):
            symbol_of = {t: s for s, t in tokens.items()}
            for token in engine.functions.debtAssets().call()[1:]:
                vault = engine.functions.debtConfig(token).call()[0]
                further[symbol_of[Web3.to_checksum_address(token)]] = contract(w3, dep, "Vault", vault)
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
            further=further,
        )

    def contract(self, name: str, address: str) -> Contract:
        return contract(self.w3, self.dep, name, address)


def calldata(target: Contract, fn: str, *args: object) -> str:
    """The call data of `fn(*args)` on `target`, hex."""
    return str(target.encode_abi(fn, list(args)))
