// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

/// @title RiskMath
/// @notice Every fixed-point operation of the protocol. The rounding direction is part of each name; callers
/// always pick the direction that favours the protocol (collateral down, debt up, seized down, repaid up).
/// `keeper/risk.py` mirrors these functions one for one.
library RiskMath {
    /// @dev 1.0 in 18-decimal fixed point: ratios (ltv, lt, discount, health) and USD prices per whole token.
    uint256 internal constant WAD = 1e18;
    /// @dev 1.0 in 27-decimal fixed point: the vault's borrow index.
    uint256 internal constant RAY = 1e27;
    /// @dev Seconds per year used to turn yearly rates into per-second growth.
    uint256 internal constant YEAR = 365 days;

    function mulDivDown(uint256 x, uint256 y, uint256 d) internal pure returns (uint256) {
        return (x * y) / d;
    }

    function mulDivUp(uint256 x, uint256 y, uint256 d) internal pure returns (uint256) {
        return (x * y + (d - 1)) / d;
    }

    function wMulDown(uint256 x, uint256 y) internal pure returns (uint256) {
        return mulDivDown(x, y, WAD);
    }

    function wMulUp(uint256 x, uint256 y) internal pure returns (uint256) {
        return mulDivUp(x, y, WAD);
    }

    function wDivDown(uint256 x, uint256 y) internal pure returns (uint256) {
        return mulDivDown(x, WAD, y);
    }

    function wDivUp(uint256 x, uint256 y) internal pure returns (uint256) {
        return mulDivUp(x, WAD, y);
    }

    /// @notice USD value (WAD) of `amount` token units at `price` (WAD USD per whole token), rounded down.
    function valueDown(uint256 amount, uint256 price, uint8 decimals) internal pure returns (uint256) {
        return mulDivDown(amount, price, 10 ** decimals);
    }

    /// @notice USD value (WAD) of `amount` token units at `price`, rounded up.
    function valueUp(uint256 amount, uint256 price, uint8 decimals) internal pure returns (uint256) {
        return mulDivUp(amount, price, 10 ** decimals);
    }

    /// @notice Token units worth `value` USD (WAD) at `price`, rounded down.
    function amountDown(uint256 value, uint256 price, uint8 decimals) internal pure returns (uint256) {
        return mulDivDown(value, 10 ** decimals, price);
    }

    /// @notice Token units worth `value` USD (WAD) at `price`, rounded up.
    function amountUp(uint256 value, uint256 price, uint8 decimals) internal pure returns (uint256) {
        return mulDivUp(value, 10 ** decimals, price);
    }

    /// @notice Debt assets owed for `scaled` debt at borrow index `index` (RAY), rounded up.
    function toAssetsUp(uint256 scaled, uint256 index) internal pure returns (uint256) {
        return mulDivUp(scaled, index, RAY);
    }

    /// @notice Debt assets for `scaled` debt at `index`, rounded down.
    function toAssetsDown(uint256 scaled, uint256 index) internal pure returns (uint256) {
        return mulDivDown(scaled, index, RAY);
    }

    /// @notice Scaled debt created by borrowing `assets` at `index`, rounded up.
    function toScaledUp(uint256 assets, uint256 index) internal pure returns (uint256) {
        return mulDivUp(assets, RAY, index);
    }

    /// @notice Scaled debt extinguished by repaying `assets` at `index`, rounded down.
    function toScaledDown(uint256 assets, uint256 index) internal pure returns (uint256) {
        return mulDivDown(assets, RAY, index);
    }

    /// @notice The value at time `t` on the line from `from` at `start` to `to` at `end` (start < end), held at
    /// `from` before `start` and at `to` from `end` on; rounded down (a ramped lt errs on the lower, safer side).
    function interpolateDown(uint256 from, uint256 to, uint256 start, uint256 end, uint256 t)
        internal
        pure
        returns (uint256)
    {
        if (t >= end) return to;
        if (t <= start) return from;
        // start < t < end: the step is below |from - to|, so neither branch leaves [min(from, to), max(from, to)].
        return from > to
            ? from - mulDivUp(from - to, t - start, end - start)
            : from + mulDivDown(to - from, t - start, end - start);
    }

    function min(uint256 a, uint256 b) internal pure returns (uint256) {
        return a < b ? a : b;
    }

    function max(uint256 a, uint256 b) internal pure returns (uint256) {
        return a > b ? a : b;
    }
}
