"""The drill's hand on the node: price and sequencer updates, token balances, blocks mined until the pool drains."""

from __future__ import annotations

from keeper.chain.node import Rpc, deal, find_balance_slot
from keeper.core.units import GWEI
from keeper.drills.record import DrillError
from keeper.drills.system import System, calldata

DRIVER_TIP = 100 * GWEI  # the drill's price updates go first in their block, as oracle transmissions do
DRIVER_MAX_FEE = 100_000 * GWEI
SEQUENCER_UP, SEQUENCER_DOWN = 0, 1


class Driver:
    """Pushes prices and faults, funds and seeds accounts, mines blocks. Signs nothing itself: the node signs for
    its dev accounts and for impersonated addresses."""

    def __init__(self, rpc: Rpc, system: System, driver: str) -> None:
        self.rpc = rpc
        self.sys = system
        self.me = driver
        self._layouts: dict[str, tuple[int, bool]] = {}
        self.updated_at: dict[str, int] = {}

    def send(self, sender: str, to: str, data: str, gas: int = 500_000, tip: int = DRIVER_TIP) -> str:
        return self.rpc.send(
            {
                "from": sender,
                "to": to,
                "data": data,
                "gas": hex(gas),
                "maxFeePerGas": hex(DRIVER_MAX_FEE),
                "maxPriorityFeePerGas": hex(tip),
            }
        )

    def deal(self, symbol: str, owner: str, amount: int) -> None:
        token = self.sys.tokens[symbol]
        if token not in self._layouts:
            self._layouts[token] = find_balance_slot(self.rpc, token, self.me)
        deal(self.rpc, token, owner, amount, self._layouts[token])

    def answer(self, symbol: str, usd: float) -> int:
        scale: int = 10 ** self.sys.feed_decimals[symbol]
        return round(usd * scale)

    def push(self, symbol: str, answer: int, at: int) -> None:
        """Send `answer` to the symbol's feed, to land in the block stamped `at`."""
        feed = self.sys.contract("MockAggregator", self.sys.feeds[symbol])
        self.send(self.me, feed.address, calldata(feed, "setAnswer", answer), gas=120_000)
        self.updated_at[symbol] = at

    def push_usd(self, symbol: str, usd: float, at: int) -> None:
        self.push(symbol, self.answer(symbol, usd), at)

    def sequencer(self, status: int, at: int) -> None:
        """Set the sequencer feed's status, reported as of `at`."""
        assert self.sys.sequencer_feed is not None
        feed = self.sys.contract("MockAggregator", self.sys.sequencer_feed)
        self.send(self.me, feed.address, calldata(feed, "setAnswerAt", status, at, at), gas=120_000)

    def mine_all(self, timestamp: int | None = None, limit: int = 10_000) -> list[int]:
        """Mine until the pool is empty; the numbers of the blocks mined."""
        mined = []
        while self.rpc.pool_size() > 0:
            self.rpc.mine(timestamp)
            mined.append(self.rpc.block_number())
            timestamp = None if timestamp is None else timestamp + 1
            if len(mined) > limit:
                raise DrillError("the node's pool does not drain: transactions are stuck (fee too low?)")
        return mined

    def check_mined(self, hashes: list[str], what: str) -> None:
        for h in hashes:
            receipt = self.rpc.receipt(h)
            if receipt is None or int(receipt["status"], 16) != 1:
                raise DrillError(f"{what} failed in transaction {h}; the drill cannot seed this deployment")
