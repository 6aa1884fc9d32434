"""The `keeper run` process: reconcile the journal with the chain, then schedule the jobs until SIGTERM or SIGINT.

APScheduler runs the block job (every `poll_interval_s`, `max_instances=1`, coalescing) and housekeeping on one worker
thread, so they never overlap and share the web3 connection and the state file safely. Extra jobs (the optimizer's
risk job) get their own thread: a Monte Carlo run takes seconds and must not hold up the block job.
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from types import FrameType

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.blocking import BlockingScheduler

from keeper.engine.keeper import Keeper


@dataclass(frozen=True)
class Job:
    """A job run beside the block job, on its own thread, every `interval_s` (first run at start)."""

    name: str
    run: Callable[[], None]
    interval_s: float


def run(keeper: Keeper, jobs: Sequence[Job] = ()) -> None:
    """Run until SIGTERM or SIGINT: reconcile the journal with the chain, then the jobs; close the state at the end."""
    log = keeper.log
    settings = keeper.settings
    for outcome in keeper.txm.reconcile():
        log.info("after restart: intent %s %s at nonce %d", outcome.intent_key, outcome.status, outcome.nonce)
    keeper.ensure_allowance()
    executors = {"default": ThreadPoolExecutor(1)} | {job.name: ThreadPoolExecutor(1) for job in jobs}
    scheduler = BlockingScheduler(executors=executors)
    scheduler.add_job(
        keeper.tick, "interval", seconds=settings.poll_interval_s, max_instances=1, coalesce=True, id="block"
    )
    scheduler.add_job(keeper.housekeeping, "interval", seconds=15, max_instances=1, coalesce=True, id="housekeeping")
    for job in jobs:
        scheduler.add_job(
            job.run,
            "interval",
            seconds=job.interval_s,
            max_instances=1,
            coalesce=True,
            id=job.name,
            executor=job.name,
            next_run_time=datetime.now(UTC),
        )

    def _stop(signum: int, _frame: FrameType | None) -> None:
        log.info("signal %d: stopping after the current job", signum)
        scheduler.shutdown(wait=False)

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    keeper.housekeeping()
    head = keeper.w3.eth.block_number
    log.info("keeper %s running on chain %d from block %d", keeper.signer.address, keeper.dep.chain_id, head)
    try:
        scheduler.start()
    finally:
        keeper.close()
        log.info("keeper stopped")
