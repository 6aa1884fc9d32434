// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {IMarginEngine} from "./IMarginEngine.sol";

/// @title ILens
/// @notice Batch reads for keepers: many accounts' balances and debt, every market price, in one `eth_call`.
/// Prices that the router refuses are reported with `ok = false` and the router's revert data instead of reverting
/// the whole batch, so one broken feed does not blind a keeper to every other asset.
interface ILens {
    struct AccountData {
        address owner;
        uint8 subId;
        uint256 scaledDebt;
        uint256 debt; // debt-asset units at the current index, rounded up
        uint32 assetMask;
        uint256[] balances; // one per listed asset, in `assetList()` order
    }

    struct PriceData {
        address asset;
        bool ok;
        uint256 price; // WAD USD per whole token; 0 when !ok
        bytes error; // the router's revert data when !ok
    }

    struct MarketData {
        uint256 blockNumber;
        uint256 timestamp;
        uint256 borrowIndex; // RAY
        address debtAsset;
        uint8 debtDecimals;
        PriceData debtPrice;
        address[] assets;
        IMarginEngine.AssetConfig[] configs;
        PriceData[] prices;
        IMarginEngine.RiskParams params;
    }

    /// @notice The engine's scenario grid in force at this block (docs/portfolio-margin.md). `count` 0: the
    /// additive rule, and nothing else is filled. Otherwise `columns[i]` is the column in force now (ramps
    /// applied) of `assets[i]` of `market()`, then one per debt asset in `debts()` order (the primary first; a
    /// debt asset that is also a collateral repeats its column); multipliers in whole millionths, eight 32-bit
    /// values a word.
    struct GridData {
        uint8 count;
        uint64 initialScale;
        uint40 rampStart;
        uint40 rampEnd;
        uint256[4][] columns;
    }

    struct DebtData {
        IMarginEngine.DebtConfig config;
        uint256 borrowIndex; // RAY
        PriceData price;
    }

    struct HealthData {
        bool ok; // false when a needed price is invalid
        IMarginEngine.AccountHealth health;
    }

    /// @notice The engine this lens reads.
    function engine() external view returns (IMarginEngine);

    /// @notice Balances and debt of each `(owners[i], subIds[i])`. Reverts if the arrays differ in length.
    function accounts(address[] calldata owners, uint8[] calldata subIds) external view returns (AccountData[] memory);

    /// @notice Every listed asset's configuration and price, the debt asset's price and the borrow index.
    function market() external view returns (MarketData memory);

    /// @notice The grid in force at this block, every asset's column in one call (see GridData).
    function grid() external view returns (GridData memory);

    /// @notice Every debt asset (`engine.debtAssets()` order, the primary first): its configuration, its vault's
    /// borrow index now and the router's verdict on its price.
    function debts() external view returns (DebtData[] memory);

    /// @notice Each account's scaled debt in every debt asset (`debtAssets()` order); `debts()` has each vault's
    /// borrow index, which turns it into assets (rounded up, as the engine rounds a debt).
    function accountDebts(address[] calldata owners, uint8[] calldata subIds) external view returns (uint256[][] memory);

    /// @notice The engine's own health figures for each account (one engine view call per account): the strict
    /// valuation of new risk, `ok = false` when any needed price is invalid.
    function healths(address[] calldata owners, uint8[] calldata subIds) external view returns (HealthData[] memory);

    /// @notice Each account as `liquidate` values it (`MarginEngine.liquidationHealth`: a held asset without a valid
    /// price counts at zero); `ok = false` only when the debt asset's price is invalid or the figures overflow.
    function liquidationHealths(address[] calldata owners, uint8[] calldata subIds)
        external
        view
        returns (HealthData[] memory);
}
