// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

/// @title IProtectionModule
/// @notice Two opt-in protections for MarginEngine owners, enforced here so that the engine stays under the
/// EIP-170 size limit; the engine only exposes `moveCollateralFor` and `seizeFor` to this module.
///
/// - **Rebalancer.** An owner authorises an operator with a target health. The operator may move collateral
///   between the owner's own sub-accounts when the receiving one is below the target, and only so far that the
///   receiver ends at or below the target while the giver ends at or above it with its initial margin intact.
///   Nothing ever leaves the owner: the engine primitive moves between the owner's sub-accounts only.
/// - **Pre-liquidation band.** An owner opts a sub-account into a band `1 <= health < preThreshold`. In the band
///   anyone may repay up to `maxShare` of the debt and seize collateral worth the repayment times
///   `1 + discount`; the call must raise health. Below health 1 only the engine's liquidation applies. The
///   discount never exceeds the engine's `minDiscount` (its discount at health just below 1), so a
///   pre-liquidation never costs the user more per dollar repaid than any liquidation would, even when a
///   liquidator lifts an account from just below 1 into the band with a few wei of collateral.
///
/// Units: health, target health, thresholds, discounts and shares are WAD (1e18 = 1.0 = 100 %); prices are WAD USD
/// per whole token from the OracleRouter (the engine's own router); token amounts are in each token's decimals.
/// Every health figure is the engine's `accountHealth` (effective lt, debt with pending interest).
///
/// Rounding: seized collateral is rounded down (for the user being pre-liquidated); the repayment cap
/// `debt * maxShare` is rounded down. A rebalance is exact: the receiver's health after (rounded down by the
/// engine) must not exceed the target, with no allowance, so an operator picks the largest amount that keeps it
/// at or below the target.
///
/// Sequencer: a rebalance that takes from a giver with debt needs an up sequencer, as the owner's own
/// `moveCollateral` does (it is new risk for the giver). A pre-liquidation, like a liquidation, never waits for
/// the sequencer.
///
/// Known risks: an authorised operator can move collateral at times the owner would not choose (within the
/// rules); it cannot move anything out, and revocation is immediate. Pre-liquidation needs valid prices of the
/// debt asset and the seized collateral (fail closed). A governance change of the engine's asset config can make
/// a pre-liquidation against a collateral with a high lt fail its improvement check; the call then reverts.
/// Pre-liquidations may follow one another while the account stays in the band (each repays at most `maxShare`
/// of the debt left and must raise health), as the owner accepted by opting in.
interface IProtectionModule {
    /// @notice An owner's opt-in of one sub-account; all zero = not opted in.
    struct PreLiquidation {
        uint64 preThreshold; // WAD health, > 1; the band is [1, preThreshold)
        uint64 discount; // WAD, the liquidator's bonus on the repaid value
        uint64 maxShare; // WAD, largest share of the debt one call may repay
    }

    /// @notice One move of a batch rebalance: `amount` of `asset` from `fromSubId` to `toSubId`.
    struct Move {
        uint8 fromSubId;
        uint8 toSubId;
        address asset;
        uint256 amount;
    }

    /// @notice Governance's bounds on every opt-in.
    struct PreLiquidationBounds {
        uint64 maxPreThreshold; // WAD, > 1
        uint64 maxDiscount; // WAD, <= MAX_DISCOUNT_BOUND (5 %)
        uint64 maxShare; // WAD, in (0, 1]
    }

    error InvalidConfig();
    error InvalidOperator(address operator);
    error InvalidTargetHealth(uint256 targetHealth, uint256 maxTargetHealth);
    error InvalidMaxTargetHealth(uint256 maxTargetHealth);
    error NotRebalancer(address owner, address operator);
    error SameSubAccount(uint8 subId);
    error NoMoves();
    error ReceiverNotBelowTarget(uint256 receiverHealth, uint256 targetHealth);
    error ReceiverAboveTarget(uint256 receiverHealthAfter, uint256 targetHealth);
    error GiverBelowTarget(uint256 giverHealthAfter, uint256 floorHealth);
    error ReceiverStillLiquidatable(uint8 subId, uint256 healthAfter);
    error GiverInsufficientMargin(uint256 borrowingPower, uint256 debtValue);
    error InvalidPreLiquidationBounds(uint64 maxPreThreshold, uint64 maxDiscount, uint64 maxShare);
    error InvalidPreLiquidation(uint64 preThreshold, uint64 discount, uint64 maxShare);
    error NotOptedIn(address owner, uint8 subId);
    error UseLiquidation(uint256 health);
    error NotInPreLiquidationBand(uint256 health, uint256 preThreshold);
    error ZeroRepayment(uint256 requested, uint256 maxRepay);
    error PreLiquidationLeavesDust(uint256 remainingDebt, uint256 minDebt);
    error NothingSeized(uint256 repaid);
    error SeizeExceedsBalance(uint256 seized, uint256 balance);
    error SeizedBelowMinimum(uint256 seized, uint256 minSeized);
    error PreLiquidationMustImprove(uint256 healthBefore, uint256 healthAfter);

    event MaxTargetHealthSet(uint64 maxTargetHealth);
    event PreLiquidationBoundsSet(uint64 maxPreThreshold, uint64 maxDiscount, uint64 maxShare);
    event RebalancerSet(address indexed owner, address indexed operator, uint64 targetHealth);
    event Rebalanced(
        address indexed owner,
        address indexed operator,
        uint8 fromSubId,
        uint8 toSubId,
        address asset,
        uint256 amount,
        uint256 giverHealthAfter,
        uint256 receiverHealthAfter
    );
    event PreLiquidationSet(
        address indexed owner, uint8 indexed subId, uint64 preThreshold, uint64 discount, uint64 maxShare
    );
    event PreLiquidated(
        address indexed caller,
        address indexed owner,
        uint8 indexed subId,
        address collateral,
        uint256 repaid,
        uint256 seized,
        uint256 discount,
        uint256 healthBefore,
        uint256 healthAfter
    );

    // ---- rebalancer ----

    /// @notice Authorises `operator` to rebalance the caller's sub-accounts towards `targetHealth` (WAD), or
    /// revokes it at once with 0. Why a target: it is both the floor the giver must keep and the ceiling the
    /// receiver may reach, so an operator can only even out risk, never concentrate it. Needs
    /// `1 < targetHealth <= maxTargetHealth()` (else `InvalidTargetHealth(target, max)`): at or below 1 a giver
    /// could be left liquidatable. `InvalidOperator(0)` for the zero address. Emits `RebalancerSet`.
    function setRebalancer(address operator, uint64 targetHealth) external;

    /// @notice Moves `amount` of `asset` from `(owner, fromSubId)` to `(owner, toSubId)` for an authorised
    /// operator, through the engine's `moveCollateralFor` (so it emits the engine's `CollateralMoved`).
    /// The target used is `min(rebalancerOf(owner, operator), maxTargetHealth())`.
    /// Reverts, checked in this order: `NotRebalancer(owner, operator)` (not authorised or revoked);
    /// `SameSubAccount(subId)`; `ReceiverNotBelowTarget(health, target)` unless the receiver has debt and health
    /// below the target (a rebalance exists to rescue an at-risk receiver); the engine's own errors of the move
    /// (`ZeroAmount`, `AssetNotListed`, `InsufficientCollateral`); the router's `SequencerDown` /
    /// `SequencerGracePeriod` when the giver has debt; `GiverBelowTarget(healthAfter, floor)` when the giver ends
    /// below `floor = max(target, the giver's effective preThreshold)` (an operator must not move a giver into its
    /// own pre-liquidation band and then pre-liquidate it); `GiverInsufficientMargin(borrowingPower, debtValue)`
    /// when the giver has debt and ends without its initial margin (ltv-weighted value below the debt value: the
    /// rule of the owner's own moves); `ReceiverAboveTarget(healthAfter, target)` when the amount lifts the
    /// receiver above the target (more than the rescue needs); `ReceiverStillLiquidatable(subId, healthAfter)`
    /// when the receiver was liquidatable (health < 1) and the move leaves it so (collateral poured into an
    /// account that stays liquidatable would only be there to be seized). Any invalid price reverts (fail
    /// closed). Emits `Rebalanced` with both healths after.
    function rebalance(address owner, uint8 fromSubId, uint8 toSubId, address asset, uint256 amount) external;

    /// @notice Several `rebalance` moves for one owner in one transaction, all or nothing: each move is checked by
    /// every rule of `rebalance`, in order, against the state the moves before it left (so a receiver must still
    /// be below the target when its turn comes, and a giver of an earlier move may not be lifted above it and
    /// then drained). What it is for: rescuing a sub-account that one donor alone cannot lift, before it can be
    /// liquidated. The one exception to per-move checking: a receiver that was liquidatable when the batch first
    /// moved into it must be healthy (health >= 1) when the batch ends, not after each move, so that two donors
    /// can rescue it together (`ReceiverStillLiquidatable(subId, health)` otherwise). `NoMoves()` for an empty
    /// list; any failing move reverts the whole batch with that move's error. Emits one `Rebalanced` per move.
    function rebalanceBatch(address owner, Move[] calldata moves) external;

    /// @notice The target health `owner` gave `operator`; 0 = not authorised.
    function rebalancerOf(address owner, address operator) external view returns (uint64);

    /// @notice Largest target health an owner may set (WAD); a lower value later also caps existing targets.
    function maxTargetHealth() external view returns (uint64);

    // ---- pre-liquidation band ----

    /// @notice Opts the caller's sub-account `subId` into the band, or out with all three zero. Needs
    /// `1 < preThreshold <= maxPreThreshold`, `0 < discount <= maxDiscount` and `0 < maxShare <= maxShare bound`
    /// (else `InvalidPreLiquidation(preThreshold, discount, maxShare)`). Why bounded: the discount is the user's
    /// cost and the share its speed; governance keeps both small so that a pre-liquidation always costs the user
    /// less than a liquidation. Emits `PreLiquidationSet`.
    function setPreLiquidation(uint8 subId, uint64 preThreshold, uint64 discount, uint64 maxShare) external;

    /// @notice Pre-liquidates `(owner, subId)`: anyone repays up to `repayAssets` of its debt (debt-asset units),
    /// pulled from the caller, and receives `collateral` worth the repayment times `1 + discount` at `receiver`.
    /// The opt-in is applied clamped to governance's current bounds (see `effectivePreLiquidation`): tightened
    /// bounds narrow every opt-in at once, without the owner's action, and never widen one.
    /// `repaid = min(repayAssets, wMulDown(debt, maxShare))`;
    /// `seized = amountDown(wMulDown(valueDown(repaid, debtPrice), 1 + discount), collateralPrice)`.
    /// Reverts, checked in this order: `NotOptedIn(owner, subId)`; `UseLiquidation(health)` when health < 1
    /// (the engine's liquidation applies); `NotInPreLiquidationBand(health, preThreshold)` when health >=
    /// preThreshold (or the account has no debt); `ZeroRepayment(requested, maxRepay)`;
    /// `PreLiquidationLeavesDust(remaining, minDebt)` when it would leave `0 < debt < minDebt` (the engine's
    /// dust rule); `NothingSeized(repaid)`; `SeizeExceedsBalance(seized, balance)`;
    /// `SeizedBelowMinimum(seized, minSeized)`; `PreLiquidationMustImprove(before, after)` unless health after
    /// is strictly above health before (it fails when the collateral's lt * (1 + discount) >= health).
    /// Emits `PreLiquidated` (and the engine's `Repaid` and `CollateralSeized`).
    function preLiquidate(
        address owner,
        uint8 subId,
        address collateral,
        uint256 repayAssets,
        uint256 minSeized,
        address receiver
    ) external returns (uint256 repaid, uint256 seized);

    /// @notice What `preLiquidate` would repay and seize now, and the health before; reverts as it would, except
    /// for `SeizedBelowMinimum` and `PreLiquidationMustImprove`.
    function previewPreLiquidation(address owner, uint8 subId, address collateral, uint256 repayAssets)
        external
        view
        returns (uint256 repaid, uint256 seized, uint256 healthBefore);

    /// @notice The owner's opt-in as stored (all zero: not opted in).
    function preLiquidationOf(address owner, uint8 subId) external view returns (PreLiquidation memory);

    /// @notice The opt-in as `preLiquidate` applies it now: each field clamped to governance's current bound, and
    /// the discount also to the engine's `minDiscount`.
    function effectivePreLiquidation(address owner, uint8 subId) external view returns (PreLiquidation memory);

    /// @notice Governance's current bounds on opt-ins.
    function preLiquidationBounds() external view returns (PreLiquidationBounds memory);

    // ---- governance (DEFAULT_ADMIN_ROLE) ----

    /// @notice Sets the bounds of every opt-in: `maxPreThreshold > 1`, `maxDiscount <= 5 %` (0 stops new opt-ins
    /// and, by clamping, makes existing ones worthless to liquidators), `0 < maxShare <= 1`; else
    /// `InvalidPreLiquidationBounds`. Existing opt-ins are clamped to new, tighter bounds. Emits
    /// `PreLiquidationBoundsSet`.
    function setPreLiquidationBounds(uint64 maxPreThreshold, uint64 maxDiscount, uint64 maxShare) external;

    /// @notice Sets the largest target health (`> 1`, else `InvalidMaxTargetHealth`); existing targets above it
    /// are applied capped to it. Emits `MaxTargetHealthSet`.
    function setMaxTargetHealth(uint64 maxTargetHealth) external;

    function engine() external view returns (address);
    function oracle() external view returns (address);
}
