"""The replay: the drill mines every block itself, `block_time_s` of chain time apart. Before each block it sends the
price updates and fault changes due by then; after it, the observer reads the chain, the keeper takes its turn
(`Keeper.tick`, the same code `keeper run` schedules), and the observer reads what the keeper sent."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator

from keeper.chain.node import Rpc
from keeper.core.units import GWEI
from keeper.drills.driver import SEQUENCER_DOWN, SEQUENCER_UP, Driver
from keeper.drills.healths import liquidatable
from keeper.drills.observe import Observer
from keeper.drills.record import BlockRecord, DrillOptions, DrillRecord, Progress
from keeper.drills.relay import FlakyRelay
from keeper.drills.scenario import FEED_FAULTS, Fault, Step

SETTLE_MIN_BLOCKS = 30
SETTLE_MIN_S = 300


class DrillClock:
    """The keeper's clock during a drill: chain time, moved by the replay (backoff and staleness in chain seconds)."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Replay:
    """Block by block: faults and prices in, one block mined, the chain read, the keeper's turn, the pool read."""

    def __init__(
        self,
        opts: DrillOptions,
        driver: Driver,
        observer: Observer,
        tick: Callable[[], None],
        relay: FlakyRelay | None,
        clock: DrillClock,
    ) -> None:
        self.opts = opts
        self.clock = clock
        self.rpc: Rpc = driver.rpc
        self.driver = driver
        self.observer = observer
        self.tick = tick
        self.relay = relay
        self.rec: DrillRecord = observer.rec
        self.sc = opts.scenario
        self.bt = self.sc.block_time_s
        self.market = observer.market  # the scenario's prices now: steps move them, the observer values with them
        self.faulted: dict[str, str] = {}  # symbol -> fault kind
        self.active: list[Fault] = []
        self.settle_blocks = opts.settle_blocks or max(SETTLE_MIN_BLOCKS, math.ceil(SETTLE_MIN_S / self.bt))

    # ---- scheduling

    def _due(self, lo: int | None, hi: int) -> Iterator[tuple[int, Fault | Step]]:
        """Everything scheduled in (lo, hi] (or <= hi for the first block), in time order: fault ends (0) before
        fault starts (1) before steps (2) at the same second."""
        events: list[tuple[int, int, Fault | Step]] = []
        for f in self.sc.faults:
            events.append((f.end, 0, f))
            events.append((f.at, 1, f))
        events += [(s.at, 2, s) for s in self.sc.steps]
        for at, order, item in sorted(events, key=lambda e: (e[0], e[1])):
            if (lo is None or at > lo) and at <= hi:
                yield order, item

    def _before_block(self, prev_s: int | None, s: int, ts: int) -> None:
        refresh = prev_s is None
        for order, item in self._due(prev_s, s):
            if isinstance(item, Step):
                self.market.update(item.prices)
                refresh = True
            elif order == 0:
                self._end_fault(item, ts)
            else:
                self._start_fault(item, ts)
        self._refresh(ts, everything=refresh)
        for f in self.active:
            if f.kind == "base_fee":
                assert f.gwei is not None
                self.rpc.set_next_base_fee(int(f.gwei * GWEI))

    def _start_fault(self, f: Fault, ts: int) -> None:
        self.active.append(f)
        if f.kind in FEED_FAULTS:
            assert f.asset is not None
            self.faulted[f.asset] = f.kind
            if f.kind == "zero":
                self.driver.push(f.asset, 0, ts)
            elif f.kind == "negative":
                self.driver.push(f.asset, -self.driver.answer(f.asset, self.market[f.asset]), ts)
        elif f.kind == "sequencer_down":
            self.driver.sequencer(SEQUENCER_DOWN, ts)
        elif f.kind == "rpc_outage" and self.relay is not None:
            self.relay.down()

    def _end_fault(self, f: Fault, ts: int) -> None:
        if f not in self.active:
            return
        self.active.remove(f)
        if f.kind in FEED_FAULTS:
            assert f.asset is not None
            self.faulted.pop(f.asset, None)
            self.driver.push_usd(f.asset, self.market[f.asset], ts)
        elif f.kind == "sequencer_down":
            self.driver.sequencer(SEQUENCER_UP, ts)
        elif f.kind == "rpc_outage" and self.relay is not None:
            self.relay.up()

    def _refresh(self, ts: int, everything: bool) -> None:
        """Push the market price to every feed not under a fault: all of them (at a step), or those whose last
        update is half their max_staleness old (the heartbeat that keeps a price valid between steps)."""
        for symbol, price in self.market.items():
            if symbol in self.faulted:
                continue
            if everything or ts - self.driver.updated_at.get(symbol, 0) >= self.driver.sys.max_staleness[symbol] // 2:
                self.driver.push_usd(symbol, price, ts)

    # ---- the whole replay

    def run(self) -> None:
        head = self.rpc.block("latest")
        t0 = int(head["timestamp"], 16) + self.bt
        total = self.rec.replay_blocks + self.settle_blocks
        prev_s: int | None = None
        started = time.monotonic()
        for k in range(total):
            s = k * self.bt
            ts = t0 + s
            settling = k >= self.rec.replay_blocks
            if not settling:
                self._before_block(prev_s, s, ts)
            else:
                self._refresh(ts, everything=False)
            self.rpc.mine(ts)
            rec = self.observer.after_block(s)
            if k == 0:
                self.rec.start_block = rec.number
            self.clock.now = float(ts)
            tick_started = time.monotonic()
            self.tick()
            self.rec.tick_s.append(time.monotonic() - tick_started)
            self.observer.inspect_pool(rec.number)
            prev_s = s
            if self.opts.on_block is not None:
                self.opts.on_block(self._progress(k, total, s, settling, rec))
        self.rec.wall_s = time.monotonic() - started

    def _progress(self, k: int, total: int, s: int, settling: bool, rec: BlockRecord) -> Progress:
        return Progress(
            block=k + 1,
            blocks=total,
            scenario_s=s,
            liquidatable=sum(liquidatable(o, h, d) for o, h, d in zip(rec.ok, rec.health, rec.debt, strict=True)),
            liquidations=len(self.rec.liquidations),
            liquidated_accounts=len(self.observer.liquidated_accounts),
            faults=[f.kind + (f":{f.asset}" if f.asset else "") for f in self.active],
            settling=settling,
            node_url=self.rpc.url,
            head=rec.number,
        )
