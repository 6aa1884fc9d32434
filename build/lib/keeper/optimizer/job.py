"""`keeper run`'s optimizer job: for every asset governance has bounded, when its update window is open, measure,
optimize and send one bounded step. It is handed what it uses (the node, the deployment, a transaction submitter,
its counters, the signing address, its inputs and a logger); the engine composes it."""

from __future__ import annotations

import logging
from typing import Any, Protocol

from web3 import Web3

from keeper.chain.deployment import AssetInfo, Deployment, contract
from keeper.core.errors import KeeperError
from keeper.optimizer.inputs import OptimizerInputs
from keeper.optimizer.model import WAD, HistoryNeed, build, solve, unchecked_need
from keeper.optimizer.update import Submitter, has_role, measure, plan_update, read_onchain, submit

JOB_ADVICE = (
    "the job leaves this asset's ratios as they are; optimize_window_s, optimize_min_rounds, "
    "optimize_min_history_days and optimize_min_sigma set what it asks for"
)


class Increment(Protocol):
    def inc(self, amount: float = ...) -> None: ...


class LabelledIncrement(Protocol):
    def labels(self, *labelvalues: str, **labelkwargs: str) -> Increment: ...


class RiskMetrics(Protocol):
    """The counters the job moves (keeper.engine.metrics.Metrics has them)."""

    @property
    def risk_optimizer_runs(self) -> Increment: ...

    @property
    def risk_updates_sent(self) -> Increment: ...

    @property
    def risk_optimizer_failures(self) -> LabelledIncrement: ...


class RiskJob:
    """Never raises; the engine runs it once per `optimize_interval_s`. Each asset is on its own: one that cannot be
    measured (a feed that reverts, too little history, a frozen answer) is logged with the reason and counted
    (`keeper_risk_optimizer_failures`), and the others go on."""

    def __init__(
        self,
        w3: Web3,
        deployment: Deployment,
        txm: Submitter,
        metrics: RiskMetrics,
        signer_address: str,
        inputs: OptimizerInputs,
        log: logging.Logger,
    ) -> None:
        self.w3 = w3
        self.dep = deployment
        self.txm = txm
        self.metrics = metrics
        self.signer_address = signer_address
        self.inputs = inputs
        self.need: HistoryNeed = unchecked_need(inputs, JOB_ADVICE)
        self.log = log
        self.engine = contract(w3, deployment, "MarginEngine")
        self._role_logged: bool | None = None

    def __call__(self) -> None:
        try:
            self.run_once()
        except Exception:
            self.log.exception("risk optimizer job failed; retrying at the next interval")

    def run_once(self) -> list[dict[str, Any]]:
        holds = has_role(self.engine, self.signer_address)
        if holds != self._role_logged:
            state = ("on", "holds") if holds else ("off", "lacks")
            self.log.info("risk updates %s: the key %s RISK_KEEPER_ROLE", *state)
            self._role_logged = holds
        if not holds:
            return []
        done = []
        for a in self.dep.assets:
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
                self.metrics.risk_optimizer_failures.labels(asset=a.symbol, reason=entry["failed"]).inc()
            done.append(entry)
        return done

    def _one(self, a: AssetInfo) -> dict[str, Any] | None:
        """Measure, optimize and send one asset's step; None when its bounds are unset or its window is closed."""
        head = self.w3.eth.get_block("latest")
        on = read_onchain(self.engine, a.token, int(head["number"]))
        if on.max_step == 0 or int(head["timestamp"]) < on.next_allowed:
            return None
        inputs = self.inputs
        measured = measure(self.w3, self.dep, a.symbol, inputs.window_s, inputs.max_rounds, self.need)
        sim, targets = build(inputs, measured)
        result = solve(sim, targets, (measured.lt, measured.ltv))
        self.metrics.risk_optimizer_runs.inc()
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
        sub = submit(self.txm, self.engine, a.token, plan, on)
        if sub is not None:
            self.metrics.risk_updates_sent.inc()
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
