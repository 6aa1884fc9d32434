"""Planning the opt-in protections (docs/protection.md), pure: integers, no I/O, the engine's math from `keeper.risk`.

- **Rebalancing**: an owner authorises the keeper with a target health. For each of the owner's sub-accounts below
  the target, move collateral from the owner's other sub-accounts (donors) so that the receiver rises to the target
  at most, and every donor stays at or above the target with its initial margin intact — the module's rules. The
  plan takes the fewest moves it can: the most at-risk receiver first, and for it always the single donor and asset
  that lift it the most; among equal lifts, the asset with the highest lt (the least volatile by governance's own
  rating).
- **Gap reserve**: a donor of a preventive rebalance also keeps its *gap health* at or above 1: its health if
  each of its collateral assets fell at once by `1 - lt` (governance's own rating of how far that asset can move
  before a liquidation must be done; a gap-prone asset has a low lt, so its reserve is wider). Only what a donor can
  spare above that reserve is moved to keep a sibling out of its band. Without it, a slow slide drains every donor
  down to the target, the owner's book ends with every sub-account at the same health just above the band, and a
  sharp leg then takes them all below 1 at once, with no donor left to rescue any (docs/protection.md, "the slow
  slide then a sharp leg"). With it, a sub-account the donors cannot lift reaches its band and is de-levered there
  cheaply, and the donors keep collateral a rescue can use after a gap.
- A **rescue** is a plan made for an owner whose sub-account is already liquidatable: moves, sent as one
  `rebalanceBatch`, into the liquidatable sub-accounts only, with donors down to the module's floor (a rescue
  saves a certain liquidation now, which is what the reserve is kept for). When they lift the account back above
  health 1, the keeper sends them instead of liquidating.
- **Pre-liquidation**: an opted-in sub-account with `1 <= health < preThreshold` may be repaid up to `maxShare` of
  its debt by anyone, who receives collateral worth the repayment plus `discount`. The plan picks the collateral
  with the best profit and checks the module's rules (dust, balance, health must improve) with the exact mirror.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from keeper import risk
from keeper.risk import WAD, AssetRisk

K = str  # asset address
EQUAL_LIFT = 10**12  # WAD health: lifts closer than this (one part in a million) count as equal


@dataclass(frozen=True)
class Book:
    """What the engine would price an account with: prices (WAD), configs, the borrow index and the debt asset."""

    prices: Mapping[K, int]
    assets: Mapping[K, AssetRisk]
    index: int
    debt_price: int
    debt_decimals: int
    min_debt: int = 0

    def health(self, balances: Mapping[K, int], scaled_debt: int) -> risk.Health:
        ordered = {a: balances.get(a, 0) for a in self.assets}
        return risk.account_health(
            ordered, self.prices, self.assets, scaled_debt, self.index, self.debt_price, self.debt_decimals
        )

    def gapped(self) -> Book:
        """This book after every collateral price falls by `1 - lt` at once (price·lt, rounded down: against the
        account, so a donor keeps at least the reserve). The debt asset's price is unchanged."""
        prices = {a: risk.w_mul_down(p, self.assets[a].lt) for a, p in self.prices.items() if a in self.assets}
        return Book(prices, self.assets, self.index, self.debt_price, self.debt_decimals, self.min_debt)


@dataclass
class Sub:
    sub_id: int
    balances: dict[K, int]
    scaled_debt: int
    band: int = 0  # WAD: the sub-account's own pre-liquidation threshold (0 when not opted in); as a donor it
    # never gives below it, or the operator could move it into its own band (the module's rule)


@dataclass(frozen=True)
class Move:
    from_sub: int
    to_sub: int
    asset: K
    amount: int
    receiver_health_after: int
    giver_health_after: int


# ---------------------------------------------------------------------------------------------- rebalancing


def _donor_ok(book: Book, h: risk.Health, floor: int) -> bool:
    """A donor after the move: health >= floor and, with debt, its initial margin (ltvWeighted >= debtValue)."""
    if h.debt == 0:
        return True
    return h.health >= floor and h.ltv_weighted >= h.debt_value


def gap_health(book: Book, balances: Mapping[K, int], scaled_debt: int) -> int:
    """The account's health (WAD) if each of its collateral assets fell at once by `1 - lt` (`Book.gapped`)."""
    return book.gapped().health(balances, scaled_debt).health


def best_move(
    book: Book,
    receiver: Sub,
    donors: Sequence[Sub],
    ceiling: int,
    floor: int | None = None,
    reserve: Book | None = None,
) -> Move | None:
    """The single move that lifts `receiver` the most without passing `ceiling`, from any donor and asset, every
    donor keeping `floor` (default: the ceiling; the module's rule is ceiling = floor = target) and its own band
    threshold with the same headroom ((floor - ceiling) / 2) above it. With `reserve` (the book's `gapped()`), a
    donor with debt also keeps its health in that book at or above 1, or gives nothing."""
    floor = ceiling if floor is None else floor
    headroom = (floor - ceiling) // 2
    candidates: list[Move] = []
    for donor in donors:
        if donor.sub_id == receiver.sub_id:
            continue
        donor_floor = max(floor, donor.band + headroom) if donor.band else floor
        for asset, balance in donor.balances.items():
            if balance == 0 or asset not in book.assets:
                continue

            def after(amount: int, asset: K = asset, donor: Sub = donor) -> tuple[risk.Health, risk.Health]:
                give = dict(donor.balances)
                give[asset] -= amount
                take = dict(receiver.balances)
                take[asset] = take.get(asset, 0) + amount
                return book.health(take, receiver.scaled_debt), book.health(give, donor.scaled_debt)

            def ok(amount: int, asset: K = asset, donor: Sub = donor, donor_floor: int = donor_floor) -> bool:
                r, g = after(amount)
                if not (r.health <= ceiling and _donor_ok(book, g, donor_floor)):
                    return False
                if reserve is None or donor.scaled_debt == 0:
                    return True
                left = dict(donor.balances)
                left[asset] -= amount
                return reserve.health(left, donor.scaled_debt).health >= WAD

            amount = risk.largest(1, balance, ok) if balance > 0 and ok(1) else 0
            if amount == 0:
                continue
            r, g = after(amount)
            candidates.append(Move(donor.sub_id, receiver.sub_id, asset, amount, r.health, g.health))
    if not candidates:
        return None
    # Among moves that lift the receiver as far (to within EQUAL_LIFT: token granularity differs by asset), prefer
    # the collateral governance rates safest, the highest lt: moving a volatile asset into an at-risk account
    # concentrates the very risk it is being rescued from.
    top = max(m.receiver_health_after for m in candidates)
    near = [m for m in candidates if m.receiver_health_after >= top - EQUAL_LIFT]
    return max(near, key=lambda m: (book.assets[m.asset].lt, m.receiver_health_after))


def plan_rebalances(
    book: Book,
    subs: Sequence[Sub],
    target: int,
    max_moves: int = 8,
    headroom: int = 0,
    exclude: frozenset[int] = frozenset(),
    gap_reserve: bool = True,
) -> list[Move]:
    """Moves lifting the owner's sub-accounts below `target` (those with debt), most at risk first. Each move is
    applied to the working copy before the next is planned, so later moves see earlier ones.

    `headroom` (WAD health) plans inside the module's rule: receivers are lifted to `target - headroom` at most and
    donors keep `target + headroom`, so that the interest accrued and the prices moved by the block the moves land
    in do not turn an exact plan into a revert. It is capped at a quarter of `target - 1`. Sub-accounts in
    `exclude` receive nothing. With `gap_reserve` (the default) every donor with debt keeps its gap health
    (`gap_health`) at or above 1; a rescue plans without it."""
    headroom = min(headroom, (target - WAD) // 4)
    reserve = book.gapped() if gap_reserve else None
    ceiling, floor = target - headroom, target + headroom
    work = {s.sub_id: Sub(s.sub_id, dict(s.balances), s.scaled_debt, s.band) for s in subs}
    moves: list[Move] = []

    def health(s: Sub) -> int:
        return book.health(s.balances, s.scaled_debt).health

    while len(moves) < max_moves:
        # Within EQUAL_LIFT of the ceiling counts as there: a top-up that small is not worth a transaction.
        at_risk = sorted(
            (
                s
                for s in work.values()
                if s.sub_id not in exclude and s.scaled_debt and health(s) < ceiling - EQUAL_LIFT
            ),
            key=health,
        )
        progressed = False
        for receiver in at_risk:
            move = best_move(book, receiver, list(work.values()), ceiling, floor, reserve)
            if move is None:
                continue
            _apply(work, move)
            moves.append(move)
            progressed = True
            break
        if not progressed:
            break
    return moves


def apply_moves(subs: Sequence[Sub], moves: Sequence[Move]) -> dict[int, Sub]:
    """The owner's sub-accounts after `moves`, by sub-account id (copies; `subs` is unchanged)."""
    work = {s.sub_id: Sub(s.sub_id, dict(s.balances), s.scaled_debt, s.band) for s in subs}
    for m in moves:
        _apply(work, m)
    return work


def _apply(work: dict[int, Sub], m: Move) -> None:
    work[m.from_sub].balances[m.asset] -= m.amount
    work[m.to_sub].balances[m.asset] = work[m.to_sub].balances.get(m.asset, 0) + m.amount


def plan_rescue(
    book: Book, subs: Sequence[Sub], target: int, liquidatable: set[int], max_moves: int, headroom: int = 0
) -> tuple[list[Move], set[int]]:
    """Moves that lift liquidatable sub-accounts (ids in `liquidatable`) back above health 1 before anyone
    liquidates them, and the ids they rescue: those at health >= 1 + headroom once every move has landed. The
    moves are `plan_rebalances`'s (most at risk first, within the module's rules) into the liquidatable
    sub-accounts only, and without the gap reserve: the donors give down to the module's floor, since a rescue
    saves a liquidation that is certain now. A liquidatable sub-account the moves cannot rescue receives nothing:
    it will be liquidated, and collateral sent into it would only change the liquidation under the liquidator's
    feet. No moves when nothing can be rescued."""
    exclude: set[int] = {s.sub_id for s in subs if s.sub_id not in liquidatable}
    while True:
        moves = plan_rebalances(
            book, subs, target, max_moves=max_moves, headroom=headroom, exclude=frozenset(exclude), gap_reserve=False
        )
        after = apply_moves(subs, moves)
        rescued = {i for i in liquidatable if i in after and _health(book, after[i]) >= WAD + headroom}
        lost = {m.to_sub for m in moves if m.to_sub in liquidatable} - rescued
        if not lost:
            return (moves, rescued) if rescued else ([], set())
        exclude |= lost


def _health(book: Book, s: Sub) -> int:
    return book.health(s.balances, s.scaled_debt).health


# ---------------------------------------------------------------------------------------------- pre-liquidation


@dataclass(frozen=True)
class PreConfig:
    """`IProtectionModule.preLiquidationOf`: WAD threshold, discount and largest share of the debt per call."""

    pre_threshold: int
    discount: int
    max_share: int

    @property
    def active(self) -> bool:
        return self.pre_threshold > WAD and self.discount > 0 and self.max_share > 0


@dataclass(frozen=True)
class PreQuote:
    collateral: K
    repaid: int  # debt-asset units
    seized: int  # collateral units
    health_before: int
    health_after: int
    profit_usd: float = 0.0
    notes: list[str] = field(default_factory=list)


def in_band(h: risk.Health, cfg: PreConfig) -> bool:
    """The band: debt, 1 <= health < preThreshold (below 1 only normal liquidation applies)."""
    return cfg.active and h.debt > 0 and WAD <= h.health < cfg.pre_threshold


def pre_seized(book: Book, repaid: int, discount: int, collateral: K) -> int:
    """Collateral for `repaid` at `discount`: value_down(repaid)·(1 + discount) rounded down, in collateral units
    rounded down (the engine's liquidation pricing without the balance cap)."""
    cfg = book.assets[collateral]
    value = risk.w_mul_down(risk.value_down(repaid, book.debt_price, book.debt_decimals), WAD + discount)
    return risk.amount_down(value, book.prices[collateral], cfg.decimals)


def quote_pre_liquidation(book: Book, sub: Sub, cfg: PreConfig, collateral: K) -> PreQuote | None:
    """The largest pre-liquidation the module allows on `collateral`, or None when the rules refuse it."""
    before = book.health(sub.balances, sub.scaled_debt)
    if not in_band(before, cfg):
        return None
    repaid = risk.w_mul_down(before.debt, cfg.max_share)
    remaining = before.debt - repaid
    if remaining != 0 and remaining < book.min_debt:
        repaid = before.debt - book.min_debt
    if repaid <= 0:
        return None
    seized = pre_seized(book, repaid, cfg.discount, collateral)
    balance = sub.balances.get(collateral, 0)
    if seized == 0 or seized > balance:
        return None
    left = dict(sub.balances)
    left[collateral] = balance - seized
    scaled_repaid = risk.to_scaled_down(repaid, book.index)
    after = book.health(left, sub.scaled_debt - scaled_repaid)
    if after.health <= before.health:
        return None
    return PreQuote(collateral, repaid, seized, before.health, after.health)


def plan_pre_liquidation(
    book: Book, sub: Sub, cfg: PreConfig, usd_price: Mapping[K, float], debt_usd_price: float, gas_usd: float
) -> PreQuote | None:
    """The most profitable allowed pre-liquidation of `sub` after gas, or None (none allowed, or none profitable)."""
    best: PreQuote | None = None
    for collateral in sub.balances:
        if collateral not in book.assets:
            continue
        q = quote_pre_liquidation(book, sub, cfg, collateral)
        if q is None:
            continue
        decimals = book.assets[collateral].decimals
        seized_usd = q.seized / 10**decimals * usd_price[collateral]
        repaid_usd = q.repaid / 10**book.debt_decimals * debt_usd_price
        profit = seized_usd - repaid_usd - gas_usd
        if profit > 0 and (best is None or profit > best.profit_usd):
            best = PreQuote(q.collateral, q.repaid, q.seized, q.health_before, q.health_after, profit)
    return best
