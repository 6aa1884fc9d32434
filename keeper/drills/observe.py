"""What the chain showed after each block, read from the node only (blocks, logs, receipts, pool, eth_call): the
oracle's prices, liquidations, bad debt, pre-liquidations and rebalances, every account's health, and the keeper's
transactions, mined or pending. Never the keeper's own journal or metrics."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from eth_typing import BlockNumber
from eth_utils.crypto import keccak
from hexbytes import HexBytes
from web3 import Web3
from web3.types import LogReceipt

from keeper.chain.node import Rpc
from keeper.chain.reads import read_market
from keeper.core.units import WAD
from keeper.drills.healths import read_healths
from keeper.drills.record import BlockRecord, DrillRecord, KeeperTx, LiquidationRecord
from keeper.drills.system import System
from keeper.engine.keeper import NativePrice


def _topic(signature: str) -> str:
    return "0x" + keccak(text=signature).hex()


TOPIC_LIQUIDATED = _topic("Liquidated(address,address,uint8,address,uint256,uint256,uint256)")
TOPIC_BAD_DEBT = _topic("BadDebtRealized(address,uint8,uint256)")
TOPIC_LIQUIDATED_DEBT = _topic("LiquidatedDebt(address,address,uint8,address,address,uint256,uint256,uint256)")
TOPIC_BAD_DEBT_IN = _topic("BadDebtRealizedIn(address,uint8,address,uint256)")
TOPIC_PRE_LIQUIDATED = _topic("PreLiquidated(address,address,uint8,address,uint256,uint256,uint256,uint256,uint256)")
TOPIC_REBALANCED = _topic("Rebalanced(address,address,uint8,uint8,address,uint256,uint256,uint256)")


class Observer:
    """Reads each mined block into the record. `market` is the scenario's current USD prices (shared with the
    replay, which moves them): the value of an asset whose oracle answer is invalid in a block."""

    def __init__(self, rpc: Rpc, system: System, record: DrillRecord, market: dict[str, float], native: NativePrice):
        self.rpc = rpc
        self.sys = system
        self.rec = record
        self.market = market
        self.native = native
        self.symbol_of: dict[str, str] = {Web3.to_checksum_address(t): s for s, t in system.tokens.items()}
        self.liquidated_accounts: set[tuple[str, int]] = set()
        self.liq_event = system.engine.events.Liquidated()
        self.bad_event = system.engine.events.BadDebtRealized()
        self.several = bool(system.further)  # further debt assets: their events too
        if self.several:
            self.liq_debt_event = system.engine.events.LiquidatedDebt()
            self.bad_in_event = system.engine.events.BadDebtRealizedIn()
        self.module = system.protection
        if self.module is not None:
            self.pre_event = self.module.events.PreLiquidated()
            self.reb_event = self.module.events.Rebalanced()

    # ---- one block

    def after_block(self, s: int) -> BlockRecord:
        """Read the block just mined (at scenario second `s`) into the record; its BlockRecord."""
        block = self.rpc.block("latest", full=True)
        number = int(block["number"], 16)
        keeper = self.rec.keeper.lower()
        for tx in block["transactions"]:
            if str(tx["from"]).lower() == keeper:
                self._mined(tx, number)
        oracle = self._oracle(number)
        self._engine_logs(number, oracle)
        if self.module is not None:
            self._protection_logs(number, oracle)
        ok, health, debt = read_healths(self.rpc, self.sys.lens.address, self.rec.accounts, number)
        rec = BlockRecord(
            number=number,
            timestamp=int(block["timestamp"], 16),
            scenario_s=s,
            base_fee=int(block.get("baseFeePerGas", "0x0"), 16),
            gas_used=int(block["gasUsed"], 16),
            gas_limit=int(block["gasLimit"], 16),
            ok=ok,
            health=health,
            debt=debt,
            oracle=oracle,
        )
        self.rec.blocks.append(rec)
        return rec

    def _oracle(self, number: int) -> dict[str, float | None]:
        """The USD price each feed reported after block `number` (None: invalid), and the native token's price."""
        market = read_market(self.sys.lens, number)
        oracle: dict[str, float | None] = {}
        for view in (market.debt_price, *[a.price for a in market.assets]):
            oracle[self.symbol_of[view.asset]] = view.price / WAD if view.ok else None
        self.rec.eth_usd[number] = self.native.read(market, number) / WAD
        return oracle

    def _price(self, symbol: str, oracle: dict[str, float | None]) -> float:
        got = oracle.get(symbol)
        return got if got is not None else self.market[symbol]

    def _usd(self, symbol: str, units: int, oracle: dict[str, float | None]) -> float:
        scale: int = 10 ** self.sys.decimals[symbol]
        return units / scale * self._price(symbol, oracle)

    def _engine_logs(self, number: int, oracle: dict[str, float | None]) -> None:
        for raw in self.rpc.logs(self.sys.engine.address, number, number):
            topic = str(raw["topics"][0])
            if topic == TOPIC_LIQUIDATED:
                self._liquidation(raw, number, oracle)
            elif topic == TOPIC_BAD_DEBT:
                e = self.bad_event.process_log(_log(raw))["args"]
                usd = self._usd(self.sys.debt_symbol, int(e["assets"]), oracle)
                self.rec.bad_debt.append((number, e["owner"], int(e["subId"]), usd))
            elif self.several and topic == TOPIC_LIQUIDATED_DEBT:
                e = self.liq_debt_event.process_log(_log(raw))["args"]
                debt = self.symbol_of[Web3.to_checksum_address(e["debtAsset"])]
                record = self._liquidation_record(raw, e, number, oracle, e["liquidator"], debt)
                self.rec.liquidations.append(record)
                self.liquidated_accounts.add((record.owner, record.sub_id))
            elif self.several and topic == TOPIC_BAD_DEBT_IN:
                e = self.bad_in_event.process_log(_log(raw))["args"]
                debt = self.symbol_of[Web3.to_checksum_address(e["asset"])]
                usd = self._usd(debt, int(e["assets"]), oracle)
                self.rec.bad_debt.append((number, e["owner"], int(e["subId"]), usd))

    def _liquidation(self, raw: dict[str, Any], number: int, oracle: dict[str, float | None]) -> None:
        e = self.liq_event.process_log(_log(raw))["args"]
        record = self._liquidation_record(raw, e, number, oracle, liquidator=e["liquidator"])
        self.rec.liquidations.append(record)
        self.liquidated_accounts.add((record.owner, record.sub_id))

    def _protection_logs(self, number: int, oracle: dict[str, float | None]) -> None:
        assert self.module is not None
        for raw in self.rpc.logs(self.module.address, number, number):
            topic = str(raw["topics"][0])
            if topic == TOPIC_PRE_LIQUIDATED:
                e = self.pre_event.process_log(_log(raw))["args"]
                self.rec.pre_liquidations.append(
                    self._liquidation_record(raw, e, number, oracle, liquidator=e["caller"])
                )
            elif topic == TOPIC_REBALANCED:
                e = self.reb_event.process_log(_log(raw))["args"]
                owner = Web3.to_checksum_address(e["owner"])
                self.rec.rebalances.append((number, owner, int(e["fromSubId"]), int(e["toSubId"])))

    def _liquidation_record(
        self,
        raw: dict[str, Any],
        e: Mapping[str, Any],
        number: int,
        oracle: dict[str, float | None],
        liquidator: str,
        debt: str | None = None,
    ) -> LiquidationRecord:
        """A Liquidated, LiquidatedDebt (repaying `debt`) or PreLiquidated event's record, valued at the block's
        oracle prices."""
        symbol = self.symbol_of[Web3.to_checksum_address(e["collateral"])]
        repaid, seized = int(e["repaid"]), int(e["seized"])
        return LiquidationRecord(
            block=number,
            tx=str(raw["transactionHash"]),
            log_index=int(raw["logIndex"], 16),
            liquidator=Web3.to_checksum_address(liquidator),
            owner=Web3.to_checksum_address(e["owner"]),
            sub_id=int(e["subId"]),
            collateral=symbol,
            repaid=repaid,
            seized=seized,
            discount=int(e["discount"]),
            repaid_usd=self._usd(debt or self.sys.debt_symbol, repaid, oracle),
            seized_usd=self._usd(symbol, seized, oracle),
        )

    # ---- the keeper's transactions

    def _mined(self, tx: dict[str, Any], number: int) -> None:
        h = str(tx["hash"])
        entry = self.rec.keeper_txs.get(h)
        if entry is None:
            entry = KeeperTx(h, int(tx["nonce"], 16), self._target(str(tx.get("input", "0x"))), -1)
            self.rec.keeper_txs[h] = entry
        receipt = self.rpc.receipt(h)
        assert receipt is not None
        entry.mined_block = number
        entry.status = int(receipt["status"], 16)
        entry.gas_used = int(receipt["gasUsed"], 16)
        entry.gas_cost_wei = entry.gas_used * int(receipt["effectiveGasPrice"], 16)

    def _target(self, data: str) -> tuple[str, int] | None:
        try:
            fn, args = self.sys.engine.decode_function_input(data)
        except ValueError:
            return None
        if fn.fn_name not in ("liquidate", "liquidateDebt"):
            return None
        return Web3.to_checksum_address(args["owner"]), int(args["subId"])

    def inspect_pool(self, number: int) -> None:
        """What the keeper just sent. A new transaction for an account another of the keeper's pending transactions
        (a different nonce) already covers is a duplicate submission; a replacement (same nonce) is not."""
        pending = self.rpc.pending_from(self.rec.keeper)
        by_account: dict[tuple[str, int], set[int]] = {}
        fresh: list[KeeperTx] = []
        for tx in pending:
            h = str(tx["hash"])
            entry = self.rec.keeper_txs.get(h)
            if entry is None:
                entry = KeeperTx(h, int(tx["nonce"], 16), self._target(str(tx.get("input", "0x"))), number)
                self.rec.keeper_txs[h] = entry
                fresh.append(entry)
            if entry.account is not None:
                by_account.setdefault(entry.account, set()).add(entry.nonce)
        for entry in fresh:
            if entry.account is not None and len(by_account[entry.account] - {entry.nonce}) > 0:
                entry.duplicate = True


def _log(raw: dict[str, Any]) -> LogReceipt:
    """A raw eth_getLogs entry in the shape web3's event decoder takes."""
    return LogReceipt(
        address=Web3.to_checksum_address(raw["address"]),
        topics=[HexBytes(bytes.fromhex(str(t)[2:])) for t in raw["topics"]],
        data=HexBytes(bytes.fromhex(str(raw["data"])[2:])),
        blockNumber=BlockNumber(int(raw["blockNumber"], 16)),
        transactionHash=HexBytes(bytes.fromhex(str(raw["transactionHash"])[2:])),
        transactionIndex=int(raw["transactionIndex"], 16),
        blockHash=HexBytes(bytes.fromhex(str(raw["blockHash"])[2:])),
        logIndex=int(raw["logIndex"], 16),
        removed=False,
    )
