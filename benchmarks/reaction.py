"""How fast the keeper clears a crash that makes many accounts liquidatable at once.

    python benchmarks/reaction.py --accounts 1000 --drop 0.30

A drill (keeper.drills, the same machinery as `keeper drill`) on a fresh Anvil: N WETH-backed borrowers with health
drawn from --health (default 1.05 to 1.60), one price update that drops WETH by --drop, then blocks mined one by one
(12 s apart) with the keeper handling each, until nothing is liquidatable. Every figure is read from the chain:

  liquidatable   accounts liquidatable in the block of the price update
  latency        for each of them, blocks from that block to its first liquidation (1 = the very next block)
  p50/p99        over the accounts whose first liquidation the block gas allows in the next block: the first
                 floor(block gas limit / mean gas of a first liquidation) of them in inclusion order (all of them when
                 fewer are liquidatable); the goal is p99 <= 1
  blocks_to_clear  blocks from the price update to the first block with no account liquidatable
  limit_blocks   the physical limit: ceil(gas used by all the liquidations / block gas limit); the goal is
                 blocks_to_clear <= limit_blocks + 1

The last line is exactly

    reaction accounts=N liquidatable=L p50_blocks=A p99_blocks=B blocks_to_clear=C limit_blocks=D
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from keeper.drills.healths import liquidatable
from keeper.drills.record import DrillOptions
from keeper.drills.report import percentile
from keeper.drills.run import run_drill
from keeper.drills.scenario import Accounts, Asset, Scenario, Step

BLOCK_TIME_S = 12
PRICE = 2000.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--accounts", type=int, default=1000)
    parser.add_argument("--drop", type=float, default=0.30, help="fractional WETH drop in one update")
    parser.add_argument("--health", type=float, nargs=2, default=(1.05, 1.60), metavar=("LO", "HI"))
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--settle-blocks", type=int, default=40)
    args = parser.parse_args()
    if not 0 < args.drop < 1:
        parser.error("--drop must be between 0 and 1")
    scenario = Scenario(
        name="reaction",
        description=f"one update drops WETH by {args.drop:.0%}",
        seed=args.seed,
        block_time_s=BLOCK_TIME_S,
        accounts=Accounts(count=args.accounts, health=tuple(args.health), assets=("WETH",)),
        assets=(Asset("WETH", PRICE), Asset("USDC", 1.0, quote=True)),
        steps=(Step(at=BLOCK_TIME_S, prices={"WETH": PRICE * (1 - args.drop)}),),
        faults=(),
    )
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="reaction-") as tmp:
        rec = run_drill(
            DrillOptions(scenario=scenario, out=Path(tmp), settle_blocks=args.settle_blocks, on_phase=print)
        )
    blocks = rec.blocks
    drop = next(j for j, b in enumerate(blocks) if b.scenario_s >= BLOCK_TIME_S)
    drop_block = blocks[drop].number
    at_drop = [
        i
        for i in range(len(rec.accounts))
        if liquidatable(blocks[drop].ok[i], blocks[drop].health[i], blocks[drop].debt[i])
    ]
    index = {a: i for i, a in enumerate(rec.accounts)}
    first: dict[int, tuple[int, str]] = {}
    for liq in sorted(rec.liquidations, key=lambda x: (x.block, x.log_index)):
        i = index.get((liq.owner, liq.sub_id))
        if i is not None and i not in first and liq.block > drop_block:
            first[i] = (liq.block, liq.tx)
    mined = {t.hash: t for t in rec.keeper_txs.values() if t.mined_block is not None and t.status == 1}
    liq_gas = [mined[tx].gas_used for _, tx in first.values() if tx in mined]
    all_gas = sum(t.gas_used for t in mined.values() if t.account is not None and (t.mined_block or 0) > drop_block)
    gas_limit = blocks[drop].gas_limit
    order = sorted((b, i) for i, (b, _) in first.items() if i in set(at_drop))
    fit = len(order) if not liq_gas else min(len(order), int(gas_limit // (sum(liq_gas) / len(liq_gas))))
    latencies = [b - drop_block for b, _ in order[:fit]]
    all_latencies = [b - drop_block for b, _ in order]
    clear = next(
        (
            b.number - drop_block
            for b in blocks[drop:]
            if not any(liquidatable(o, h, d) for o, h, d in zip(b.ok, b.health, b.debt, strict=True))
        ),
        None,
    )
    never = len(set(at_drop) - set(first))
    print(
        f"liquidations {len(rec.liquidations)} by the keeper; {never} liquidatable accounts never liquidated; "
        f"block gas limit {gas_limit:,}; gas of all liquidations {all_gas:,}"
    )
    print(
        f"all {len(all_latencies)} accounts: p50 {percentile(all_latencies, 50)} p99 {percentile(all_latencies, 99)} "
        f"max {max(all_latencies, default=0)} blocks; the {fit} the next block's gas allows: "
        f"p50 {percentile(latencies, 50)} p99 {percentile(latencies, 99)}"
    )
    tick = rec.tick_s[drop] if drop < len(rec.tick_s) else 0.0
    print(
        f"the keeper's turn after the price update took {tick:.1f} s of wall time (blocks are {BLOCK_TIME_S} s): "
        f"{'within' if tick <= BLOCK_TIME_S else 'LONGER than'} one block; wall {time.monotonic() - started:.1f} s"
    )
    limit = math.ceil(all_gas / gas_limit) if gas_limit else 0
    print(
        f"reaction accounts={args.accounts} liquidatable={len(at_drop)} p50_blocks={percentile(latencies, 50)} "
        f"p99_blocks={percentile(latencies, 99)} blocks_to_clear={clear if clear is not None else -1} "
        f"limit_blocks={limit}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
