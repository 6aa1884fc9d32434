// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";
import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {IERC20Metadata} from "@openzeppelin/contracts/token/ERC20/extensions/IERC20Metadata.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {ReentrancyGuardTransient} from "@openzeppelin/contracts/utils/ReentrancyGuardTransient.sol";
import {IMarginEngine} from "./interfaces/IMarginEngine.sol";
import {IOracleRouter} from "./interfaces/IOracleRouter.sol";
import {IProtectionModule} from "./interfaces/IProtectionModule.sol";
import {RiskMath} from "./libraries/RiskMath.sol";

/// @title ProtectionModule
/// @notice Opt-in rebalancing between an owner's sub-accounts and a pre-liquidation band; the rules are documented
/// on IProtectionModule.
contract ProtectionModule is IProtectionModule, AccessControl, ReentrancyGuardTransient {
    using RiskMath for uint256;
    using SafeERC20 for IERC20;

    /// @dev Largest pre-liquidation discount governance may allow: 5 %, the engine's cap at health just below 1.
    uint64 internal constant MAX_DISCOUNT_BOUND = 0.05e18;
    /// @dev Default largest target health: 3.0.
    uint64 internal constant DEFAULT_MAX_TARGET_HEALTH = 3e18;

    IMarginEngine internal immutable _engine;
    IOracleRouter internal immutable _oracle;
    address internal immutable _debtAsset;
    uint8 internal immutable _debtDecimals;

    uint64 internal _maxTargetHealth;
    PreLiquidationBounds internal _bounds;
    mapping(address owner => mapping(address operator => uint64 targetHealth)) internal _rebalancers;
    mapping(address owner => mapping(uint8 subId => PreLiquidation)) internal _preLiquidations;

    /// @dev One pre-liquidation's figures, kept in memory to stay clear of stack limits.
    struct Quote {
        uint256 repaid;
        uint256 seized;
        uint256 discount;
        uint256 healthBefore;
    }

    constructor(IMarginEngine engine_, IOracleRouter oracle_, address admin) {
        if (address(engine_) == address(0) || admin == address(0) || engine_.oracle() != address(oracle_)) {
            revert InvalidConfig();
        }
        _engine = engine_;
        _oracle = oracle_;
        _debtAsset = engine_.debtAsset();
        _debtDecimals = engine_.debtDecimals();
        _grantRole(DEFAULT_ADMIN_ROLE, admin);
        // One standing approval of the engine (immutable, the only spender): the module holds no tokens between
        // calls, and a per-call approval would cost every pre-liquidation a storage write for nothing.
        IERC20(_debtAsset).forceApprove(address(engine_), type(uint256).max);
        _maxTargetHealth = DEFAULT_MAX_TARGET_HEALTH;
        emit MaxTargetHealthSet(DEFAULT_MAX_TARGET_HEALTH);
    }

    // ---------------------------------------------------------------- rebalancer

    /// @inheritdoc IProtectionModule
    function setRebalancer(address operator, uint64 targetHealth) external {
        if (operator == address(0)) revert InvalidOperator(operator);
        uint64 max = _maxTargetHealth;
        if (targetHealth != 0 && (targetHealth <= RiskMath.WAD || targetHealth > max)) {
            revert InvalidTargetHealth(targetHealth, max);
        }
        _rebalancers[msg.sender][operator] = targetHealth;
        emit RebalancerSet(msg.sender, operator, targetHealth);
    }

    /// @inheritdoc IProtectionModule
    function rebalance(address owner, uint8 fromSubId, uint8 toSubId, address asset, uint256 amount)
        external
        nonReentrant
    {
        if (_rebalance(owner, _targetFor(owner), fromSubId, toSubId, asset, amount)) _requireHealthy(owner, toSubId);
    }

    /// @inheritdoc IProtectionModule
    function rebalanceBatch(address owner, Move[] calldata moves) external nonReentrant {
        // An exact integer check on a length.
        // slither-disable-next-line incorrect-equality
        if (moves.length == 0) revert NoMoves();
        uint256 target = _targetFor(owner);
        // Receivers that were liquidatable when the batch first moved into them: each must end it healthy.
        uint256 rescued = 0; // bit i set for sub-account i (256 bits, one per subId)
        for (uint256 i; i < moves.length; ++i) {
            Move calldata m = moves[i];
            if (_rebalance(owner, target, m.fromSubId, m.toSubId, m.asset, m.amount)) rescued |= 1 << m.toSubId;
        }
        for (uint256 subId; rescued != 0; ++subId) {
            if (rescued & 1 == 1) _requireHealthy(owner, uint8(subId));
            rescued >>= 1;
        }
    }

    /// @dev The caller's target for `owner`, capped by governance; reverts when the caller is not authorised.
    function _targetFor(address owner) internal view returns (uint256 target) {
        target = _rebalancers[owner][msg.sender];
        // An exact integer check: 0 is the revoked / never-set value.
        // slither-disable-next-line incorrect-equality
        if (target == 0) revert NotRebalancer(owner, msg.sender);
        target = target.min(_maxTargetHealth);
    }

    /// @dev One move and every rule of it (documented on `IProtectionModule.rebalance`); returns whether the
    /// receiver was liquidatable before it (the caller then requires it healthy at the end).
    function _rebalance(address owner, uint256 target, uint8 fromSubId, uint8 toSubId, address asset, uint256 amount)
        internal
        returns (bool receiverWasLiquidatable)
    {
        if (fromSubId == toSubId) revert SameSubAccount(fromSubId);
        uint256 receiverBefore = _engine.accountHealth(owner, toSubId).health;
        // No debt reads as type(uint256).max, so a receiver without debt is refused here too.
        if (receiverBefore >= target) revert ReceiverNotBelowTarget(receiverBefore, target);

        _engine.moveCollateralFor(owner, fromSubId, toSubId, asset, amount);

        IMarginEngine.AccountHealth memory giver = _engine.accountHealth(owner, fromSubId);
        // Taking from a giver with debt is new risk for it: the same sequencer gate as the owner's own move.
        if (giver.debtValue != 0) _oracle.checkSequencer();
        // Never into its own pre-liquidation band: an operator could otherwise pre-liquidate what it moved down.
        uint256 floor = _bandThreshold(owner, fromSubId).max(target);
        if (giver.health < floor) revert GiverBelowTarget(giver.health, floor);
        if (giver.ltvWeighted < giver.debtValue) revert GiverInsufficientMargin(giver.ltvWeighted, giver.debtValue);
        uint256 receiverAfter = _engine.accountHealth(owner, toSubId).health;
        if (receiverAfter > target) revert ReceiverAboveTarget(receiverAfter, target);
        emit Rebalanced(owner, msg.sender, fromSubId, toSubId, asset, amount, giver.health, receiverAfter);
        return receiverBefore < RiskMath.WAD;
    }

    /// @dev A rebalance into a liquidatable sub-account must rescue it: collateral poured into an account that
    /// stays liquidatable would only be there to be seized.
    function _requireHealthy(address owner, uint8 subId) internal view {
        uint256 health = _engine.accountHealth(owner, subId).health;
        if (health < RiskMath.WAD) revert ReceiverStillLiquidatable(subId, health);
    }

    /// @inheritdoc IProtectionModule
    function rebalancerOf(address owner, address operator) external view returns (uint64) {
        return _rebalancers[owner][operator];
    }

    /// @inheritdoc IProtectionModule
    function maxTargetHealth() external view returns (uint64) {
        return _maxTargetHealth;
    }

    // ---------------------------------------------------------------- pre-liquidation band

    /// @inheritdoc IProtectionModule
    function setPreLiquidation(uint8 subId, uint64 preThreshold, uint64 discount, uint64 maxShare) external {
        bool optOut = preThreshold == 0 && discount == 0 && maxShare == 0;
        PreLiquidationBounds memory b = _bounds;
        bool valid = preThreshold > RiskMath.WAD && preThreshold <= b.maxPreThreshold && discount != 0
            && discount <= b.maxDiscount && maxShare != 0 && maxShare <= b.maxShare;
        if (!optOut && !valid) revert InvalidPreLiquidation(preThreshold, discount, maxShare);
        _preLiquidations[msg.sender][subId] = PreLiquidation(preThreshold, discount, maxShare);
        emit PreLiquidationSet(msg.sender, subId, preThreshold, discount, maxShare);
    }

    /// @inheritdoc IProtectionModule
    function preLiquidate(
        address owner,
        uint8 subId,
        address collateral,
        uint256 repayAssets,
        uint256 minSeized,
        address receiver
    ) external nonReentrant returns (uint256 repaid, uint256 seized) {
        Quote memory q = _quote(owner, subId, collateral, repayAssets);
        (repaid, seized) = (q.repaid, q.seized);
        if (seized < minSeized) revert SeizedBelowMinimum(seized, minSeized);

        // The module holds no tokens between calls: it pulls exactly what the engine's repay pulls from it (under
        // the standing approval given at construction).
        IERC20(_debtAsset).safeTransferFrom(msg.sender, address(this), repaid);
        // Equal to the quote's (repaid <= debt, priced at the same index); the engine's figure is what it booked.
        repaid = _engine.repay(owner, subId, repaid);
        _engine.seizeFor(owner, subId, collateral, seized, receiver);

        uint256 healthAfter = _engine.accountHealth(owner, subId).health;
        if (healthAfter <= q.healthBefore) revert PreLiquidationMustImprove(q.healthBefore, healthAfter);
        emit PreLiquidated(msg.sender, owner, subId, collateral, repaid, seized, q.discount, q.healthBefore, healthAfter);
    }

    /// @inheritdoc IProtectionModule
    function previewPreLiquidation(address owner, uint8 subId, address collateral, uint256 repayAssets)
        external
        view
        returns (uint256 repaid, uint256 seized, uint256 healthBefore)
    {
        Quote memory q = _quote(owner, subId, collateral, repayAssets);
        return (q.repaid, q.seized, q.healthBefore);
    }

    /// @dev Every check of a pre-liquidation that can be made before it runs, and its amounts.
    function _quote(address owner, uint8 subId, address collateral, uint256 requested)
        internal
        view
        returns (Quote memory q)
    {
        PreLiquidation memory pl = _effective(owner, subId);
        // An exact integer check: 0 is the opted-out value.
        // slither-disable-next-line incorrect-equality
        if (pl.preThreshold == 0) revert NotOptedIn(owner, subId);
        IMarginEngine.AccountHealth memory h = _engine.accountHealth(owner, subId);
        if (h.health < RiskMath.WAD) revert UseLiquidation(h.health);
        if (h.health >= pl.preThreshold) revert NotInPreLiquidationBand(h.health, pl.preThreshold);
        q.healthBefore = h.health;
        q.discount = pl.discount;

        uint256 maxRepay = h.debt.wMulDown(pl.maxShare);
        q.repaid = requested.min(maxRepay);
        // An exact integer check, not a time comparison.
        // slither-disable-next-line incorrect-equality
        if (q.repaid == 0) revert ZeroRepayment(requested, maxRepay);
        uint256 remaining = h.debt - q.repaid;
        uint256 minDebt = _engine.riskParams().minDebt;
        if (remaining != 0 && remaining < minDebt) revert PreLiquidationLeavesDust(remaining, minDebt);

        // The engine lists an asset with the token's own decimals (and never changes them): read them directly.
        uint8 collDecimals = IERC20Metadata(collateral).decimals();
        uint256 seizeValue =
            q.repaid.valueDown(_oracle.price(_debtAsset), _debtDecimals).wMulDown(RiskMath.WAD + pl.discount);
        q.seized = seizeValue.amountDown(_oracle.price(collateral), collDecimals);
        // An exact integer check, not a time comparison.
        // slither-disable-next-line incorrect-equality
        if (q.seized == 0) revert NothingSeized(q.repaid);
        uint256 balance = _engine.collateralOf(owner, subId, collateral);
        if (q.seized > balance) revert SeizeExceedsBalance(q.seized, balance);
    }

    /// @dev A sub-account's effective pre-liquidation threshold (0 when not opted in), without the other fields.
    function _bandThreshold(address owner, uint8 subId) internal view returns (uint256) {
        return uint256(_preLiquidations[owner][subId].preThreshold).min(_bounds.maxPreThreshold);
    }

    /// @dev The stored opt-in with each field clamped to the current bound (all zero stays all zero), and the
    /// discount to the engine's smallest liquidation discount (at health just below 1): a liquidator who lifts an
    /// account from just below 1 into the band with a few wei of collateral then cannot make it pay more than the
    /// liquidation it escaped.
    function _effective(address owner, uint8 subId) internal view returns (PreLiquidation memory pl) {
        pl = _preLiquidations[owner][subId];
        PreLiquidationBounds memory b = _bounds;
        if (pl.preThreshold > b.maxPreThreshold) pl.preThreshold = b.maxPreThreshold;
        uint64 engineMin = _engine.riskParams().minDiscount;
        if (pl.discount > b.maxDiscount) pl.discount = b.maxDiscount;
        if (pl.discount > engineMin) pl.discount = engineMin;
        if (pl.maxShare > b.maxShare) pl.maxShare = b.maxShare;
    }

    /// @inheritdoc IProtectionModule
    function preLiquidationOf(address owner, uint8 subId) external view returns (PreLiquidation memory) {
        return _preLiquidations[owner][subId];
    }

    /// @inheritdoc IProtectionModule
    function effectivePreLiquidation(address owner, uint8 subId) external view returns (PreLiquidation memory) {
        return _effective(owner, subId);
    }

    /// @inheritdoc IProtectionModule
    function preLiquidationBounds() external view returns (PreLiquidationBounds memory) {
        return _bounds;
    }

    // ---------------------------------------------------------------- governance

    /// @inheritdoc IProtectionModule
    function setPreLiquidationBounds(uint64 maxPreThreshold, uint64 maxDiscount, uint64 maxShare)
        external
        onlyRole(DEFAULT_ADMIN_ROLE)
    {
        if (
            maxPreThreshold <= RiskMath.WAD || maxDiscount > MAX_DISCOUNT_BOUND || maxShare == 0
                || maxShare > RiskMath.WAD
        ) revert InvalidPreLiquidationBounds(maxPreThreshold, maxDiscount, maxShare);
        _bounds = PreLiquidationBounds(maxPreThreshold, maxDiscount, maxShare);
        emit PreLiquidationBoundsSet(maxPreThreshold, maxDiscount, maxShare);
    }

    /// @inheritdoc IProtectionModule
    function setMaxTargetHealth(uint64 maxTargetHealth_) external onlyRole(DEFAULT_ADMIN_ROLE) {
        if (maxTargetHealth_ <= RiskMath.WAD) revert InvalidMaxTargetHealth(maxTargetHealth_);
        _maxTargetHealth = maxTargetHealth_;
        emit MaxTargetHealthSet(maxTargetHealth_);
    }

    function engine() external view returns (address) {
        return address(_engine);
    }

    function oracle() external view returns (address) {
        return address(_oracle);
    }
}
