// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

/// @title IMarginEngineTypes
/// @notice The engine's structs, errors and events, shared by `MarginEngine` and the `EngineModule` it
/// delegates to; the rules are documented on IMarginEngine.
interface IMarginEngineTypes {
    /// @notice Per-asset risk configuration.
    struct AssetConfig {
        bool listed;
        uint8 index; // position in `assetList()` and bit in an account's asset mask
        uint8 decimals; // token decimals
        uint64 ltv; // WAD, initial margin weight (borrowing power)
        uint64 lt; // WAD, liquidation threshold (maintenance weight), ltv < lt; in storage the target of a ramp,
        // from `assetConfig` the effective value at block.timestamp
        uint64 maxDiscount; // WAD, cap of the liquidation discount; lt * (1 + maxDiscount) < 1
        uint40 rampEnd; // unix seconds; while block.timestamp < rampEnd, the effective lt ramps down to `lt`
    }

    /// @notice A lowering of an asset's lt in progress: from `ltFrom` at `start` to the stored lt at `rampEnd`.
    struct LtRamp {
        uint64 ltFrom; // WAD, the effective lt when the ramp started
        uint40 start; // unix seconds
        uint40 lastUpdate; // unix seconds of the last `updateRiskParams`; `minInterval` counts from it
    }

    /// @notice Governance's limits on the risk keeper's updates of one asset; all zero = keeper updates disabled.
    struct RiskBounds {
        uint64 ltvMin; // WAD, inclusive
        uint64 ltvMax; // WAD, inclusive
        uint64 ltMin; // WAD, inclusive
        uint64 ltMax; // WAD, inclusive, < 1
        uint64 maxStep; // WAD, largest change of ltv, and of the effective lt, in one update; 0 = disabled
        uint32 minInterval; // seconds from one update of the asset to the next
        uint32 rampDuration; // seconds over which a lowered lt is reached, 1 s .. 365 days
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
        uint128 scaledDebt; // in the primary debt asset (`debtAsset()`)
        uint32 assetMask; // bit i set iff the account holds asset `assetList()[i]`
        uint8 debtMask; // bit j (1..7) set iff the account owes debt asset `debtAssets()[j]`; bit 0 is unused
    }

    /// @notice A borrowable asset: the ERC-4626 vault that lends it through this engine (its own interest model,
    /// reserve and bad-debt accounting), its place in `debtAssets()` and the smallest debt a borrow, repayment or
    /// liquidation may leave in it. The primary debt asset is entry 0 (its minimum is `riskParams().minDebt`).
    struct DebtConfig {
        address vault; // address(0): not a debt asset
        uint8 index;
        uint8 decimals;
        uint128 minDebt; // debt-asset units
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

    /// @notice The scenario grid's state beside its scenario count (`gridCount`). A stored grid replaces the
    /// additive rule (see docs/portfolio-margin.md); `initialScale` (WAD, in (0, 1]) makes the initial margin:
    /// new risk needs `health · initialScale >= 1`. While `block.timestamp < rampEnd`, every multiplier in force is
    /// on the line from its `from` column at `rampStart` to its target, rounded towards `from`.
    struct GridConfig {
        uint64 initialScale;
        uint40 rampStart;
        uint40 rampEnd;
        uint40 lastUpdate; // the risk keeper's last update
    }

    /// @notice What the risk keeper may do to the grid: at most `maxStep` millionths per multiplier and update,
    /// no sooner than `minInterval` seconds after its last update; every update ramps over `rampDuration`.
    struct GridLimits {
        uint32 maxStep;
        uint32 minInterval;
        uint32 rampDuration;
    }

    /// @notice Everything about one asset's place in the grid. Columns pack eight 32-bit multipliers (whole
    /// millionths) a word: scenario `i` in bits `[32·(i % 8), 32·(i % 8) + 32)` of word `i / 8`.
    struct GridView {
        uint8 count; // scenarios in force; 0: the additive rule (the default grid)
        GridConfig config;
        GridLimits limits;
        uint256[4] target; // the asset's column as last set
        uint256[4] rampFrom; // where its current ramp started
        uint256[4] effective; // the column in force now
        uint256[4] lower; // the risk keeper's bounds, per scenario (0 and 0: that scenario is not the keeper's)
        uint256[4] upper;
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
    error InvalidRiskBounds(address asset);
    error RiskBoundsNotSet(address asset);
    error OutsideRiskBounds(address asset, uint64 value, uint64 min, uint64 max);
    error RiskStepTooLarge(address asset, uint64 current, uint64 requested, uint64 maxStep);
    error RiskUpdateTooSoon(address asset, uint256 nextAllowed);
    error InvalidRiskUpdate(address asset, uint64 ltv, uint64 lt);
    error NotProtectionModule(address caller);
    error LiquidationLowersHealth(uint256 healthBefore, uint256 healthAfter);
    error NotInsolvent(uint256 coverValue, uint256 debtValue);
    /// @notice A grid of `count` scenarios (1 to 32), or an initial scale outside (0, 1].
    error InvalidGrid(uint256 count, uint64 initialScale);
    /// @notice A grid must give a column to every listed asset and the debt asset, each once, and to nothing else.
    error GridAssetsMismatch(address asset);
    /// @notice Multiplier `m` (millionths) of `asset` in `scenario` is outside [100, 100,000,000] (0.0001 to 100),
    /// or is set for a scenario beyond the grid's count.
    error InvalidMove(address asset, uint256 scenario, uint256 m);
    error InvalidGridBounds(address asset, uint256 scenario);
    error GridNotSet();
    error GridBoundsNotSet();
    error GridOutsideBounds(address asset, uint256 scenario, uint256 m, uint256 lower, uint256 upper);
    error GridStepTooLarge(address asset, uint256 scenario, uint256 current, uint256 requested, uint256 maxStep);
    error GridUpdateTooSoon(uint256 nextAllowed);
    /// @notice `delegateView` was called by someone other than the engine itself.
    error NotSelf(address caller);
    /// @notice `asset` is not a debt asset of this engine.
    error DebtNotListed(address asset);
    error DebtAlreadyListed(address asset);
    /// @notice At most eight debt assets (the primary included).
    error TooManyDebts();
    /// @notice A vault listed as a debt asset must lend through this engine (`setEngine` first).
    error VaultNotBound(address vault);

    event GridSet(uint8 count, uint64 initialScale);
    event GridColumnSet(address indexed asset, uint256[4] column);
    event GridBoundsSet(address indexed asset, uint256[4] lower, uint256[4] upper);
    event GridLimitsSet(uint32 maxStep, uint32 minInterval, uint32 rampDuration);
    event GridUpdated(address indexed keeper, uint40 rampStart, uint40 rampEnd);
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
    event RiskBoundsSet(
        address indexed asset,
        uint64 ltvMin,
        uint64 ltvMax,
        uint64 ltMin,
        uint64 ltMax,
        uint64 maxStep,
        uint32 minInterval,
        uint32 rampDuration
    );
    event ProtectionModuleSet(address indexed module);
    event CollateralSeized(
        address indexed owner, uint8 indexed subId, address asset, uint256 amount, address receiver
    );
    event DebtListed(address indexed asset, address indexed vault, uint8 index, uint8 decimals, uint128 minDebt);
    /// @notice `Borrowed`, `Repaid`, `Liquidated` and `BadDebtRealized` for a debt asset other than the primary.
    event BorrowedAsset(
        address indexed owner, uint8 indexed subId, address indexed asset, uint256 assets, uint256 scaled, address receiver
    );
    event RepaidAsset(
        address payer, address indexed owner, uint8 indexed subId, address indexed asset, uint256 assets, uint256 scaled
    );
    event LiquidatedDebt(
        address liquidator,
        address indexed owner,
        uint8 indexed subId,
        address indexed debtAsset,
        address collateral,
        uint256 repaid,
        uint256 seized,
        uint256 discount
    );
    event BadDebtRealizedIn(address indexed owner, uint8 indexed subId, address indexed asset, uint256 assets);
    event RiskParamsUpdated(
        address indexed asset, address indexed keeper, uint64 ltv, uint64 ltFrom, uint64 ltTarget, uint40 rampEnd
    );
}

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
/// - Liquidation (rules in full on `liquidate`): discount `d = min(maxDiscount_c, minDiscount + (1 - health),
///   health / lt_c - 1)`, a reverse Dutch auction in health that never lowers health; an insolvent account's
///   shortfall is written off before and after, so a certain loss lands on the vault's lenders at once.
/// - Close factor: 100 % when `health < fullCloseHealth` or `debtValue <= fullCloseDebtValue`, else 50 %; the 50 %
///   limit is raised to the whole debt when it would leave less than `minDebt`.
/// - Seized collateral `= repaid value * (1 + d) / price`, rounded down; when it exceeds the balance, the whole
///   balance is seized and the repayment lowered to its value / (1 + d), rounded up. A repayment that leaves part
///   of the collateral must leave 0 or at least `minDebt`; one that takes a whole collateral may leave less.
/// - A sub-account left with debt and no collateral has the remainder realised as bad debt in the same call.
/// - Every health and margin figure uses each asset's *effective* lt: its stored lt, or while a ramp runs
///   (`block.timestamp < rampEnd`) the value on the line from the ramp's `ltFrom` to the stored lt (see
///   `updateRiskParams`), rounded down.
///
/// Known risks: withdrawals and borrows need valid prices of everything the account holds (fail closed).
/// Liquidation needs valid prices of the debt asset and of the seized collateral; any other held asset without a
/// valid price counts at zero. An account with no debt can always withdraw everything without any price.
interface IMarginEngine is IMarginEngineTypes {
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
    /// for anyone. Must leave zero or at least `minDebt`. Returns the assets repaid. The tokens go to the vault
    /// before it books them; if fewer than `repaid` arrive (a transfer fee) it reverts `ReceivedLess`.
    function repay(address owner, uint8 subId, uint256 assets) external returns (uint256 repaid);

    /// @notice Liquidates an unhealthy sub-account: repays up to `repayAssets` (capped by `maxRepay`) and seizes
    /// `collateral` at the current discount, sent to `receiver`. With non-empty `data` the engine calls
    /// `ILiquidationCallback.onLiquidation` on the caller after sending the collateral and before pulling the
    /// repayment. Never blocked by the sequencer gate.
    ///
    /// The rules, in the order they apply (health is the lenient one: a held asset whose price the router refuses
    /// counts at zero, so a dust balance of it cannot freeze the liquidation; the debt asset's price and the
    /// seized collateral's price must be valid):
    /// 1. Liquidatable iff debt > 0 and health < 1, else `NotLiquidatable(health)`; `NothingSeized` when the
    ///    account holds none of `collateral`; the router's error when `collateral` has no valid price.
    /// 2. Insolvency write-off: when every held price is valid and the debt value exceeds the cover value
    ///    `Σ value_down(c_i) / (1 + min(minDiscount, maxDiscount_i))`, the debt above the cover value is written
    ///    off first (as `writeOff` does), so the loss reaches the vault's lenders before this liquidation, and the
    ///    rest of the rules see the written-off position. Under a scenario grid the write-off alone can restore
    ///    health (a scenario may price the debt down further than the collateral): then `NotLiquidatable` with
    ///    the health after it (call `writeOff`).
    /// 3. Discount `d = min(minDiscount + (1 - health), maxDiscount_c, health / lt_c - 1 - 1e-6)` (0 when the last
    ///    term is negative): the reverse Dutch auction, never beyond the discount at which seizing `collateral`
    ///    leaves health unchanged. So splitting a liquidation into small calls cannot raise the discount of the
    ///    next one. When a held price is invalid and the account is insolvent on what can be priced (nothing can
    ///    be written off then), `d = min(that, minDiscount)` instead and rule 6 does not apply.
    /// 4. Close factor: `maxRepay` = all the debt when `health < fullCloseHealth` or `debtValue <=
    ///    fullCloseDebtValue`, else half (rounded up), raised to all when half would leave less than `minDebt`.
    ///    `repaid = min(repayAssets, maxRepay)`, `ZeroAmount` when 0.
    /// 5. Seized `= repaid value * (1 + d) / price` rounded down; above the balance, the whole balance for a
    ///    repayment lowered to its value / (1 + d), rounded up. A repayment that does not take the whole balance
    ///    must leave 0 or at least `minDebt` (`LiquidationLeavesDust`); one that takes a whole collateral may leave
    ///    less, and taking the last collateral realises all the remaining debt as bad debt. So every liquidatable
    ///    account has a liquidation that succeeds, down to the last dust.
    /// 6. Health never falls: unless no debt is left, the health after (same prices and index) must be at least
    ///    the health before (after rule 2), else `LiquidationLowersHealth(before, after)`; seize another collateral
    ///    (one with a lower lt) instead.
    function liquidate(
        address owner,
        uint8 subId,
        address collateral,
        uint256 repayAssets,
        uint256 minSeized,
        address receiver,
        bytes calldata data
    ) external returns (uint256 repaid, uint256 seized);

    /// @notice Writes off the part of an insolvent sub-account's debt that its collateral cannot cover, at once,
    /// so that no lender can redeem ahead of a loss that is already certain. Anyone may call it. The cover value is
    /// `Σ value_down(c_i) / (1 + min(minDiscount, maxDiscount_i))`: the collateral's value less the smallest
    /// discount a liquidator is paid for it. The debt is lowered to the cover value (rounded up, for the lenders);
    /// the vault covers the difference from its reserve, then from its lenders (`IVault.realizeBadDebt`). Under
    /// the additive rule the account stays liquidatable and is then liquidated without its health falling. Needs a valid price for the
    /// debt asset and for every held collateral (the router's error otherwise: a missing price could hide
    /// collateral worth the debt). Reverts `NotInsolvent(coverValue, debtValue)` when nothing is to be written
    /// off. Emits `BadDebtRealized(owner, subId, assets)`; returns the assets written off.
    function writeOff(address owner, uint8 subId) external returns (uint256 badDebt);

    // ---- several debt assets (docs/portfolio-margin.md) ----

    /// @notice `borrow` in any listed debt asset (`debtAssets()`); the primary's is `borrow` itself. The margin
    /// check counts every debt the sub-account owes; the new debt must be at least that asset's `minDebt`.
    function borrowAsset(uint8 subId, address asset, uint256 assets, address receiver) external;

    /// @notice `repay` in any listed debt asset; the tokens go to that asset's vault.
    function repayAsset(address owner, uint8 subId, address asset, uint256 assets) external returns (uint256 repaid);

    /// @notice `liquidate`, repaying `debtAsset` (any listed debt asset the account owes, else `NothingToRepay`):
    /// the same rules over every debt of the account. Health, the close factor's debt value and the cover count
    /// all debts; the close factor and the dust rule apply to the repaid debt (with its own `minDebt`); an
    /// insolvency write-off takes each debt down in proportion to its value, each vault realising its own share;
    /// the last collateral seized realises every remaining debt in its own vault. No liquidation lowers health.
    function liquidateDebt(
        address owner,
        uint8 subId,
        address debtAsset,
        address collateral,
        uint256 repayAssets,
        uint256 minSeized,
        address receiver,
        bytes calldata data
    ) external returns (uint256 repaid, uint256 seized);

    /// @notice What `liquidateDebt` would do now (`badDebt` is the repaid asset's).
    function previewLiquidationDebt(
        address owner,
        uint8 subId,
        address debtAsset,
        address collateral,
        uint256 repayAssets
    ) external view returns (LiquidationQuote memory);

    /// @notice Debt of `(owner, subId)` in `asset`, rounded up (0 for an asset it does not owe).
    function debtOfAsset(address owner, uint8 subId, address asset) external view returns (uint256);

    /// @notice Scaled debt of `(owner, subId)` in `asset` (its vault's borrow index turns it into assets).
    function scaledDebtOf(address owner, uint8 subId, address asset) external view returns (uint256);

    /// @notice The debt assets, the primary first; `debtMask` bit j is entry j.
    function debtAssets() external view returns (address[] memory);

    function debtConfig(address asset) external view returns (DebtConfig memory);

    /// @notice Lists `vault`'s asset as a further debt asset (DEFAULT_ADMIN_ROLE). The vault must already lend
    /// through this engine; the asset may also be a listed collateral (except under a grid, whose one column per
    /// asset must then be set again: `GridAssetsMismatch`). Under a grid its column is 1 (no move) in every
    /// scenario, the additive rule's treatment of a debt.
    function listDebt(address vault, uint128 minDebt) external;

    // ---- protection module primitives (only `protectionModule()`) ----

    /// @notice Moves collateral between two sub-accounts of `owner`, exactly as `moveCollateral` books it and with
    /// the same `CollateralMoved` event, but with no margin check: the protection module checks both sub-accounts
    /// itself (see IProtectionModule.rebalance). Nothing leaves `owner`. Reverts `NotProtectionModule(caller)`
    /// for any other caller, then as `moveCollateral` (`ZeroAmount`, `SameSubAccount`, `AssetNotListed`,
    /// `InsufficientCollateral`).
    function moveCollateralFor(address owner, uint8 fromSubId, uint8 toSubId, address asset, uint256 amount)
        external;

    /// @notice Debits `amount` of `asset` from `(owner, subId)` (balance, asset mask, `totalSupplied`) and sends it
    /// to `receiver`, with no health check: the protection module checks health before and after (see
    /// IProtectionModule.preLiquidate) and repays through `repay` first. Emits `CollateralSeized`. Reverts
    /// `NotProtectionModule(caller)` for any other caller, `AssetNotListed`, `InsufficientCollateral`. A zero
    /// `amount` is not refused here (the module refuses it; the check would cost engine bytecode, see EIP-170).
    function seizeFor(address owner, uint8 subId, address asset, uint256 amount, address receiver) external;

    /// @notice The only contract allowed to call `moveCollateralFor` and `seizeFor`; address(0) when none.
    function protectionModule() external view returns (address);

    // ---- views ----

    function vault() external view returns (address);
    function oracle() external view returns (address);
    function debtAsset() external view returns (address);
    function debtDecimals() external view returns (uint8);
    function assetList() external view returns (address[] memory);

    /// @notice An asset's configuration with `lt` the effective lt at block.timestamp (what health uses now) and
    /// `rampEnd` the end of a ramp (past or 0 when none runs).
    function assetConfig(address asset) external view returns (AssetConfig memory);

    function assetSupply(address asset) external view returns (AssetSupply memory);
    function riskParams() external view returns (RiskParams memory);
    function collateralOf(address owner, uint8 subId, address asset) external view returns (uint256);
    function position(address owner, uint8 subId) external view returns (Position memory);

    /// @notice Collateral balances of a sub-account, one per listed asset in `assetList()` order.
    function balancesOf(address owner, uint8 subId) external view returns (uint256[] memory);

    /// @notice Current debt of a sub-account including pending interest, rounded up.
    function debtOf(address owner, uint8 subId) external view returns (uint256);

    /// @notice Risk figures at current prices; reverts when a needed price is invalid (the strict valuation of new
    /// risk: liquidation values an asset without a valid price at zero instead, see `liquidate`).
    function accountHealth(address owner, uint8 subId) external view returns (AccountHealth memory);

    /// @notice Risk figures as `liquidate` values the account (lenient): a held asset without a valid price counts
    /// at zero. Liquidatable iff debt > 0 and `ltWeighted < debtValue` here. Reverts only when the debt asset's
    /// price is invalid (with debt) or on arithmetic overflow.
    function liquidationHealth(address owner, uint8 subId) external view returns (AccountHealth memory);

    /// @notice What `liquidate` would repay, seize and write off now for `repayAssets` requested (`badDebt`: the
    /// insolvency write-off plus what the last collateral or the liquidation's own discount leaves uncovered).
    function previewLiquidation(address owner, uint8 subId, address collateral, uint256 repayAssets)
        external
        view
        returns (LiquidationQuote memory);

    /// @notice The EngineModule this engine created and runs `liquidate`, `writeOff` and `previewLiquidation`
    /// in, by DELEGATECALL over the engine's own storage (the engine's code would not fit EIP-170 with it).
    function module() external view returns (address);

    /// @notice Plumbing for `previewLiquidation`: runs `data` in the module, for the engine's own static calls
    /// only (`NotSelf` for any other caller).
    function delegateView(bytes calldata data) external returns (bytes memory);

    // ---- governance (DEFAULT_ADMIN_ROLE) ----

    /// @notice Lists a new collateral asset (at most 32) with its risk configuration.
    function listAsset(address asset, uint64 ltv, uint64 lt, uint64 maxDiscount, uint128 supplyCap) external;

    /// @notice Updates a listed asset's risk configuration. Governance keeps the full power: `lt` applies at once,
    /// even a lower one, and any lt ramp is cleared (a keeper ramp cannot outlast a governance decision).
    function setAssetConfig(address asset, uint64 ltv, uint64 lt, uint64 maxDiscount, uint128 supplyCap) external;

    /// @notice Registers the protection module (address(0) disables both primitives). Emits
    /// `ProtectionModuleSet`. The module can move and seize any account's collateral, so only a reviewed module
    /// belongs here.
    function setProtectionModule(address module) external;

    /// @notice Updates the protocol-wide liquidation parameters.
    function setRiskParams(RiskParams calldata params) external;

    /// @notice Sets the limits within which RISK_KEEPER_ROLE may move a listed asset's ltv and lt. Valid iff all
    /// zero (keeper updates disabled) or ltvMin <= ltvMax, ltMin <= ltMax, ltMax < 1, maxStep > 0 and
    /// 0 < rampDuration <= 365 days; else `InvalidRiskBounds`. Bounds need not contain the current ltv and lt:
    /// the keeper then steps towards them by at most maxStep per update.
    function setRiskBounds(address asset, RiskBounds calldata bounds) external;

    // ---- bounded risk updates (RISK_KEEPER_ROLE) ----

    /// @notice The role allowed to call `updateRiskParams`: keccak256("RISK_KEEPER_ROLE").
    function RISK_KEEPER_ROLE() external view returns (bytes32);

    /// @notice Moves an asset's ltv and lt within governance's bounds (see `setRiskBounds`).
    ///
    /// Why the ramp: a lower lt lowers every holder's health, and an account just above 1 would become
    /// liquidatable the moment the update lands, by the parameter change alone, with no time to react. So a
    /// lower lt is never applied at once: the effective lt moves linearly from its current value (at the update's
    /// timestamp) to the new one over `rampDuration`, rounded down (the safer side), and users get that long to
    /// add margin or repay. No account is liquidatable in the update's block because of it. ltv applies at once:
    /// it only limits new borrowing and withdrawals. A raised (or equal) lt applies at once and clears any ramp.
    /// An update during a ramp starts the new ramp from the current effective lt, so lt never jumps.
    ///
    /// Reverts, checked in this order: `AssetNotListed`; `RiskBoundsNotSet` (maxStep == 0);
    /// `OutsideRiskBounds(asset, value, min, max)` for ltv, then lt; `RiskStepTooLarge(asset, current, requested,
    /// maxStep)` when ltv moves from the current ltv, then lt from the current *effective* lt, by more than
    /// maxStep; `RiskUpdateTooSoon(asset, lastUpdate + minInterval)`; `InvalidRiskUpdate(asset, ltv, lt)` unless
    /// ltv < lt and lt * (1 + maxDiscount) < 1 (rounded up), as `setAssetConfig` requires.
    /// Emits `RiskParamsUpdated(asset, keeper, ltv, ltFrom, ltTarget, rampEnd)` with ltFrom the effective lt
    /// before the update and rampEnd 0 when lt applied at once.
    function updateRiskParams(address asset, uint64 ltv, uint64 lt) external;

    /// @notice Governance's bounds for an asset's keeper updates (all zero: none allowed).
    function riskBounds(address asset) external view returns (RiskBounds memory);

    /// @notice The lt ramp of an asset: a ramp runs iff block.timestamp < end, from ltFrom at start to ltTarget at
    /// end. When none runs, ltFrom == ltTarget == the stored lt. lastUpdate is the last keeper update's time.
    function ltRamp(address asset)
        external
        view
        returns (uint64 ltFrom, uint64 ltTarget, uint40 start, uint40 end, uint40 lastUpdate);
}
