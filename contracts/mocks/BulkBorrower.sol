// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {IMarginEngine} from "../interfaces/IMarginEngine.sol";

/// @title BulkBorrower
/// @notice Benchmark helper: owns up to 256 sub-accounts of a MarginEngine and opens many borrowing positions per
/// transaction, so benchmarks/scan.py can seed 10,000 accounts in about a hundred transactions. Borrowing must be done
/// by the account's owner; this contract is that owner. Collateral is minted to it beforehand (MockERC20's open
/// mint); the borrowed debt asset stays here.
contract BulkBorrower {
    /// @notice One position to open: `amounts[i]` of `tokens[i]` as collateral (0 = none), then borrow `borrow`
    /// debt-asset units.
    struct Position {
        uint256[] amounts;
        uint256 borrow;
    }

    error LengthMismatch(uint256 expected, uint256 got);
    error AllSubAccountsUsed();

    event Opened(uint8 firstSubId, uint256 count);

    IMarginEngine public immutable engine;
    address[] public tokens;
    /// @notice Sub-accounts opened so far; the next position goes into sub-account `opened`.
    uint256 public opened;

    /// @param engine_ the MarginEngine.
    /// @param tokens_ the collateral tokens a Position's `amounts` refer to, in order; each is approved once here.
    constructor(IMarginEngine engine_, address[] memory tokens_) {
        engine = engine_;
        tokens = tokens_;
        for (uint256 i; i < tokens_.length; ++i) {
            IERC20(tokens_[i]).approve(address(engine_), type(uint256).max);
        }
    }

    /// @notice Opens `positions` in order, each in the next unused sub-account, and stops early (without reverting)
    /// once less than `gasReserve` gas is left, so one transaction never runs out of gas halfway through a position.
    /// @return count how many positions were opened; the caller sends the rest again.
    function open(Position[] calldata positions, uint256 gasReserve) external returns (uint256 count) {
        uint256 next = opened;
        uint256 n = tokens.length;
        for (; count < positions.length && gasleft() > gasReserve; ++count) {
            if (next + count > type(uint8).max) revert AllSubAccountsUsed();
            Position calldata p = positions[count];
            if (p.amounts.length != n) revert LengthMismatch(n, p.amounts.length);
            // Cannot truncate: checked against type(uint8).max above.
            uint8 subId = uint8(next + count);
            for (uint256 i; i < n; ++i) {
                if (p.amounts[i] > 0) engine.deposit(address(this), subId, tokens[i], p.amounts[i]);
            }
            if (p.borrow > 0) engine.borrow(subId, p.borrow, address(this));
        }
        opened = next + count;
        if (count > 0) emit Opened(uint8(next), count);
    }
}
