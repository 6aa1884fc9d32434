// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {IMarginEngineTypes} from "./IMarginEngine.sol";

/// @title IScenarioGrid
/// @notice The scenario grid's governance and view, served at the MarginEngine's address: the engine's fallback
/// runs them in its EngineModule by DELEGATECALL (the engine has no room for them). Call the engine through this
/// interface. The rule and its units are in docs/portfolio-margin.md; multipliers are whole millionths, packed
/// eight 32-bit values a word (scenario `i` in bits `[32·(i % 8), 32·(i % 8) + 32)` of word `i / 8`).
interface IScenarioGrid is IMarginEngineTypes {
    /// @notice Sets the grid at once (admin, like `setAssetConfig`): `count` scenarios (0 returns to the additive
    /// rule and ignores the rest), the initial scale, and one column for every listed asset and the debt asset.
    /// Ends any ramp. Emits `GridSet` and a `GridColumnSet` per asset. While a grid is in force, `listAsset`
    /// gives the new asset the column "its lt in every scenario" (no correlation credit until the grid is set
    /// again).
    function setGrid(uint8 count, uint64 initialScale, address[] calldata assets, uint256[4][] calldata columns)
        external;

    /// @notice Sets the risk keeper's bounds for some assets and its limits (admin).
    function setGridBounds(
        address[] calldata assets,
        uint256[4][] calldata lower,
        uint256[4][] calldata upper,
        GridLimits calldata limits
    ) external;

    /// @notice The risk keeper's move of some assets' columns: each multiplier within its bounds and at most
    /// `maxStep` from the one in force, no sooner than `minInterval` after the last update. Every column (also
    /// the ones not named) then ramps from the one in force now to its target over `rampDuration`, so no account
    /// is liquidated by the update at the moment it is made. Emits `GridUpdated` and `GridColumnSet`s.
    function updateGrid(address[] calldata assets, uint256[4][] calldata columns) external;

    /// @notice The grid as it concerns `asset` (a listed asset or the debt asset).
    function grid(address asset) external view returns (GridView memory);
}
