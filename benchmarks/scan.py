"""How long the keeper takes to re-read and re-evaluate every account, batched through the Lens versus naively.

    python benchmarks/scan.py --accounts 10000

Seeds N borrowing sub-accounts on an Anvil of its own (once: the chain is cached as an Anvil state file under
benchmarks/.cache/, keyed by N and the contracts' bytecode), then measures on a fresh Anvil loaded from that file:

  batched  a full refresh as the keeper does it: `reads.read_market` + `reads.read_accounts` (keeper.chain) over all
           N accounts (chunks of --chunk accounts, --threads calls in flight) pinned to one block, then
           `keeper.core.snapshot.health_of` (the pure integer risk mirror) on every account; the median of --reps runs
           after one warm-up run;
  naive    one `eth_call` of `MarginEngine.accountHealth` per account, one after the other, at the same block.

Both go over plain web3 (HTTP) with the keeper's own connection, deployment loading and state code; ape is used only
to seed, in a child process, so the measuring process's peak RSS is the keeper's. Every mirrored health is then
checked against the engine's answer. The last line is

    scan accounts=N batched_s=X naive_s=Y speedup=Z rss_mb=M

Seeding: each BulkBorrower (contracts/mocks/BulkBorrower.sol) owns 256 sub-accounts and opens them all in one
transaction; collateral is 1 to 3 of WETH, WBTC and LINK worth $200 to $50,000 each, borrowed to 20-99.5 % of its
borrowing power; then prices fall (WETH -8 %, WBTC -5 %, LINK -10 %), which leaves health spread around 1 with a
few accounts liquidatable.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import random
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from web3 import Web3  # noqa: E402
from web3.contract import Contract  # noqa: E402

from keeper.chain import reads as state  # noqa: E402
from keeper.chain.deployment import Deployment, connect, contract, load_deployment  # noqa: E402
from keeper.core import risk, snapshot  # noqa: E402

CACHE = ROOT / "benchmarks" / ".cache"
# Bump when the seeded scenario changes, so cached chains are not reused.
SEED_VERSION = "1"
# The contracts whose bytecode makes the cache key.
KEYED = ("OracleRouter", "Vault", "MarginEngine", "Lens", "MockERC20", "MockAggregator", "BulkBorrower")
CHAIN_ID = 31337
SUBS_PER_BORROWER = 256
# Block gas limit of both Anvils; an `open` transaction's gas; gas `open` keeps back to finish the position it is in.
BLOCK_GAS = 2_000_000_000
OPEN_TX_GAS = 100_000_000
OPEN_GAS_RESERVE = 1_000_000
# Seeding scenario: collateral value per asset (USD, log-uniform), how many assets, how much of the borrowing power is
# used, and the price moves after every position is open.
COLLATERAL_USD = (200.0, 50_000.0)
ASSET_COUNT_WEIGHTS = (0.5, 0.3, 0.2)
PRICE_MOVE = {"WETH": 0.92, "WBTC": 0.95, "LINK": 0.90}
# The vault holds this much USDC per account, far more than is borrowed, so utilisation (and interest) stays low.
LIQUIDITY_PER_ACCOUNT_USD = 100_000
WAD = 10**18

# Accounts per Lens call and calls in flight: among the fastest of `--sweep` on the 2-core machine of
# docs/benchmarks.md, and a call of 2,000 accounts (~34M gas) stays under geth's default eth_call gas cap of 50M.
DEFAULT_CHUNK = 2_000
DEFAULT_THREADS = 2
SWEEP_CHUNKS = (250, 500, 1_000, 2_000, 5_000)
SWEEP_THREADS = (1, 2, 3)


def say(line: str) -> None:
    print(line, flush=True)


# --------------------------------------------------------------------------------------------- anvil


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def anvil_binary() -> str:
    beside = Path(sys.executable).parent / "anvil"
    found = str(beside) if beside.exists() else shutil.which("anvil")
    if found is None:
        raise SystemExit("anvil not found: run `make setup` (it installs Foundry's anvil into .venv/bin)")
    return found


@contextmanager
def anvil(*extra: str) -> Iterator[str]:
    """An Anvil on a free port, stopped with SIGTERM on exit (so a --dump-state file is written); yields its URL."""
    port = free_port()
    cmd = [anvil_binary(), "--port", str(port), "--gas-limit", str(BLOCK_GAS), "--quiet", *extra]
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 120
            while True:
                if proc.poll() is not None:
                    log.seek(0)
                    raise SystemExit(f"anvil exited with {proc.returncode}: {log.read().decode().strip()[-2000:]}")
                try:
                    with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                        break
                except OSError:
                    if time.monotonic() > deadline:
                        raise SystemExit("anvil did not start listening within 120 s") from None
                    time.sleep(0.05)
            yield f"http://127.0.0.1:{port}"
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=300)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


# --------------------------------------------------------------------------------------------- seeding


@dataclass(frozen=True)
class Position:
    amounts: tuple[int, ...]  # token units, one per collateral in deployment order; 0 = not held
    borrow: int  # debt-asset units


def plan_positions(n: int, assets: Sequence[dict[str, Any]], debt_decimals: int, rng: random.Random) -> list[Position]:
    """N positions at the deployment's prices: 1-3 collaterals each, borrowed to a random share of borrowing power
    (70 % of accounts above 80 %, so that after the price drop many sit near health 1)."""
    out = []
    for _ in range(n):
        count = rng.choices((1, 2, 3), weights=ASSET_COUNT_WEIGHTS)[0]
        held = set(rng.sample(range(len(assets)), count))
        amounts = []
        power = 0.0
        for i, a in enumerate(assets):
            if i not in held:
                amounts.append(0)
                continue
            usd = math.exp(rng.uniform(math.log(COLLATERAL_USD[0]), math.log(COLLATERAL_USD[1])))
            amount = int(usd / a["price"] * 10 ** a["decimals"])
            amounts.append(amount)
            power += amount / 10 ** a["decimals"] * a["price"] * a["ltv"]
        used = rng.uniform(0.8, 0.995) if rng.random() < 0.7 else rng.uniform(0.2, 0.8)
        out.append(Position(tuple(amounts), int(power * used * 10**debt_decimals)))
    return out


def cache_key(n: int, project: Any, config: dict[str, Any]) -> str:
    h = hashlib.sha256(f"{SEED_VERSION}:{n}:{json.dumps(config, sort_keys=True)}".encode())
    for name in KEYED:
        h.update(name.encode())
        h.update(bytes.fromhex(project[name].contract_type.deployment_bytecode.bytecode.removeprefix("0x")))
    return h.hexdigest()[:16]


class Seeder:
    """Sends transactions from an unlocked Anvil account over plain web3 and checks each one succeeded."""

    def __init__(self, w3: Web3, sender: str) -> None:
        self.w3 = w3
        self.sender = sender
        self.sent = 0

    def send(self, call: Any, gas: int = 5_000_000) -> Any:
        tx_hash = call.transact({"from": self.sender, "gas": gas})
        receipt = self.w3.eth.wait_for_transaction_receipt(tx_hash, poll_latency=0.01)
        self.sent += 1
        if receipt["status"] != 1:
            raise RuntimeError(f"seeding transaction {tx_hash.hex()} reverted")
        return receipt


def seed(n: int, out: Path, project: Any, gas: Any) -> None:
    """Deploy the test market on a new Anvil, open N borrowing positions, move prices, dump the chain into `out`."""
    from ape import accounts, chain, networks

    ck = gas.conftest.ck_system
    config = gas.conftest.TEST_CONFIG
    tmp = Path(tempfile.mkdtemp(prefix=f"{out.name}.", dir=out.parent))
    try:
        # Keep only the last block's transactions: the state file then holds balances, not 200 blocks of calldata.
        with anvil("--dump-state", str(tmp / "state.json"), "--transaction-block-keeper", "1") as url:
            with networks.ethereum.local.use_provider("foundry", provider_settings={"host": url}):
                dep = ck.deploy_system(project, chain, accounts.test_accounts[0], ck.parse_config(config), "scan")
            ck.write_deployment(dep, tmp)
            say(f"seed: market deployed on {url}")
            pairs = open_positions(
                n,
                connect(url, timeout_s=600),
                load_deployment(tmp / f"{CHAIN_ID}.json"),
                project,
                {a["symbol"]: float(a["price"]) for a in config["asset"]},
            )
            (tmp / "accounts.json").write_text(json.dumps(pairs))
        if not (tmp / "state.json").exists():
            raise RuntimeError("anvil wrote no state file")
        for stale in CACHE.glob(f"scan-{n}-*"):
            if stale.is_dir() and stale != tmp:
                shutil.rmtree(stale)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    say(f"seed: cached in {out.relative_to(ROOT)} ({(out / 'state.json').stat().st_size / 2**20:.0f} MB)")


def open_positions(n: int, w3: Web3, dep: Deployment, project: Any, prices: dict[str, float]) -> list[tuple[str, int]]:
    """Fund the vault, open N positions through BulkBorrowers, then move prices; returns the (owner, subId) pairs."""
    s = Seeder(w3, w3.eth.accounts[0])
    usdc = contract(w3, dep, "MockERC20", dep.debt.token)
    liquidity = n * LIQUIDITY_PER_ACCOUNT_USD * 10**dep.debt.decimals
    s.send(usdc.functions.mint(s.sender, liquidity))
    s.send(usdc.functions.approve(dep.vault, liquidity))
    s.send(contract(w3, dep, "Vault").functions.deposit(liquidity, s.sender))

    specs = [
        {"price": prices[a.symbol], "decimals": a.decimals, "ltv": ltv}
        for a, ltv in zip(dep.assets, _ltvs(w3, dep), strict=True)
    ]
    plan = plan_positions(n, specs, dep.debt.decimals, random.Random(n))
    bulk = project.BulkBorrower.contract_type
    factory = w3.eth.contract(
        abi=[x.model_dump(mode="json") for x in bulk.abi], bytecode=bulk.deployment_bytecode.bytecode
    )
    tokens = [a.token for a in dep.assets]
    pairs: list[tuple[str, int]] = []
    started = time.monotonic()
    for first in range(0, n, SUBS_PER_BORROWER):
        group = plan[first : first + SUBS_PER_BORROWER]
        borrower = w3.eth.contract(
            address=s.send(factory.constructor(dep.engine, tokens))["contractAddress"], abi=factory.abi
        )
        for i, token in enumerate(tokens):
            if total := sum(p.amounts[i] for p in group):
                s.send(contract(w3, dep, "MockERC20", token).functions.mint(borrower.address, total))
        done = 0
        while done < len(group):
            rest = [(list(p.amounts), p.borrow) for p in group[done:]]
            s.send(borrower.functions.open(rest, OPEN_GAS_RESERVE), gas=OPEN_TX_GAS)
            opened: int = borrower.functions.opened().call()
            if opened == done:
                raise RuntimeError("BulkBorrower.open opened nothing: raise OPEN_TX_GAS")
            done = opened
        pairs += [(borrower.address, sub) for sub in range(len(group))]
        say(f"seed: {len(pairs):,}/{n:,} accounts, {s.sent} transactions, {time.monotonic() - started:.1f} s")

    for a in dep.assets:
        feed = contract(w3, dep, "MockAggregator", a.feed)
        answer: int = feed.functions.latestAnswer().call()
        s.send(feed.functions.setAnswer(answer * round(PRICE_MOVE[a.symbol] * 100) // 100))
    say(
        f"seed: prices moved {', '.join(f'{k} {round((v - 1) * 100):+d} %' for k, v in PRICE_MOVE.items())}; "
        f"{s.sent} transactions in all"
    )
    return pairs


def _ltvs(w3: Web3, dep: Deployment) -> list[float]:
    engine = contract(w3, dep, "MarginEngine")
    return [engine.functions.assetConfig(a.token).call()[3] / WAD for a in dep.assets]


def prepare(n: int, reseed: bool) -> Path:
    """The cache directory for N accounts, seeding it first when missing (runs in the child process: uses ape)."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import gas  # the fixtures' market config and deploy library, as benchmarks/gas.py loads them
    from ape import Project
    from ape.logging import logger

    logger.set_level("WARNING")  # not one line per deployment transaction
    project = Project(ROOT)
    out = CACHE / f"scan-{n}-{cache_key(n, project, gas.conftest.TEST_CONFIG)}"
    if reseed or not all((out / f).exists() for f in ("state.json", "accounts.json", f"{CHAIN_ID}.json")):
        CACHE.mkdir(parents=True, exist_ok=True)
        seed(n, out, project, gas)
    else:
        say(f"seed: reusing {out.relative_to(ROOT)}")
    return out


def prepare_in_child(n: int, reseed: bool) -> Path:
    """Run `prepare` in a child process (ape's memory stays out of the measurement); relay its progress lines."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    cmd = [sys.executable, __file__, "--accounts", str(n), "--prepare", *(["--reseed"] if reseed else [])]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None
    where = None
    for line in proc.stdout:
        if line.startswith("prepared "):
            where = Path(line.removeprefix("prepared ").strip())
        else:
            say(line.rstrip("\n"))
    if proc.wait() != 0 or where is None:
        raise SystemExit(f"seeding failed (exit {proc.returncode})")
    return where


# --------------------------------------------------------------------------------------------- measuring


def refresh_feeds(w3: Web3, dep: Deployment) -> None:
    """Push every feed's current answer again: the cached chain's rounds are older than the router's staleness limit."""
    sender = w3.eth.accounts[0]
    for feed_address in [dep.debt.feed, *(a.feed for a in dep.assets)]:
        feed = contract(w3, dep, "MockAggregator", feed_address)
        tx = feed.functions.setAnswer(feed.functions.latestAnswer().call()).transact({"from": sender})
        w3.eth.wait_for_transaction_receipt(tx, poll_latency=0.01)


@dataclass
class Refresh:
    market: snapshot.Market
    accounts: list[snapshot.Account]
    healths: list[risk.Health | None]
    seconds: float


def batched(lens: Contract, pairs: Sequence[tuple[str, int]], chunk: int, pool: ThreadPoolExecutor) -> Refresh:
    """One full refresh: the market, every account in chunks (pool-many calls in flight, all at the market's block),
    and the mirror's health of each account, evaluated as its chunk arrives."""
    started = time.perf_counter()
    market = state.read_market(lens)

    def read(part: Sequence[tuple[str, int]]) -> list[snapshot.Account]:
        return state.read_accounts(lens, part, block=market.block, chunk=chunk)

    accounts: list[snapshot.Account] = []
    healths: list[risk.Health | None] = []
    for rows in pool.map(read, [pairs[i : i + chunk] for i in range(0, len(pairs), chunk)]):
        accounts += rows
        healths += [snapshot.health_of(a, market) for a in rows]
    return Refresh(market, accounts, healths, time.perf_counter() - started)


def naive(engine: Contract, pairs: Sequence[tuple[str, int]], block: int) -> tuple[list[Any], float]:
    """One `accountHealth` eth_call per account, in turn."""
    started = time.perf_counter()
    out = [engine.functions.accountHealth(owner, sub).call(block_identifier=block) for owner, sub in pairs]
    return out, time.perf_counter() - started


def mismatches(pairs: Sequence[tuple[str, int]], mirrored: Sequence[risk.Health | None], onchain: Sequence[Any]) -> int:
    """How many accounts' mirrored health differs from the engine's, field for field (the first three are shown)."""
    bad = 0
    for (owner, sub), mine, theirs in zip(pairs, mirrored, onchain, strict=True):
        fields = (
            None
            if mine is None
            else (mine.collateral_value, mine.lt_weighted, mine.ltv_weighted, mine.debt, mine.debt_value, mine.health)
        )
        if fields != tuple(theirs):
            bad += 1
            if bad <= 3:
                say(f"mismatch {owner}/{sub}: mirror {fields}, engine {tuple(theirs)}")
    return bad


def distribution(healths: Sequence[risk.Health | None]) -> str:
    values = [h.health for h in healths if h is not None]
    below = sum(1 for v in values if v < WAD)
    near = sum(1 for v in values if WAD <= v < WAD * 105 // 100)
    return f"{len(values):,} priced, {below:,} liquidatable (health < 1), {near:,} in [1, 1.05)"


def load() -> str:
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def sweep(lens: Contract, pairs: Sequence[tuple[str, int]]) -> None:
    for chunk in SWEEP_CHUNKS:
        for threads in SWEEP_THREADS:
            with ThreadPoolExecutor(threads) as pool:
                times = [batched(lens, pairs, chunk, pool).seconds for _ in range(3)]
            say(f"sweep: chunk {chunk}, {threads} in flight: median of 3 {statistics.median(times):.3f} s")


def measure(cache: Path, n: int, args: argparse.Namespace) -> tuple[float, float]:
    """Batched refresh (median of args.reps after a warm-up) and naive scan, in seconds, on the cached chain."""
    raw = json.loads((cache / "accounts.json").read_text())
    pairs = [(Web3.to_checksum_address(owner), int(sub)) for owner, sub in raw]
    if len(pairs) != n:
        raise SystemExit(f"{cache / 'accounts.json'} lists {len(pairs)} accounts, not {n}: run with --reseed")
    with anvil("--load-state", str(cache / "state.json")) as url:
        w3 = connect(url, timeout_s=600)
        dep = load_deployment(cache / f"{CHAIN_ID}.json", CHAIN_ID)
        refresh_feeds(w3, dep)
        lens = contract(w3, dep, "Lens")
        engine = contract(w3, dep, "MarginEngine")
        say(f"node: {url} loaded from {cache.relative_to(ROOT)} at block {w3.eth.block_number}; {load()}")
        if args.sweep:
            sweep(lens, pairs)

        with ThreadPoolExecutor(args.threads) as pool:
            ref = batched(lens, pairs, args.chunk, pool)
            say(f"batched warm-up: {ref.seconds:.3f} s; {distribution(ref.healths)}")
            runs = []
            for i in range(args.reps):
                ref = batched(lens, pairs, args.chunk, pool)
                runs.append(ref.seconds)
                say(
                    f"batched run {i + 1}/{args.reps}: {ref.seconds:.3f} s ({args.chunk} accounts per Lens call, "
                    f"{args.threads} in flight)"
                )
        got = [(a.owner, a.sub_id) for a in ref.accounts]
        if got != pairs:
            raise SystemExit(f"the batched read returned {len(got):,} accounts, not the {n:,} asked for, in order")

        sample = (
            pairs
            if args.naive_sample <= 0 or args.naive_sample >= n
            else random.Random(0).sample(pairs, args.naive_sample)
        )
        onchain, naive_s = naive(engine, sample, ref.market.block)
        if len(sample) < n:
            say(
                f"naive: {len(sample):,} of {n:,} accounts (random sample) in {naive_s:.3f} s, "
                f"EXTRAPOLATED to {naive_s * n / len(sample):.3f} s for {n:,}"
            )
            naive_s = naive_s * n / len(sample)
        else:
            say(f"naive: {n:,} accounts in {naive_s:.3f} s")

        mirrored = dict(zip(pairs, ref.healths, strict=True))
        bad = mismatches(sample, [mirrored[p] for p in sample], onchain)
        if bad:
            raise SystemExit(
                f"the mirror disagrees with MarginEngine.accountHealth on {bad:,} of {len(sample):,} accounts"
            )
        say(
            f"check: the mirror's health equals MarginEngine.accountHealth on all {len(sample):,} accounts "
            f"read naively; {load()}"
        )
    return statistics.median(runs), naive_s


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--accounts", type=int, required=True, help="borrowing sub-accounts to seed and scan")
    parser.add_argument("--reps", type=int, default=5, help="batched repetitions (median reported); default 5")
    parser.add_argument(
        "--chunk", type=int, default=DEFAULT_CHUNK, help=f"accounts per Lens call; default {DEFAULT_CHUNK}"
    )
    parser.add_argument(
        "--threads", type=int, default=DEFAULT_THREADS, help=f"Lens calls in flight; default {DEFAULT_THREADS}"
    )
    parser.add_argument(
        "--naive-sample",
        type=int,
        default=0,
        help="time the naive scan on this many accounts and extrapolate (0 = all)",
    )
    parser.add_argument("--sweep", action="store_true", help="first time every chunk size and thread count")
    parser.add_argument("--reseed", action="store_true", help="seed again even when a cached chain exists")
    parser.add_argument("--prepare", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.accounts < 1:
        parser.error("--accounts must be at least 1")

    if args.prepare:
        print(f"prepared {prepare(args.accounts, args.reseed)}", flush=True)
        return 0
    cache = prepare_in_child(args.accounts, args.reseed)
    batched_s, naive_s = measure(cache, args.accounts, args)
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    say(
        f"scan accounts={args.accounts} batched_s={batched_s:.3f} naive_s={naive_s:.3f} "
        f"speedup={naive_s / batched_s:.1f} rss_mb={rss_mb:.0f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
