"""Monte Carlo stress engine throughput: the full model (GBM + Merton jumps, a push oracle with a deviation threshold
and heartbeat, keeper delay, the engine's discount schedule, slippage) over P paths × S one-minute steps.

    python benchmarks/montecarlo.py --paths 1000000 --steps 1440

Prints the inputs, the optimizer's answer (so the run is known to be a real one), the peak memory, and last, exactly:
`montecarlo paths=P steps=S seconds=X path_steps_per_s=R`. Goal: >= 20 million path-steps per second on 2 cores."""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from keeper.optimizer import stress


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--paths", type=int, default=1_000_000)
    p.add_argument("--steps", type=int, default=1440)
    p.add_argument("--step-s", type=float, default=60.0)
    p.add_argument("--chunk", type=int, default=stress.DEFAULT_CHUNK, help="paths per chunk (bounds memory)")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args()
    sim = stress.Simulation(
        market=stress.Market(sigma=0.8, jump_intensity=20, jump_mean=-0.06, jump_vol=0.04),
        oracle=stress.Oracle(deviation=0.005, heartbeat_s=3600),
        liquidation=stress.Liquidation(delay_s=60, slippage_depth_usd=50e6, position_usd=2e6),
        horizon_s=args.steps * args.step_s,
        step_s=args.step_s,
        paths=args.paths,
        seed=args.seed,
        chunk=args.chunk,
    )
    print(
        f"model: σ 0.8, 20 jumps/year (mean -6 %, vol 4 %), oracle 0.5 %/3600 s, delay 60 s, slippage depth $50M; "
        f"chunk {args.chunk:,} paths, {args.threads} threads"
    )
    started = time.perf_counter()
    out = stress.simulate(sim, threads=args.threads)
    seconds = time.perf_counter() - started
    choice = stress.optimize(out, stress.Targets(), sim.liquidation)
    m = choice.metrics
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"optimizer: lt {m.lt:.4f} (by probability {choice.lt_by_probability:.4f}), ltv {m.ltv:.4f}, "
        f"P(bad debt) {m.p_bad_debt:.4%}, boundary liquidations {int(out.liquidated.sum()):,}"
    )
    print(f"peak RSS {peak_mb:.0f} MB (outputs 13 B/path = {args.paths * 13 / 1e6:.0f} MB)")
    rate = args.paths * sim.steps / seconds
    print(f"montecarlo paths={args.paths} steps={sim.steps} seconds={seconds:.2f} path_steps_per_s={rate:.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
