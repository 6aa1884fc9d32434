"""Seeding: the `[accounts]` borrowers, drawn reproducibly from the seed, funded, deposited and borrowed to their drawn
healths; the vault and the keeper funded; and the owners who opt in to protection, with their terms."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

from eth_utils.crypto import keccak
from web3 import Web3

from keeper.core.units import GWEI, WAD
from keeper.drills.driver import Driver
from keeper.drills.record import DrillError
from keeper.drills.scenario import Scenario
from keeper.drills.system import System, calldata

SUBS_PER_OWNER = 4  # seeded sub-accounts per owner address
SEED_COLLATERAL_USD = (2_000.0, 40_000.0)  # per collateral asset of a seeded account, drawn log-uniformly

# Opt-in terms a protected drill owner chooses, each capped by the module's bounds.
PROTECT_TARGET_HEALTH = 1.15
PROTECT_PRE_THRESHOLD = 1.05
PROTECT_DISCOUNT = 0.01
PROTECT_SHARE = 0.5


@dataclass
class SeedPlan:
    owner: str
    sub: int
    collateral: dict[str, int]  # symbol -> token units
    debt: int  # debt-asset units
    health: float  # drawn target
    others: dict[str, int] = field(default_factory=dict)  # further debt assets (`borrow = true`): symbol -> units
    book: str = ""  # the [[accounts.book]] it was drawn from


def _owner(seed: int, i: int, salt: str = "") -> str:
    return Web3.to_checksum_address(keccak(f"collateral-keeper drill owner {seed} {i}{salt}".encode())[12:])


def supported_usd(
    scenario: Scenario,
    system: System,
    usd: dict[str, float],
    initial: bool = False,
    shorts: dict[str, float] | None = None,
) -> float:
    """The debt (USD) the margin rule lets collateral worth `usd` (by symbol) carry at health 1, the debt split
    among assets by the weights `shorts` (default: all in the quote asset): under the additive rule `Σ usd·lt`
    (`ltv` for the initial margin); under the scenario's grid the lowest over its scenarios of
    `Σ usd·m / Σ w·m_debt` (times the initial scale for the initial margin), an asset not named moving by 1."""
    margin = scenario.margin
    if margin is None:
        ratios = system.ltv if initial else system.lt
        return sum(v * ratios[s] for s, v in usd.items())
    weights = shorts or {scenario.quote.symbol: 1.0}
    total = sum(weights.values())
    best = min(
        sum(v * sc.get(s, 1.0) for s, v in usd.items()) / sum(w / total * sc.get(d, 1.0) for d, w in weights.items())
        for sc in margin.scenarios
    )
    return best * margin.initial_scale if initial else best


def plan_seeding(scenario: Scenario, system: System, count: int, seed: int, salt: str = "") -> list[SeedPlan]:
    """The accounts to seed, a pure function of the scenario, the seed and `salt` (empty but on a node where the
    seed's owners already hold accounts, from an earlier drill: see run_drill)."""
    rng = random.Random(seed)
    lo, hi = scenario.accounts.health
    quote = scenario.quote
    plans = []
    if scenario.accounts.books:
        return [_book_plan(scenario, system, rng, _owner(seed, i // SUBS_PER_OWNER, salt), i) for i in range(count)]
    for i in range(count):
        owner, sub = _owner(seed, i // SUBS_PER_OWNER, salt), i % SUBS_PER_OWNER
        k = rng.randint(1, len(scenario.accounts.assets))
        mix = rng.sample(list(scenario.accounts.assets), k)
        collateral: dict[str, int] = {}
        values: dict[str, float] = {}
        for symbol in mix:
            usd = math.exp(rng.uniform(*map(math.log, SEED_COLLATERAL_USD)))
            price = scenario.asset(symbol).price
            units = int(usd / price * 10 ** system.decimals[symbol])
            if units == 0:
                continue
            collateral[symbol] = units
            values[symbol] = units / 10 ** system.decimals[symbol] * price
        weighted = supported_usd(scenario, system, values)
        health = rng.uniform(lo, hi)
        debt = int(weighted / health / quote.price * 10 ** system.decimals[quote.symbol])
        plans.append(SeedPlan(owner, sub, collateral, debt, health))
    return plans


def _book_plan(scenario: Scenario, system: System, rng: random.Random, owner: str, i: int) -> SeedPlan:
    """One account drawn from the scenario's books (by weight): its collateral legs by value share of a drawn total,
    its debt legs by value share of the debt that puts it at a drawn health under the scenario's margin rule."""
    books = scenario.accounts.books
    book = rng.choices(books, weights=[b.weight for b in books])[0]
    total_usd = math.exp(rng.uniform(*map(math.log, SEED_COLLATERAL_USD))) * len(book.long)
    long_total = sum(book.long.values())
    collateral: dict[str, int] = {}
    values: dict[str, float] = {}
    for symbol, share in book.long.items():
        price = scenario.asset(symbol).price
        units = int(total_usd * share / long_total / price * 10 ** system.decimals[symbol])
        if units:
            collateral[symbol] = units
            values[symbol] = units / 10 ** system.decimals[symbol] * price
    health = rng.uniform(*scenario.accounts.health)
    debt_usd = supported_usd(scenario, system, values, shorts=dict(book.short)) / health
    short_total = sum(book.short.values())
    debts = {
        symbol: int(debt_usd * share / short_total / scenario.asset(symbol).price * 10 ** system.decimals[symbol])
        for symbol, share in book.short.items()
    }
    quote = scenario.quote.symbol
    others = {s: u for s, u in debts.items() if s != quote and u > 0}
    return SeedPlan(owner, i % SUBS_PER_OWNER, collateral, debts.get(quote, 0), health, others, book.name)


def seed_accounts(driver: Driver, scenario: Scenario, plans: list[SeedPlan], keeper: str) -> None:
    """Deposits, borrows and funding, with automine off and many transactions per block."""
    driver.rpc.set_balance(driver.me, 10**30)
    driver.rpc.set_balance(keeper, 10**24)
    driver.rpc.call("anvil_autoImpersonateAccount", True)
    hashes = _fund(driver, plans, keeper)
    hashes += _deposit(driver, plans)
    driver.mine_all()
    driver.check_mined(hashes, "seeding (funding or a deposit)")
    _borrow(driver, scenario, plans)


def _fund(driver: Driver, plans: list[SeedPlan], keeper: str) -> list[str]:
    """The vault lends what the accounts borrow, with room to spare; the keeper gets a debt-asset inventory."""
    sys_ = driver.sys
    debt_sym = sys_.debt_symbol
    total_debt = sum(p.debt for p in plans)
    hashes = []
    need = total_debt * 2 - int(sys_.vault.functions.idle().call()) + 10 ** sys_.decimals[debt_sym]
    if need > 0:
        driver.deal(debt_sym, driver.me, need)
        token = sys_.contract("MockERC20", sys_.tokens[debt_sym])
        hashes.append(driver.send(driver.me, token.address, calldata(token, "approve", sys_.vault.address, need)))
        hashes.append(driver.send(driver.me, sys_.vault.address, calldata(sys_.vault, "deposit", need, driver.me)))
    # the keeper's inventory: enough to repay every debt once, and then some
    driver.deal(debt_sym, keeper, total_debt * 2 + 10 ** (sys_.decimals[debt_sym] + 6))
    further: dict[str, int] = {}
    for p in plans:
        for symbol, units in p.others.items():
            further[symbol] = further.get(symbol, 0) + units
    lent: list[str] = []
    for symbol, units in further.items():
        vault = (sys_.further or {}).get(symbol)
        if vault is None:
            raise DrillError(
                f"the scenario borrows {symbol} but the deployment does not lend it (no [[borrow]] {symbol}): "
                "redeploy with a config that lists it (deployments/configs/local-multi.toml)"
            )
        token = sys_.contract("MockERC20", sys_.tokens[symbol])
        driver.deal(symbol, driver.me, units * 2)
        lent.append(driver.send(driver.me, token.address, calldata(token, "approve", vault.address, units * 2)))
        lent.append(driver.send(driver.me, vault.address, calldata(vault, "deposit", units * 2, driver.me)))
        driver.deal(symbol, keeper, units * 2)
    if lent:
        # Mined now: dealing the collateral next sets the driver's balances of the same tokens.
        driver.mine_all()
        driver.check_mined(lent, "funding a further debt asset's vault")
    return hashes


def _deposit(driver: Driver, plans: list[SeedPlan]) -> list[str]:
    """Collateral: dealt to the driver, deposited into each account by the driver."""
    sys_ = driver.sys
    hashes = []
    totals: dict[str, int] = {}
    for p in plans:
        for symbol, units in p.collateral.items():
            totals[symbol] = totals.get(symbol, 0) + units
    for symbol, units in totals.items():
        driver.deal(symbol, driver.me, units)
        token = sys_.contract("MockERC20", sys_.tokens[symbol])
        hashes.append(driver.send(driver.me, token.address, calldata(token, "approve", sys_.engine.address, units)))
    for p in plans:
        driver.rpc.set_balance(p.owner, 10**21)
        for symbol, units in p.collateral.items():
            data = calldata(sys_.engine, "deposit", p.owner, p.sub, sys_.tokens[symbol], units)
            hashes.append(driver.send(driver.me, sys_.engine.address, data, gas=250_000))
    return hashes


def _borrow(driver: Driver, scenario: Scenario, plans: list[SeedPlan]) -> None:
    """Borrowing: a health below lt/ltv is past the initial margin, so collateral prices are raised for the borrows
    and the scenario's prices restored after them. Books that borrow collateral assets cannot be lifted that way (a
    borrowed asset's rise is a debt's rise): see `_borrow_books`."""
    if scenario.accounts.books:
        _borrow_books(driver, plans)
        return
    sys_ = driver.sys
    debt_sym = sys_.debt_symbol
    lift = 1.0
    for p in plans:
        usd = {s: u / 10 ** sys_.decimals[s] * scenario.asset(s).price for s, u in p.collateral.items()}
        power = supported_usd(scenario, sys_, usd, initial=True)
        need_usd = p.debt / 10 ** sys_.decimals[debt_sym] * scenario.quote.price
        if power > 0:
            lift = max(lift, need_usd / power)
    now = int(driver.rpc.block()["timestamp"], 16)
    # every feed at the scenario's prices (collateral lifted for the borrows), whatever the target held before
    for a in scenario.assets:
        price = a.price if a.quote else a.price * lift * 1.01
        driver.push_usd(a.symbol, price, now)
    driver.mine_all()
    hashes = []
    for p in plans:
        if p.debt > 0:
            data = calldata(sys_.engine, "borrow", p.sub, p.debt, p.owner)
            hashes.append(driver.send(p.owner, sys_.engine.address, data, gas=400_000, tip=GWEI))
    driver.mine_all()
    driver.check_mined(hashes, "seeding (a borrow)")
    for a in scenario.assets:
        driver.push_usd(a.symbol, a.price, now)
    driver.mine_all()


def _borrow_books(driver: Driver, plans: list[SeedPlan]) -> None:
    """Every account's debts, the initial margin relaxed meanwhile: the caller (`relaxed_margin`) has set each
    collateral's ltv just under its lt and a grid's initial scale to 1, so any health above 1 can be borrowed to."""
    sys_ = driver.sys
    hashes = []
    for p in plans:
        if p.debt > 0:
            data = calldata(sys_.engine, "borrow", p.sub, p.debt, p.owner)
            hashes.append(driver.send(p.owner, sys_.engine.address, data, gas=600_000, tip=GWEI))
        for symbol, units in p.others.items():
            data = calldata(sys_.engine, "borrowAsset", p.sub, sys_.tokens[symbol], units, p.owner)
            hashes.append(driver.send(p.owner, sys_.engine.address, data, gas=600_000, tip=GWEI))
    driver.mine_all()
    driver.check_mined(hashes, "seeding (a borrow)")


def protected_owners(plans: list[SeedPlan], fraction: float, seed: int) -> set[str]:
    """The owners that opt in: `fraction` of the seeded owners, drawn with the drill's seed."""
    owners = sorted({p.owner for p in plans})
    k = round(fraction * len(owners))
    return set(random.Random(f"protect-{seed}").sample(owners, k)) if k else set()


def opt_in(driver: Driver, plans: list[SeedPlan], owners: set[str], keeper: str) -> None:
    """Each protected owner authorises the keeper as its rebalancer and opts every sub-account into the band."""
    module = driver.sys.protection
    if not owners:
        return
    if module is None:
        raise DrillError(
            "the scenario protects accounts ([accounts] protected > 0) but the deployment has no ProtectionModule: "
            "redeploy with `ape run deploy`"
        )
    bounds = module.functions.preLiquidationBounds().call()
    cap = int(module.functions.maxTargetHealth().call())
    target = min(int(PROTECT_TARGET_HEALTH * WAD), cap)
    pre = min(int(PROTECT_PRE_THRESHOLD * WAD), int(bounds[0]))
    discount = min(int(PROTECT_DISCOUNT * WAD), int(bounds[1]))
    share = min(int(PROTECT_SHARE * WAD), int(bounds[2]))
    hashes = []
    for owner in sorted(owners):
        data = calldata(module, "setRebalancer", keeper, target)
        hashes.append(driver.send(owner, module.address, data, gas=120_000))
    for p in plans:
        if p.owner in owners:
            data = calldata(module, "setPreLiquidation", p.sub, pre, discount, share)
            hashes.append(driver.send(p.owner, module.address, data, gas=120_000))
    driver.mine_all()
    driver.check_mined(hashes, "opting in to protection")
