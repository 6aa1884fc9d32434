"""Everything the optimizer is asked for, in one typed object, with each default stated once.

`keeper optimize` fills an `OptimizerInputs` from its flags, `keeper run`'s job from the `optimize_*` settings
(`Settings.optimizer_inputs`), and the settings take their field defaults from the constants here. A field left
None is filled, in this order, by a value measured from the chain (`--asset`), by a drill scenario's regime
(`--from-scenario`), and last by the default constant next to it.

Standard library only: the settings import it, and `keeper --help` must not load NumPy.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

# ---- market (a measured value, then a scenario's, wins over these)
JUMP_INTENSITY = 0.0  # jumps per year
JUMP_MEAN = 0.0  # mean log jump size
JUMP_VOL = 0.0  # standard deviation of the log jump size

# ---- oracle, keeper and liquidity
ORACLE_DEVIATION = 0.005  # the feeds' deviation threshold (0: the oracle follows the price)
HEARTBEAT_S = 3600.0  # 0: none
DELAY_S = 60.0  # the keeper's reaction delay
SLIPPAGE_DEPTH_USD = 0.0  # 0: no slippage
POSITION_USD = 1_000_000.0  # collateral sold at once
MIN_DISCOUNT = 0.005  # the discount just below health 1
MAX_DISCOUNT = 0.10  # the discount cap

# ---- targets and simulation
TARGET_PROB = 0.01  # max P(bad debt)
SHORTFALL_BUDGET = 0.001  # max E[bad debt] per $ of debt
LIQ_PROB = 0.05  # max P(an account opened at ltv is liquidated within the horizon)
LT_MAX = 0.99  # the cap on lt when the chain sets none
HORIZON_S = 86400.0
STEP_S = 60.0
BUFFER_HORIZON_S = 86400.0  # the calm-market buffer's horizon
PATHS = 200_000  # Monte Carlo paths of `keeper optimize` (docs/risk-model.md)
MIN_PATHS = 1000  # fewer and a tail probability means nothing
SEED = 0

# `keeper run`'s job runs once an interval for every bounded asset, on the keeper's own process: it defaults to a
# quarter of the command's paths (docs/keeper.md, `optimize_paths`). The only input whose default differs by entry
# point, and on purpose.
JOB_PATHS = 50_000

# ---- live chain
WINDOW_S = 30 * 86400.0  # feed history read
MAX_ROUNDS = 5000  # feed rounds read at most
MIN_ROUNDS = 24  # fewest rounds a volatility is measured from
MIN_HISTORY_DAYS = 1.0  # fewest days those rounds reach back
MIN_SIGMA = 0.01  # a lower measured σ is a frozen feed


@dataclass(frozen=True)
class Regime:
    """The stress inputs a drill scenario's price path implies for one asset (`--from-scenario`)."""

    jump_intensity: float
    jump_mean: float
    jump_vol: float
    horizon_s: float
    delay_s: float
    step_s: float


@dataclass(frozen=True)
class OptimizerInputs:
    """One optimizer run's inputs. None means "not given": measured, taken from a scenario, or the default above."""

    # market
    sigma: float | None = None
    jump_intensity: float | None = None
    jump_mean: float | None = None
    jump_vol: float | None = None
    # oracle, keeper and liquidity
    oracle_deviation: float = ORACLE_DEVIATION
    heartbeat_s: float | None = None
    delay_s: float | None = None
    slippage_depth_usd: float = SLIPPAGE_DEPTH_USD
    position_usd: float = POSITION_USD
    min_discount: float | None = None
    max_discount: float | None = None
    # targets and simulation
    target_prob: float = TARGET_PROB
    shortfall_budget: float = SHORTFALL_BUDGET
    liq_prob: float = LIQ_PROB
    calm_sigma: float | None = None
    buffer_horizon_s: float | None = None
    lt_max: float | None = None
    horizon_s: float | None = None
    step_s: float | None = None
    paths: int = PATHS
    seed: int = SEED
    # live chain
    window_s: float = WINDOW_S
    max_rounds: int = MAX_ROUNDS
    min_rounds: int = MIN_ROUNDS
    min_history_days: float = MIN_HISTORY_DAYS
    min_sigma: float = MIN_SIGMA

    def under(self, regime: Regime) -> OptimizerInputs:
        """These inputs with the fields left unset taken from `regime`: a given value still wins."""
        return replace(
            self,
            jump_intensity=_first(self.jump_intensity, regime.jump_intensity),
            jump_mean=_first(self.jump_mean, regime.jump_mean),
            jump_vol=_first(self.jump_vol, regime.jump_vol),
            horizon_s=_first(self.horizon_s, regime.horizon_s),
            delay_s=_first(self.delay_s, regime.delay_s),
            step_s=_first(self.step_s, regime.step_s),
        )


def _first(given: float | None, fallback: float) -> float:
    return given if given is not None else fallback
