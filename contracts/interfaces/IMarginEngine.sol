// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

/// @title IMarginEngine
/// @notice Cross-margin accounts over several collateral assets, borrowing one debt asset from the Vault.
/// An account is `(owner, subId)`, subId 0..255; each sub-account is its own margin unit.
///
/// Units: ratios (ltv, lt, discounts, health) are WAD (1e18 = 100 %); prices are WAD USD per whole token from the
/// OracleRouter; USD values are WAD; token amounts are in each token's own decimals; scaled debt is debt-asset
/// units divided by the vault's borrow index (RAY).
///
/// Risk model (see docs/contracts.md):
/// - `value_down(c) = balance * price / 10**decimals` rounded down; `debtValue = debt * price / 10**decimals`
///   rounded up, with `debt = scaledDebt * index / RAY` rounded up.
/// - `health = Σ wMulDown(value_down(c_i), lt_i) / debtValue` (rounded down); liquidatable iff debt > 0 and
///   health < 1.
/// - Borrow, withdraw and collateral moves must leave `Σ wMulDown(value_down(c_i), ltv_i) >= debtValue`.
/// - Liquidation discount `d = min(maxDiscount_c, minDiscount + (1 - health))`: a reverse Dutch auction in health.
/// - Close factor: 100 % when `health < fullCloseHealth` or `debtValue <= fullCloseDebtValue`, else 50 %; the 50 %
///   limit is raised to the whole debt when it would leave less than `minDebt`.
/// - Seized collateral `= repaid value * (1 + d) / price`, rounded down; when it exceeds the balance, the whole
///   balance is seized and the repayment lowered to its value / (1 + d), rounded up. No liquidation leaves
///   `0 < debt < minDebt` unless it takes the last collateral (then the rest is bad debt).
/// - A sub-account left with debt and no collateral has the remainder realised as bad debt in the same call.
///
/// Known risks: withdrawals and borrows need valid prices (fail closed); liquidation needs valid prices of the
/// debt asset and the seized collateral, so a broken feed freezes liquidations of that asset until it recovers.
/// An account with no debt can always withdraw everything without any price.
interface IMarginEngine {
    /// @notice Per-asset risk configuration.
    struct AssetConfig {
        bool listed;
        uint8 index; // position in `assetList()` and bit in an account's asset mask
        uint8 decimals; // token decimals
        uint64 ltv; // WAD, initial margin weight (borrowing power)
        uint64 lt; // WAD, liquidation threshold (maintenance weight), ltv < lt
        uint64 maxDiscount; // WAD, cap of the liquidation discount; lt * (1 + maxDiscount) < 1
    }

    /// @notice Per-asset supply accounting.
    struct AssetSupply {
        uint128 supplyCap; // token units; 0 = no new deposits
        uint128 totalSupplied; // token units held as collateral by all accounts
    }

    /// @notice Protocol-wide liquidation parameters.
    struct RiskParams {
        uint64 minDiscount; // WAD, discount at health just below 1
        uint64 fullCloseHealth; // WAD, below this health the close factor is 100 %
        uint128 fullCloseDebtValue; // WAD USD, at or below this debt value the close factor is 100 %
        uint128 minDebt; // debt-asset units, smallest debt a borrow or liquidation may leave (dust rule)
    }

    /// @notice A sub-account's position.
    struct Position {
        uint128 scaledDebt;
        uint32 assetMask; // bit i set iff the account holds asset `assetList()[i]`
    }

    /// @notice Risk figures of a sub-account at current prices.
    struct AccountHealth {
        uint256 collateralValue; // Σ value_down(c_i), WAD USD
        uint256 ltWeighted; // Σ wMulDown(value_down(c_i), lt_i)
        uint256 ltvWeighted; // Σ wMulDown(value_down(c_i), ltv_i), borrowing power
        uint256 debt; // debt-asset units, rounded up
        uint256 debtValue; // WAD USD, rounded up
        uint256 health; // WAD; type(uint256).max when debt is zero
    }

    /// @notice What a liquidation would do.
    struct LiquidationQuote {
        uint256 repaid; // debt-asset units the liquidator pays
        uint256 seized; // collateral units the liquidator receives
        uint256 discount; // WAD
        uint256 maxRepay; // debt-asset units allowed by the close factor and dust rule
        uint256 badDebt; // debt-asset units written off after this liquidation
    }

    error AssetNotListed(address asset);
    error AssetAlreadyListed(address asset);
    error TooManyAssets();
    error InvalidConfig();
    error ZeroAmount();
    error SupplyCapExceeded(address asset, uint256 totalSupplied, uint256 supplyCap);
    error InsufficientCollateral(address asset, uint256 balance, uint256 requested);
    error InsufficientMargin(uint256 borrowingPower, uint256 debtValue);
    error DebtBelowMinimum(uint256 debt, uint256 minDebt);
    error NothingToRepay();
    error SameSubAccount();
    error NotLiquidatable(uint256 health);
    error LiquidationLeavesDust(uint256 remainingDebt, uint256 minDebt);
    error SeizedBelowMinimum(uint256 seized, uint256 minSeized);
    error NothingSeized();
    error ReceivedLess(address asset, uint256 expected, uint256 received);

    event AssetListed(address indexed asset, uint8 index, uint8 decimals);
    event AssetConfigSet(address indexed asset, uint64 ltv, uint64 lt, uint64 maxDiscount, uint128 supplyCap);
    event RiskParamsSet(uint64 minDiscount, uint64 fullCloseHealth, uint128 fullCloseDebtValue, uint128 minDebt);
    event Deposited(address indexed caller, address indexed owner, uint8 indexed subId, address asset, uint256 amount);
    event Withdrawn(address indexed owner, uint8 indexed subId, address asset, uint256 amount, address receiver);
    event CollateralMoved(address indexed owner, uint8 fromSubId, uint8 toSubId, address asset, uint256 amount);
    event Borrowed(address indexed owner, uint8 indexed subId, uint256 assets, uint256 scaled, address receiver);
    event Repaid(address indexed payer, address indexed owner, uint8 indexed subId, uint256 assets, uint256 scaled);
    event Liquidated(
        address indexed liquidator,
        address indexed owner,
        uint8 indexed subId,
        address collateral,
        uint256 repaid,
        uint256 seized,
        uint256 discount
    );
    event BadDebtRealized(address indexed owner, uint8 indexed subId, uint256 assets);

    // ---- user operations ----

    /// @notice Deposits `amount` of collateral `asset` into `(owner, subId)`, pulled from the caller. Anyone may
    /// deposit for anyone. A token that delivers less than `amount` (a transfer fee) is refused with
    /// `ReceivedLess`, so the engine never books collateral it does not hold.
    function deposit(address owner, uint8 subId, address asset, uint256 amount) external;

    /// @notice Withdraws collateral from the caller's sub-account. With debt, needs valid prices, an up sequencer
    /// and leaves borrowing power >= debt value.
    function withdraw(uint8 subId, address asset, uint256 amount, address receiver) external;

    /// @notice Moves collateral between two of the caller's sub-accounts; the giving one must keep its margin.
    function moveCollateral(uint8 fromSubId, uint8 toSubId, address asset, uint256 amount) external;

    /// @notice Borrows `assets` of the debt asset from the vault against the caller's sub-account.
    function borrow(uint8 subId, uint256 assets, address receiver) external;

    /// @notice Repays debt of `(owner, subId)` from the caller; `type(uint256).max` repays all. Anyone may repay
    /// for anyone. Must leave zero or at least `minDebt`. Returns the assets repaid.
    function repay(address owner, uint8 subId, uint256 assets) external returns (uint256 repaid);

    /// @notice Liquidates an unhealthy sub-account: repays up to `repayAssets` (capped by `maxRepay`) and seizes
    /// `collateral` at the current discount, sent to `receiver`. With non-empty `data` the engine calls
    /// `ILiquidationCallback.onLiquidation` on the caller after sending the collateral and before pulling the
    /// repayment. Never blocked by the sequencer gate.
    function liquidate(
        address owner,
        uint8 subId,
        address collateral,
        uint256 repayAssets,
        uint256 minSeized,
        address receiver,
        bytes calldata data
    ) external returns (uint256 repaid, uint256 seized);

    // ---- views ----

    function vault() external view returns (address);
    function oracle() external view returns (address);
    function debtAsset() external view returns (address);
    function debtDecimals() external view returns (uint8);
    function assetList() external view returns (address[] memory);
    function assetConfig(address asset) external view returns (AssetConfig memory);
    function assetSupply(address asset) external view returns (AssetSupply memory);
    function riskParams() external view returns (RiskParams memory);
    function collateralOf(address owner, uint8 subId, address asset) external view returns (uint256);
    function position(address owner, uint8 subId) external view returns (Position memory);

    /// @notice Collateral balances of a sub-account, one per listed asset in `assetList()` order.
    function balancesOf(address owner, uint8 subId) external view returns (uint256[] memory);

    /// @notice Current debt of a sub-account including pending interest, rounded up.
    function debtOf(address owner, uint8 subId) external view returns (uint256);

    /// @notice Risk figures at current prices; reverts when a needed price is invalid.
    function accountHealth(address owner, uint8 subId) external view returns (AccountHealth memory);

    /// @notice What `liquidate` would repay and seize now for `repayAssets` requested.
    function previewLiquidation(address owner, uint8 subId, address collateral, uint256 repayAssets)
        external
        view
        returns (LiquidationQuote memory);

    // ---- governance (DEFAULT_ADMIN_ROLE) ----

    /// @notice Lists a new collateral asset (at most 32) with its risk configuration.
    function listAsset(address asset, uint64 ltv, uint64 lt, uint64 maxDiscount, uint128 supplyCap) external;

    /// @notice Updates a listed asset's risk configuration.
    function setAssetConfig(address asset, uint64 ltv, uint64 lt, uint64 maxDiscount, uint128 supplyCap) external;

    /// @notice Updates the protocol-wide liquidation parameters.
    function setRiskParams(RiskParams calldata params) external;
}
