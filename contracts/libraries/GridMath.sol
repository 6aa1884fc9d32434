// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {RiskMath} from "./RiskMath.sol";

/// @title GridMath
/// @notice Portfolio margin by a scenario grid: the lowest ratio of an account's long value to its short value over
/// a grid of joint price moves. A scenario moves every listed asset's price by a multiplier; each asset's
/// multipliers are stored as one column of `WORDS` words, eight 32-bit multipliers in millionths a word (scenario
/// `i` in bits `[32·(i % 8), 32·(i % 8) + 32)` of word `i / 8`). Long legs (collateral) are valued down and their
/// moved value rounded down, short legs (debts) up and up: every rounding is against the account.
/// `keeper/core/grid.py` mirrors it to the wei.
library GridMath {
    using RiskMath for uint256;

    uint256 internal constant MAX_SCENARIOS = 32;
    uint256 internal constant MOVES_PER_WORD = 8;
    uint256 internal constant WORDS = MAX_SCENARIOS / MOVES_PER_WORD;
    /// @dev One millionth in WAD: a stored multiplier `m` is `m * MOVE_UNIT` in WAD.
    uint256 internal constant MOVE_UNIT = 1e12;
    uint256 internal constant MIN_MOVE = 1e14;
    uint256 internal constant MAX_MOVE = 100e18;

    /// @notice One position: its USD value (WAD) before any move, already rounded against the account, and its
    /// asset's column.
    struct Leg {
        uint256 value;
        uint256[WORDS] column;
    }

    struct Result {
        uint256 health; // WAD, rounded down; type(uint256).max without short value
        uint256 binding; // the scenario setting the health (the first of equals); type(uint256).max without shorts
        uint256 longValue; // long value under the binding scenario
        uint256 shortValue; // short value under the binding scenario
    }

    error InvalidScenarioCount(uint256 count);
    /// @dev A leg's column has no multiplier for a scenario the grid uses: fail closed rather than price it at 0.
    error UnsetMove(uint256 scenario);

    /// @notice The multiplier of `column` in scenario `i`, in whole millionths (as stored).
    function millionths(uint256[WORDS] memory column, uint256 i) internal pure returns (uint256) {
        return (column[i / MOVES_PER_WORD] >> (32 * (i % MOVES_PER_WORD))) & 0xFFFFFFFF;
    }

    /// @notice The multiplier (WAD) of `column` in scenario `i`.
    function move(uint256[WORDS] memory column, uint256 i) internal pure returns (uint256) {
        return millionths(column, i) * MOVE_UNIT;
    }

    /// @notice The grid health of `longs` against `shorts` over the grid's first `count` scenarios.
    /// @dev A stored multiplier `m` is `m · 1e12` in WAD, so `wMulDown(v, m · 1e12) = ⌊v · m / 1e6⌋` exactly (and the
    /// same for rounding up): the loop multiplies by the stored millionths directly. Each leg's value is checked
    /// once to be below 2^224, so `value · m` (m < 2^32) cannot overflow inside the unchecked loop; the sums are
    /// checked for overflow there, and the division by the short value is checked Solidity.
    function health(Leg[] memory longs, Leg[] memory shorts, uint256 count) internal pure returns (Result memory r) {
        if (count == 0 || count > MAX_SCENARIOS) revert InvalidScenarioCount(count);
        _checkValues(longs);
        _checkValues(shorts);
        r.health = type(uint256).max;
        r.binding = type(uint256).max;
        for (uint256 s; s < count;) {
            uint256 shortValue = _moved(shorts, s, true);
            if (shortValue != 0) {
                uint256 longValue = _moved(longs, s, false);
                uint256 h = longValue.wDivDown(shortValue);
                if (h < r.health) (r.health, r.binding, r.longValue, r.shortValue) = (h, s, longValue, shortValue);
            }
            unchecked {
                ++s;
            }
        }
    }

    error LegValueTooLarge(uint256 value);

    function _checkValues(Leg[] memory legs) private pure {
        for (uint256 k; k < legs.length; ++k) {
            if (legs[k].value >> 224 != 0) revert LegValueTooLarge(legs[k].value);
        }
    }

    /// @dev Σ value · m_s / 1e6 over `legs`, each term rounded up or down; reverts on an unset multiplier or an
    /// overflowing sum.
    function _moved(Leg[] memory legs, uint256 s, bool up) private pure returns (uint256 total) {
        uint256 word = s >> 3;
        uint256 shift = (s & 7) << 5;
        bool unset;
        bool overflow;
        assembly ("memory-safe") {
            let n := mload(legs)
            let slot := add(legs, 0x20)
            let round := mul(up, 999999)
            for { let k := 0 } lt(k, n) { k := add(k, 1) } {
                let leg := mload(add(slot, shl(5, k)))
                let m := and(shr(shift, mload(add(mload(add(leg, 0x20)), shl(5, word)))), 0xFFFFFFFF)
                if iszero(m) { unset := 1 }
                let term := div(add(mul(mload(leg), m), round), 1000000)
                let next := add(total, term)
                if lt(next, total) { overflow := 1 }
                total := next
            }
        }
        if (unset) revert UnsetMove(s);
        if (overflow) revert LegValueTooLarge(total);
    }
}
