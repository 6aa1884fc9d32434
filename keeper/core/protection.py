"""Planning the opt-in protections (docs/protection.md), pure: integers, no I/O, the engine's math from
`keeper.core.risk`.

- **Rebalancing**: an owner authorises the keeper with a target health. For each of the owner's sub-accounts below
  the target, move collateral from the owner's other sub-accounts (donors) so that the receiver rises to the target
  at most, and every donor stays at or above the target with its initial margin intact — the module's rules. The
  plan takes the fewest moves it can: the most at-risk receiver first, and for it always the single donor and asset
  that lift it the most; among equal lifts, the asset with the highest lt (the least volatile by governance's own
  rating).
- **The band first in a calm market.** A sub-account opted into a pre-liquidation band is lifted only when a
  repeat of the largest recent one-update moves of its prices (`Shock`: each collateral's largest fall and the
  debt asset's largest rise the keeper saw lately) would take it from where it is straight below 1, past the
  band; or when the move leaves it *gap-proof* (`gap_health` >= 1: healthy even if each of its collateral assets
  fell at once by `1 - lt`, governance's own rating of how far that asset can move). Otherwise the band is left to
  catch it: when prices move less per update than the band is wide, the band catches the sub-account before 1 and
  repays half its debt for a small discount, which takes it well above the target; lifting it instead keeps all of
  its leverage and draws its siblings down to the target with it, so the owner's whole book then sits just above
  the band, and a later gap liquidates every sub-account at once, with no donor left above the target to rescue
  any (docs/protection.md, "A slow slide, then a sharp leg"). When prices jump by more than the band is wide, the
  band cannot catch anything and the lift is what protects. Sub-accounts without a band are lifted as before.
- A **rescue** is a plan made for an owner whose sub-account is already liquidatable: moves, sent as one
  `rebalanceBatch`, into the liquidatable sub-accounts only (the others are left to ordinary rebalancing and its
  rules). When they lift the account back above health 1, the keeper sends them instead of liquidating.
- **Pre-liquidation**: an opted-in sub-account with `1 <= health < preThreshold` may be repaid up to `maxShare` of
  its debt by anyone, who receives collateral worth the repayment plus `discount`. The plan picks the collateral
  with the best profit and checks the module's rules (dust, balance, health must improve) with the exact mirror.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from keeper.core import risk
from keeper.core.risk import AssetRisk
from keeper.core.units import WAD

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
    grid: risk.GridRule | None = None  # the engine's scenario grid, columns by asset address; None: additive

    def health(self, balances: Mapping[K, int], scaled_debt: int) -> risk.Health:
        ordered = {a: balances.get(a, 0) for a in self.assets}
        return risk.account_health(
            ordered, self.prices, self.assets, scaled_debt, self.index, self.debt_price, self.debt_decimals, self.grid
        )

    def gapped(self) -> Book:
        """This book after every collateral price falls by `1 - lt` at once (price·lt, rounded down: against the
        account). The debt asset's price is unchanged."""
        prices = {a: risk.w_mul_down(p, self.assets[a].lt) for a, p in self.prices.items() if a in self.assets}
        return Book(prices, self.assets, self.index, self.debt_price, self.debt_decimals, self.min_debt, self.grid)

    def shocked(self, shock: Shock) -> Book:
        """This book after `shock`: each collateral price falls by its recent largest fall (rounded down), the debt
        asset's price rises by its recent largest rise (rounded up); both against the account."""
        prices = {a: risk.w_mul_down(p, WAD - min(shock.falls.get(a, 0), WAD)) for a, p in self.prices.items()}
        debt_price = risk.w_mul_up(self.debt_price, WAD + shock.debt_rise)
        return Book(prices, self.assets, self.index, debt_price, self.debt_decimals, self.min_debt, self.grid)


@dataclass(frozen=True)
class Shock:
    """The largest recent one-update moves against borrowers (WAD fractions): each collateral's largest fall
    (`falls`, by asset address) and the debt asset's largest rise (`debt_rise`). See `RecentMoves`."""

    falls: Mapping[K, int]
    debt_rise: int = 0


class RecentMoves:
    """The largest one-update price moves within the last `memory_s` seconds, from the prices the keeper sees
    block by block (pure state: the caller feeds it). A move is measured between two consecutive observations, so a
    skipped block makes a move look larger, never smaller. A fresh memory has seen no moves."""

    def __init__(self, memory_s: int) -> None:
        self.memory_s = memory_s
        self._last: dict[K, tuple[int, int]] = {}  # asset -> (timestamp, price) last seen
        self._moves: dict[K, list[tuple[int, int]]] = {}  # asset -> [(timestamp, signed WAD move)]

    def observe(self, timestamp: int, prices: Mapping[K, int]) -> None:
        """Prices (WAD, > 0) seen at `timestamp`; an asset missing here (no valid price) is not measured."""
        for asset, price in prices.items():
            last = self._last.get(asset)
            # Blocks may share a timestamp (L2s make several a second; so does a local chain): a move between two of
            # them is still a move. The caller feeds each block once.
            if last is not None and timestamp >= last[0] and price != last[1]:
                move = risk.mul_div_down(abs(price - last[1]), WAD, last[1])
                self._moves.setdefault(asset, []).append((timestamp, move if price > last[1] else -move))
            if last is None or timestamp >= last[0]:
                self._last[asset] = (timestamp, price)
        horizon = max((t for t, _ in self._last.values()), default=0) - self.memory_s
        for asset in list(self._moves):
            self._moves[asset] = [m for m in self._moves[asset] if m[0] > horizon]

    def largest_fall(self, asset: K) -> int:
        return max((-m for _, m in self._moves.get(asset, []) if m < 0), default=0)

    def largest_rise(self, asset: K) -> int:
        return max((m for _, m in self._moves.get(asset, []) if m > 0), default=0)

    def shock(self, collateral: Sequence[K], debt_asset: K) -> Shock:
        return Shock({a: self.largest_fall(a) for a in collateral}, self.largest_rise(debt_asset))


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
    gap_proof: bool = False,
) -> Move | None:
    """The single move that lifts `receiver` the most without passing `ceiling`, from any donor and asset, every
    donor keeping `floor` (default: the ceiling; the module's rule is ceiling = floor = target) and its own band
    threshold with the same headroom ((floor - ceiling) / 2) above it. With `gap_proof`, only a move that leaves
    the receiver gap-proof (`gap_health` >= 1) counts."""
    gapped = book.gapped() if gap_proof else None
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

            def ok(amount: int, donor_floor: int = donor_floor) -> bool:
                r, g = after(amount)
                return r.health <= ceiling and _donor_ok(book, g, donor_floor)

            amount = risk.largest(1, balance, ok) if balance > 0 and ok(1) else 0
            if amount == 0:
                continue
            if gapped is not None:
                take = dict(receiver.balances)
                take[asset] = take.get(asset, 0) + amount
                if gapped.health(take, receiver.scaled_debt).health < WAD:
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
    shock: Shock | None = None,
) -> list[Move]:
    """Moves lifting the owner's sub-accounts below `target` (those with debt), most at risk first. Each move is
    applied to the working copy before the next is planned, so later moves see earlier ones.

    `headroom` (WAD health) plans inside the module's rule: receivers are lifted to `target - headroom` at most and
    donors keep `target + headroom`, so that the interest accrued and the prices moved by the block the moves land
    in do not turn an exact plan into a revert. It is capped at a quarter of `target - 1`. Sub-accounts in
    `exclude` receive nothing.

    With `shock` (the market's largest recent moves), a receiver opted into a band (`Sub.band`) that a repeat of
    the shock would leave at or above health 1 is lifted only by a move that leaves it gap-proof: otherwise its
    band, which catches it before 1, is left to de-lever it. Without `shock` every receiver is lifted."""
    headroom = min(headroom, (target - WAD) // 4)
    shocked = book.shocked(shock) if shock is not None else None
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
            band_catches = (
                shocked is not None
                and receiver.band > 0
                and shocked.health(receiver.balances, receiver.scaled_debt).health >= WAD
            )
            move = best_move(book, receiver, list(work.values()), ceiling, floor, gap_proof=band_catches)
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
    sub-accounts only. A liquidatable sub-account the moves cannot rescue receives nothing: it will be liquidated,
    and collateral sent into it would only change the liquidation under the liquidator's feet. No moves when
    nothing can be rescued."""
    exclude: set[int] = {s.sub_id for s in subs if s.sub_id not in liquidatable}
    while True:
        moves = plan_rebalances(book, subs, target, max_moves=max_moves, headroom=headroom, exclude=frozenset(exclude))
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
