// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";
import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {IERC20Metadata} from "@openzeppelin/contracts/token/ERC20/extensions/IERC20Metadata.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {SafeCast} from "@openzeppelin/contracts/utils/math/SafeCast.sol";
import {ReentrancyGuardTransient} from "@openzeppelin/contracts/utils/ReentrancyGuardTransient.sol";
import {ILiquidationCallback} from "./interfaces/ILiquidationCallback.sol";
import {IMarginEngine} from "./interfaces/IMarginEngine.sol";
import {IOracleRouter} from "./interfaces/IOracleRouter.sol";
import {IVault} from "./interfaces/IVault.sol";
import {RiskMath} from "./libraries/RiskMath.sol";

/// @title MarginEngine
/// @notice Cross-margin sub-accounts, borrowing and liquidation; the rules are documented on IMarginEngine.
contract MarginEngine is IMarginEngine, AccessControl, ReentrancyGuardTransient {
    using RiskMath for uint256;
    using SafeERC20 for IERC20;
    using SafeCast for uint256;

    /// @dev Collateral assets fit in a 32-bit account mask.
    uint256 internal constant MAX_ASSETS = 32;
    /// @dev Cap of any asset's liquidation discount: 25 %.
    uint64 internal constant MAX_DISCOUNT = 0.25e18;
    /// @dev Cap of the discount at health just below 1: 5 %.
    uint64 internal constant MAX_MIN_DISCOUNT = 0.05e18;
    /// @dev Close factor while health is near 1: 50 % of the debt.
    uint256 internal constant HALF_CLOSE = 0.5e18;
    /// @dev Longest lt ramp a bound may ask for.
    uint32 internal constant MAX_RAMP_DURATION = 365 days;
    /// @dev Discount kept below the health-neutral one (health / lt - 1), so that rounding of a liquidation's
    /// amounts cannot bring health down at the cap: 1e-6 (0.0001 %).
    uint256 internal constant HEALTH_NEUTRAL_MARGIN = 1e12;

    /// @inheritdoc IMarginEngine
    bytes32 public constant RISK_KEEPER_ROLE = keccak256("RISK_KEEPER_ROLE");

    IVault internal immutable _vault;
    IOracleRouter internal immutable _oracle;
    address internal immutable _debtAsset;
    uint8 internal immutable _debtDecimals;

    address[] internal _assets;
    mapping(address asset => AssetConfig) internal _configs;
    mapping(address asset => AssetSupply) internal _supplies;
    RiskParams internal _params;
    mapping(address owner => mapping(uint8 subId => Position)) internal _positions;
    mapping(address owner => mapping(uint8 subId => mapping(address asset => uint256))) internal _balances;
    mapping(address asset => RiskBounds) internal _bounds;
    mapping(address asset => LtRamp) internal _ramps;
    address internal _protectionModule;

    constructor(IVault vault_, IOracleRouter oracle_, address admin, RiskParams memory params) {
        if (address(vault_) == address(0) || address(oracle_) == address(0) || admin == address(0)) {
            revert InvalidConfig();
        }
        _vault = vault_;
        _oracle = oracle_;
        _debtAsset = vault_.asset();
        _debtDecimals = IERC20Metadata(_debtAsset).decimals();
        _grantRole(DEFAULT_ADMIN_ROLE, admin);
        _setRiskParams(params);
    }

    // ---------------------------------------------------------------- collateral

    /// @inheritdoc IMarginEngine
    function deposit(address owner, uint8 subId, address asset, uint256 amount) external nonReentrant {
        if (amount == 0) revert ZeroAmount();
        AssetConfig memory cfg = _listed(asset);
        AssetSupply memory supply = _supplies[asset];
        uint256 total = supply.totalSupplied + amount;
        if (total > supply.supplyCap) revert SupplyCapExceeded(asset, total, supply.supplyCap);
        _supplies[asset].totalSupplied = total.toUint128();
        _balances[owner][subId][asset] += amount;
        _positions[owner][subId].assetMask |= uint32(1 << cfg.index);
        emit Deposited(msg.sender, owner, subId, asset, amount);

        // Credit first, then pull and verify: a token that delivers less than `amount` (a transfer fee, a hook
        // that skims) is refused rather than booked at a value the engine does not hold.
        _pullExact(asset, address(this), amount);
    }

    /// @inheritdoc IMarginEngine
    function withdraw(uint8 subId, address asset, uint256 amount, address receiver) external nonReentrant {
        if (amount == 0) revert ZeroAmount();
        AssetConfig memory cfg = _listed(asset);
        Position memory p = _takeCollateral(msg.sender, subId, asset, cfg.index, amount);
        _supplies[asset].totalSupplied -= uint128(amount); // amount <= a balance <= totalSupplied
        _requireMarginIfBorrowing(msg.sender, subId, p);
        emit Withdrawn(msg.sender, subId, asset, amount, receiver);
        IERC20(asset).safeTransfer(receiver, amount);
    }

    /// @inheritdoc IMarginEngine
    function moveCollateral(uint8 fromSubId, uint8 toSubId, address asset, uint256 amount) external nonReentrant {
        Position memory p = _move(msg.sender, fromSubId, toSubId, asset, amount);
        _requireMarginIfBorrowing(msg.sender, fromSubId, p);
        emit CollateralMoved(msg.sender, fromSubId, toSubId, asset, amount);
    }

    /// @inheritdoc IMarginEngine
    function moveCollateralFor(address owner, uint8 fromSubId, uint8 toSubId, address asset, uint256 amount)
        external
        nonReentrant
    {
        _onlyProtectionModule();
        _move(owner, fromSubId, toSubId, asset, amount);
        emit CollateralMoved(owner, fromSubId, toSubId, asset, amount);
    }

    /// @inheritdoc IMarginEngine
    function seizeFor(address owner, uint8 subId, address asset, uint256 amount, address receiver)
        external
        nonReentrant
    {
        _onlyProtectionModule();
        _takeCollateral(owner, subId, asset, _listed(asset).index, amount);
        _supplies[asset].totalSupplied -= uint128(amount); // amount <= a balance <= totalSupplied
        emit CollateralSeized(owner, subId, asset, amount, receiver);
        IERC20(asset).safeTransfer(receiver, amount);
    }

    /// @dev Books a move of `amount` of `asset` between two sub-accounts of `owner`; returns the giver's position.
    function _move(address owner, uint8 fromSubId, uint8 toSubId, address asset, uint256 amount)
        internal
        returns (Position memory p)
    {
        if (amount == 0) revert ZeroAmount();
        if (fromSubId == toSubId) revert SameSubAccount();
        AssetConfig memory cfg = _listed(asset);
        p = _takeCollateral(owner, fromSubId, asset, cfg.index, amount);
        _balances[owner][toSubId][asset] += amount;
        _positions[owner][toSubId].assetMask |= uint32(1 << cfg.index);
    }

    function _onlyProtectionModule() internal view {
        if (msg.sender != _protectionModule) revert NotProtectionModule(msg.sender);
    }

    /// @dev Debits `amount` of `asset` from a sub-account, clearing its mask bit when the balance reaches zero.
    function _takeCollateral(address owner, uint8 subId, address asset, uint8 index, uint256 amount)
        internal
        returns (Position memory p)
    {
        uint256 balance = _balances[owner][subId][asset];
        if (amount > balance) revert InsufficientCollateral(asset, balance, amount);
        // amount <= balance was checked above.
        unchecked {
            balance -= amount;
        }
        _balances[owner][subId][asset] = balance;
        p = _positions[owner][subId];
        if (balance == 0) {
            p.assetMask &= ~uint32(1 << index);
            _positions[owner][subId].assetMask = p.assetMask;
        }
    }

    /// @dev New risk: needs an up sequencer and borrowing power >= debt value. An account without debt takes no
    /// risk, so it never needs a price or the sequencer to get its collateral back.
    function _requireMarginIfBorrowing(address owner, uint8 subId, Position memory p) internal {
        // An exact integer check, not a time comparison (see _effectiveLt).
        // slither-disable-next-line incorrect-equality
        if (p.scaledDebt == 0) return;
        _oracle.checkSequencer();
        _requireMargin(owner, subId, p, _vault.accrue());
    }

    function _requireMargin(address owner, uint8 subId, Position memory p, uint256 index) internal view {
        AccountHealth memory h = _valuation(_balances[owner][subId], p, index, address(0), false).h;
        if (h.ltvWeighted < h.debtValue) revert InsufficientMargin(h.ltvWeighted, h.debtValue);
    }

    // ---------------------------------------------------------------- debt

    /// @inheritdoc IMarginEngine
    function borrow(uint8 subId, uint256 assets, address receiver) external nonReentrant {
        if (assets == 0) revert ZeroAmount();
        _oracle.checkSequencer();
        uint256 index = _vault.accrue();
        Position memory p = _positions[msg.sender][subId];
        uint256 scaled = assets.toScaledUp(index);
        p.scaledDebt = SafeCast.toUint128(p.scaledDebt + scaled);
        _positions[msg.sender][subId].scaledDebt = p.scaledDebt;
        uint256 debt = uint256(p.scaledDebt).toAssetsUp(index);
        if (debt < _params.minDebt) revert DebtBelowMinimum(debt, _params.minDebt);
        _requireMargin(msg.sender, subId, p, index);
        emit Borrowed(msg.sender, subId, assets, scaled, receiver);
        _vault.lend(assets, scaled, receiver);
    }

    /// @inheritdoc IMarginEngine
    function repay(address owner, uint8 subId, uint256 assets) external nonReentrant returns (uint256 repaid) {
        if (assets == 0) revert ZeroAmount();
        uint256 index = _vault.accrue();
        uint256 scaledDebt = _positions[owner][subId].scaledDebt;
        if (scaledDebt == 0) revert NothingToRepay();
        uint256 debt = scaledDebt.toAssetsUp(index);
        uint256 scaled;
        if (assets >= debt) {
            (repaid, scaled) = (debt, scaledDebt);
        } else {
            // A partial repayment extinguishes scaled debt rounded down, and must not leave dust.
            (repaid, scaled) = (assets, assets.toScaledDown(index));
            uint256 remaining = RiskMath.toAssetsUp(scaledDebt - scaled, index);
            if (remaining < _params.minDebt) revert DebtBelowMinimum(remaining, _params.minDebt);
        }
        // scaled <= scaledDebt < 2**128 in both branches.
        _positions[owner][subId].scaledDebt = uint128(scaledDebt - scaled);
        emit Repaid(msg.sender, owner, subId, repaid, scaled);
        // Pull, measured, then book: the vault never books cash it lacks (a transfer fee reverts ReceivedLess),
        // and a payer's transfer hook meets the vault's books as they were before this repayment.
        _pullExact(_debtAsset, address(_vault), repaid);
        _vault.noteRepayment(repaid, scaled);
    }

    /// @dev Pulls `amount` of `token` from the caller to `to` and reverts ReceivedLess unless `to`'s balance grew
    /// by exactly `amount`: a transfer fee, or a payer's hook moving the vault's cash meanwhile, is refused (a fall
    /// reports 0). One copy for deposit and repay: the engine has no bytes to spare for two.
    function _pullExact(address token, address to, uint256 amount) internal {
        uint256 before = IERC20(token).balanceOf(to);
        IERC20(token).safeTransferFrom(msg.sender, to, amount);
        uint256 held = IERC20(token).balanceOf(to);
        uint256 received = held > before ? held - before : 0;
        if (received != amount) revert ReceivedLess(token, amount, received);
    }

    // ---------------------------------------------------------------- liquidation

    /// @inheritdoc IMarginEngine
    function liquidate(
        address owner,
        uint8 subId,
        address collateral,
        uint256 repayAssets,
        uint256 minSeized,
        address receiver,
        bytes calldata data
    ) external nonReentrant returns (uint256 repaid, uint256 seized) {
        (LiquidationQuote memory q, uint256 scaledRepaid, uint256 badDebtScaled) =
            _settleLiquidation(owner, subId, collateral, repayAssets, minSeized);
        (repaid, seized) = (q.repaid, q.seized);
        // The loss lands before anything leaves: no one (a lending liquidator in its callback included) can redeem
        // from the vault at a price that ignores it.
        if (badDebtScaled != 0) _vault.realizeBadDebt(badDebtScaled);
        IERC20(collateral).safeTransfer(receiver, seized);
        if (data.length != 0) ILiquidationCallback(msg.sender).onLiquidation(collateral, seized, repaid, data);
        // Pulled, measured, then booked, as `repay` does: the vault never books cash it did not receive.
        _pullExact(_debtAsset, address(_vault), repaid);
        _vault.noteRepayment(repaid, scaledRepaid);
    }

    /// @inheritdoc IMarginEngine
    function writeOff(address owner, uint8 subId) external nonReentrant returns (uint256 badDebt) {
        uint256 index = _vault.accrue();
        Position memory p = _positions[owner][subId];
        Valuation memory v = _valuation(_balances[owner][subId], p, index, address(0), true);
        // A missing price could hide collateral worth the debt: forgiving debt on a guess is never safe. The call
        // only reverts, with the router's reason.
        // slither-disable-next-line unused-return
        if (v.unpriced != address(0)) _oracle.price(v.unpriced);
        uint256 scaledOff = _writeOffScaled(v, p.scaledDebt, index);
        // An exact integer check, not a time comparison (see _effectiveLt).
        // slither-disable-next-line incorrect-equality
        if (scaledOff == 0) revert NotInsolvent(v.cover, v.h.debtValue);
        _positions[owner][subId].scaledDebt = uint128(p.scaledDebt - scaledOff); // scaledOff <= scaledDebt
        badDebt = scaledOff.toAssetsUp(index);
        emit BadDebtRealized(owner, subId, badDebt);
        _vault.realizeBadDebt(scaledOff);
    }

    /// @dev Quotes and books a liquidation and emits its events; the caller does the external calls.
    function _settleLiquidation(address owner, uint8 subId, address collateral, uint256 repayAssets, uint256 minSeized)
        internal
        returns (LiquidationQuote memory q, uint256 scaledRepaid, uint256 badDebtScaled)
    {
        uint256 index = _vault.accrue();
        Position memory p = _positions[owner][subId];
        (q, scaledRepaid, badDebtScaled) = _quote(owner, subId, p, collateral, repayAssets, index);
        if (q.seized < minSeized) revert SeizedBelowMinimum(q.seized, minSeized);

        uint256 balance = _balances[owner][subId][collateral] - q.seized;
        _balances[owner][subId][collateral] = balance;
        // An exact integer check, not a time comparison (see _effectiveLt).
        // slither-disable-next-line incorrect-equality
        if (balance == 0) p.assetMask &= ~uint32(1 << _configs[collateral].index);
        _supplies[collateral].totalSupplied -= uint128(q.seized); // seized <= a balance <= totalSupplied
        // repaid and written-off scaled debt never exceed the position's (see _quote).
        p.scaledDebt = uint128(p.scaledDebt - scaledRepaid - badDebtScaled);
        _positions[owner][subId] = p;

        emit Liquidated(msg.sender, owner, subId, collateral, q.repaid, q.seized, q.discount);
        if (badDebtScaled != 0) emit BadDebtRealized(owner, subId, q.badDebt);
    }

    /// @dev The whole liquidation computation, shared by `liquidate` and `previewLiquidation` (the rules are on
    /// IMarginEngine.liquidate). Returns the quote, the scaled debt the repayment extinguishes and the scaled debt
    /// written off (the insolvency write-off first, plus what the last collateral leaves).
    function _quote(address owner, uint8 subId, Position memory p, address collateral, uint256 requested, uint256 index)
        internal
        view
        returns (LiquidationQuote memory q, uint256 scaledRepaid, uint256 badScaled)
    {
        AssetConfig memory cfg = _listed(collateral);
        Valuation memory v = _valuation(_balances[owner][subId], p, index, collateral, true);
        // An exact integer check, not a time comparison (see _effectiveLt).
        // slither-disable-next-line incorrect-equality
        if (v.h.debt == 0 || v.h.ltWeighted >= v.h.debtValue) revert NotLiquidatable(v.h.health);
        // An exact integer check, not a time comparison (see _effectiveLt).
        // slither-disable-next-line incorrect-equality
        if (v.wantBalance == 0) revert NothingSeized();
        // Seizing needs the collateral's own price: the call only reverts, with the router's reason for it.
        // slither-disable-next-line incorrect-equality,unused-return
        if (v.wantPrice == 0) _oracle.price(collateral);

        // An insolvent account first loses the debt its collateral cannot cover, so that the loss lands on the
        // lenders before any of them can leave ahead of it, and the liquidation below never lowers health. With a
        // price missing nothing is written off: the liquidation goes on at the smallest discount (rule 3).
        bool degraded = v.unpriced != address(0) && v.cover < v.h.debtValue;
        if (v.unpriced == address(0)) badScaled = _writeOffScaled(v, p.scaledDebt, index);
        uint256 scaled = p.scaledDebt - badScaled;

        q = _repayLimits(v.h, requested, cfg.maxDiscount);
        q.discount = q.discount.min(degraded ? _params.minDiscount : _neutralDiscount(v.h.health, v.wantLt));
        (q.repaid, q.seized) = _seizeAmounts(q.repaid, q.discount, v.wantBalance, v.debtPrice, v.wantPrice, cfg.decimals);
        // An exact integer check, not a time comparison (see _effectiveLt).
        // slither-disable-next-line incorrect-equality
        if (q.seized == 0) revert NothingSeized();

        // An exact integer check, not a time comparison (see _effectiveLt).
        // slither-disable-next-line incorrect-equality
        scaledRepaid = q.repaid == v.h.debt ? scaled : q.repaid.toScaledDown(index);
        uint256 left = scaled - scaledRepaid;
        // An exact integer check, not a time comparison (see _effectiveLt).
        // slither-disable-next-line incorrect-equality
        if (q.seized == v.wantBalance) {
            // A whole collateral taken may leave less than minDebt (the next collateral settles it); the last one
            // realises whatever debt remains as bad debt in this call.
            // slither-disable-next-line incorrect-equality
            if (p.assetMask == uint32(1 << cfg.index)) (badScaled, left) = (badScaled + left, 0);
        } else {
            // A repayment the liquidator chose must not leave dust.
            uint256 remaining = v.h.debt - q.repaid;
            if (remaining != 0 && remaining < _params.minDebt) revert LiquidationLeavesDust(remaining, _params.minDebt);
        }
        if (left != 0 && !degraded) {
            _requireHealthKept(v, q.seized, cfg.decimals, left.toAssetsUp(index));
            // A discount above the cover's minDiscount can leave a nearly insolvent account unable to cover what
            // remains: that loss is written off in the same call too, so every liquidation leaves its account
            // covered (or without debt).
            if (v.unpriced == address(0)) badScaled += _writeOffAfter(v, q.seized, cfg, left, index);
        }
        // An exact integer check, not a time comparison (see _effectiveLt).
        // slither-disable-next-line incorrect-equality
        if (badScaled != 0) q.badDebt = badScaled.toAssetsUp(index);
    }

    /// @dev The scaled debt to write off after seizing `seized` of the wanted collateral with `left` scaled debt
    /// remaining: down to the remaining cover value, rounded up; 0 when covered.
    function _writeOffAfter(Valuation memory v, uint256 seized, AssetConfig memory cfg, uint256 left, uint256 index)
        internal
        view
        returns (uint256)
    {
        uint256 onePlus = RiskMath.WAD + uint256(_params.minDiscount).min(cfg.maxDiscount);
        uint256 cover = v.cover - v.wantBalance.valueDown(v.wantPrice, cfg.decimals).wDivDown(onePlus)
            + (v.wantBalance - seized).valueDown(v.wantPrice, cfg.decimals).wDivDown(onePlus);
        uint256 debt = left.toAssetsUp(index);
        if (cover >= debt.valueUp(v.debtPrice, _debtDecimals)) return 0;
        uint256 target = cover.amountUp(v.debtPrice, _debtDecimals);
        return target < debt ? left - target.toScaledUp(index) : 0;
    }

    /// @dev The largest discount at which seizing collateral of liquidation threshold `lt` keeps `health`:
    /// `health / lt - 1`, less a margin for the rounding of the amounts; 0 when there is none.
    function _neutralDiscount(uint256 health, uint256 lt) internal pure returns (uint256) {
        uint256 neutral = health.wDivDown(lt);
        return neutral > RiskMath.WAD + HEALTH_NEUTRAL_MARGIN ? neutral - RiskMath.WAD - HEALTH_NEUTRAL_MARGIN : 0;
    }

    /// @dev Rule 6: the health after seizing `seized` of the wanted collateral with `debtAfter` left, figured
    /// exactly as `accountHealth` will figure it (same prices and index), is not below the health before.
    function _requireHealthKept(Valuation memory v, uint256 seized, uint8 decimals, uint256 debtAfter) internal view {
        (uint256 price, uint256 balance, uint256 lt) = (v.wantPrice, v.wantBalance, v.wantLt);
        uint256 ltAfter = v.h.ltWeighted - balance.valueDown(price, decimals).wMulDown(lt)
            + (balance - seized).valueDown(price, decimals).wMulDown(lt);
        uint256 healthAfter = ltAfter.wDivDown(debtAfter.valueUp(v.debtPrice, _debtDecimals));
        if (healthAfter < v.h.health) revert LiquidationLowersHealth(v.h.health, healthAfter);
    }

    /// @dev Scaled debt an insolvency write-off removes: what brings the debt down to the collateral's cover value
    /// (each collateral's value over 1 + the smallest discount it pays), rounded up for the lenders; 0 when the
    /// account is covered. Updates `v.h`'s debt, debt value and health to the written-off position.
    function _writeOffScaled(Valuation memory v, uint256 scaled, uint256 index) internal view returns (uint256 off) {
        AccountHealth memory h = v.h;
        if (v.cover >= h.debtValue) return 0;
        uint256 target = v.cover.amountUp(v.debtPrice, _debtDecimals);
        if (target >= h.debt) return 0;
        off = scaled - target.toScaledUp(index); // target < debt, so its scaled figure is at most `scaled`
        h.debt = (scaled - off).toAssetsUp(index);
        h.debtValue = h.debt.valueUp(v.debtPrice, _debtDecimals);
        // An exact integer check, not a time comparison (see _effectiveLt).
        // slither-disable-next-line incorrect-equality
        h.health = h.debtValue == 0 ? type(uint256).max : h.ltWeighted.wDivDown(h.debtValue);
    }

    /// @dev Discount, close factor and the requested amount for an unhealthy account (health < WAD).
    function _repayLimits(AccountHealth memory h, uint256 requested, uint64 maxDiscount)
        internal
        view
        returns (LiquidationQuote memory q)
    {
        RiskParams memory rp = _params;
        q.discount = (uint256(rp.minDiscount) + RiskMath.WAD - h.health).min(maxDiscount);
        bool fullClose = h.health < rp.fullCloseHealth || h.debtValue <= rp.fullCloseDebtValue;
        q.maxRepay = fullClose ? h.debt : h.debt.wMulUp(HALF_CLOSE);
        if (h.debt - q.maxRepay < rp.minDebt) q.maxRepay = h.debt;
        q.repaid = requested.min(q.maxRepay);
        // An exact integer check, not a time comparison (see _effectiveLt).
        // slither-disable-next-line incorrect-equality
        if (q.repaid == 0) revert ZeroAmount();
    }

    /// @dev Collateral bought by `repaid` at `discount`, rounded down; when it exceeds `balance`, the whole
    /// balance at its discounted value, rounded up (never above the original `repaid`).
    function _seizeAmounts(
        uint256 repaid,
        uint256 discount,
        uint256 balance,
        uint256 debtPrice,
        uint256 collPrice,
        uint8 collDecimals
    ) internal view returns (uint256, uint256 seized) {
        uint256 seizeValue = repaid.valueDown(debtPrice, _debtDecimals).wMulDown(RiskMath.WAD + discount);
        seized = seizeValue.amountDown(collPrice, collDecimals);
        if (seized <= balance) return (repaid, seized);
        uint256 payValue = balance.valueUp(collPrice, collDecimals).wDivUp(RiskMath.WAD + discount);
        return (payValue.amountUp(debtPrice, _debtDecimals).min(repaid), balance);
    }

    // ---------------------------------------------------------------- health

    /// @dev Risk figures of a sub-account with what the callers need beside them, in memory to spare the stack.
    struct Valuation {
        AccountHealth h;
        uint256 debtPrice; // WAD; 0 when there is no debt
        uint256 wantPrice; // WAD; 0 when the wanted asset is not held, or (lenient) has no valid price
        uint256 wantBalance; // the wanted asset's balance
        uint256 wantLt; // the wanted asset's effective lt (when held)
        uint256 cover; // lenient only: Σ value_down(c_i) / (1 + min(minDiscount, maxDiscount_i)), rounded down
        address unpriced; // lenient only: the first held asset without a valid price, or address(0)
    }

    /// @dev The risk figures of a sub-account, reading each price once. Strict (new risk, the `accountHealth` view)
    /// reverts with the router's error for any invalid price. Lenient (liquidation, write-off) values a held asset
    /// whose price is invalid at zero, so a dust balance of it cannot freeze a liquidation; a missing debt-asset
    /// price still reverts. `want`'s price is returned so callers do not read the oracle twice.
    function _valuation(mapping(address => uint256) storage balances, Position memory p, uint256 index, address want, bool lenient)
        internal
        view
        returns (Valuation memory v)
    {
        AccountHealth memory h = v.h;
        h.debt = uint256(p.scaledDebt).toAssetsUp(index);
        if (h.debt != 0) {
            v.debtPrice = _oracle.price(_debtAsset);
            h.debtValue = h.debt.valueUp(v.debtPrice, _debtDecimals);
        }
        uint256 minDiscount = _params.minDiscount;
        uint256 mask = p.assetMask;
        for (uint256 i; mask != 0; ++i) {
            // An exact integer check, not a time comparison (see _effectiveLt).
            // slither-disable-next-line incorrect-equality
            if (mask & 1 == 1) {
                address asset = _assets[i];
                AssetConfig memory cfg = _configs[asset];
                uint256 assetPrice;
                if (lenient) {
                    bool ok;
                    (ok, assetPrice) = _oracle.tryPrice(asset);
                    if (!ok) {
                        if (v.unpriced == address(0)) v.unpriced = asset;
                        assetPrice = 0;
                    }
                } else {
                    assetPrice = _oracle.price(asset);
                }
                uint256 balance = balances[asset];
                uint256 lt = _effectiveLt(asset, cfg);
                if (asset == want) (v.wantPrice, v.wantBalance, v.wantLt) = (assetPrice, balance, lt);
                uint256 value = balance.valueDown(assetPrice, cfg.decimals);
                h.collateralValue += value;
                h.ltWeighted += value.wMulDown(lt);
                h.ltvWeighted += value.wMulDown(cfg.ltv);
                if (lenient) v.cover += value.wDivDown(RiskMath.WAD + minDiscount.min(cfg.maxDiscount));
            }
            mask >>= 1;
        }
        // An exact integer check, not a time comparison (see _effectiveLt).
        // slither-disable-next-line incorrect-equality
        h.health = h.debtValue == 0 ? type(uint256).max : h.ltWeighted.wDivDown(h.debtValue);
    }

    /// @dev The lt health uses now: the stored lt, or while a ramp runs its point at block.timestamp. The ramp's
    /// slot is read only while ramping, so health costs the same as before outside a ramp. Because health now
    /// depends on block.timestamp, slither's incorrect-equality detector flags every exact integer check fed by
    /// it (zero debt, zero seized, mask bits); those are not time comparisons and carry a disable comment.
    function _effectiveLt(address asset, AssetConfig memory cfg) internal view returns (uint64) {
        if (block.timestamp >= cfg.rampEnd) return cfg.lt;
        LtRamp memory r = _ramps[asset];
        // Between ltFrom and lt, both uint64.
        return uint64(RiskMath.interpolateDown(r.ltFrom, cfg.lt, r.start, cfg.rampEnd, block.timestamp));
    }

    // ---------------------------------------------------------------- views

    function vault() external view returns (address) {
        return address(_vault);
    }

    function oracle() external view returns (address) {
        return address(_oracle);
    }

    function debtAsset() external view returns (address) {
        return _debtAsset;
    }

    function debtDecimals() external view returns (uint8) {
        return _debtDecimals;
    }

    function assetList() external view returns (address[] memory) {
        return _assets;
    }

    /// @inheritdoc IMarginEngine
    function assetConfig(address asset) external view returns (AssetConfig memory cfg) {
        cfg = _configs[asset];
        cfg.lt = _effectiveLt(asset, cfg);
    }

    /// @inheritdoc IMarginEngine
    function riskBounds(address asset) external view returns (RiskBounds memory) {
        return _bounds[asset];
    }

    /// @inheritdoc IMarginEngine
    function ltRamp(address asset)
        external
        view
        returns (uint64 ltFrom, uint64 ltTarget, uint40 start, uint40 end, uint40 lastUpdate)
    {
        AssetConfig memory cfg = _configs[asset];
        LtRamp memory r = _ramps[asset];
        ltFrom = block.timestamp < cfg.rampEnd ? r.ltFrom : cfg.lt;
        return (ltFrom, cfg.lt, r.start, cfg.rampEnd, r.lastUpdate);
    }

    function assetSupply(address asset) external view returns (AssetSupply memory) {
        return _supplies[asset];
    }

    /// @inheritdoc IMarginEngine
    function protectionModule() external view returns (address) {
        return _protectionModule;
    }

    function riskParams() external view returns (RiskParams memory) {
        return _params;
    }

    function collateralOf(address owner, uint8 subId, address asset) external view returns (uint256) {
        return _balances[owner][subId][asset];
    }

    function position(address owner, uint8 subId) external view returns (Position memory) {
        return _positions[owner][subId];
    }

    /// @inheritdoc IMarginEngine
    function balancesOf(address owner, uint8 subId) external view returns (uint256[] memory balances) {
        uint256 n = _assets.length;
        balances = new uint256[](n);
        uint256 mask = _positions[owner][subId].assetMask;
        for (uint256 i; mask != 0; ++i) {
            if (mask & 1 == 1) balances[i] = _balances[owner][subId][_assets[i]];
            mask >>= 1;
        }
    }

    /// @inheritdoc IMarginEngine
    function debtOf(address owner, uint8 subId) external view returns (uint256) {
        return uint256(_positions[owner][subId].scaledDebt).toAssetsUp(_vault.borrowIndex());
    }

    /// @inheritdoc IMarginEngine
    function accountHealth(address owner, uint8 subId) external view returns (AccountHealth memory) {
        return _valuation(_balances[owner][subId], _positions[owner][subId], _vault.borrowIndex(), address(0), false).h;
    }

    /// @inheritdoc IMarginEngine
    function liquidationHealth(address owner, uint8 subId) external view returns (AccountHealth memory) {
        return _valuation(_balances[owner][subId], _positions[owner][subId], _vault.borrowIndex(), address(0), true).h;
    }

    /// @inheritdoc IMarginEngine
    function previewLiquidation(address owner, uint8 subId, address collateral, uint256 repayAssets)
        external
        view
        returns (LiquidationQuote memory q)
    {
        (q,,) = _quote(owner, subId, _positions[owner][subId], collateral, repayAssets, _vault.borrowIndex());
    }

    function _listed(address asset) internal view returns (AssetConfig memory cfg) {
        cfg = _configs[asset];
        if (!cfg.listed) revert AssetNotListed(asset);
    }

    // ---------------------------------------------------------------- governance

    /// @inheritdoc IMarginEngine
    function listAsset(address asset, uint64 ltv, uint64 lt, uint64 maxDiscount, uint128 supplyCap)
        external
        onlyRole(DEFAULT_ADMIN_ROLE)
    {
        if (_configs[asset].listed) revert AssetAlreadyListed(asset);
        if (_assets.length == MAX_ASSETS) revert TooManyAssets();
        if (asset == address(0) || asset == _debtAsset) revert InvalidConfig();
        uint8 index = uint8(_assets.length);
        uint8 dec = IERC20Metadata(asset).decimals();
        if (dec > 36) revert InvalidConfig();
        _assets.push(asset);
        _configs[asset] =
            AssetConfig({listed: true, index: index, decimals: dec, ltv: 0, lt: 0, maxDiscount: 0, rampEnd: 0});
        emit AssetListed(asset, index, dec);
        _setAssetConfig(asset, ltv, lt, maxDiscount, supplyCap);
    }

    /// @inheritdoc IMarginEngine
    function setAssetConfig(address asset, uint64 ltv, uint64 lt, uint64 maxDiscount, uint128 supplyCap)
        external
        onlyRole(DEFAULT_ADMIN_ROLE)
    {
        _listed(asset);
        _setAssetConfig(asset, ltv, lt, maxDiscount, supplyCap);
    }

    function _setAssetConfig(address asset, uint64 ltv, uint64 lt, uint64 maxDiscount, uint128 supplyCap) internal {
        if (!_validRatios(ltv, lt, maxDiscount)) revert InvalidConfig();
        AssetConfig storage cfg = _configs[asset];
        // Governance's lt applies at once: any keeper ramp ends here.
        (cfg.ltv, cfg.lt, cfg.maxDiscount, cfg.rampEnd) = (ltv, lt, maxDiscount, 0);
        _supplies[asset].supplyCap = supplyCap;
        emit AssetConfigSet(asset, ltv, lt, maxDiscount, supplyCap);
    }

    /// @inheritdoc IMarginEngine
    function setProtectionModule(address module) external onlyRole(DEFAULT_ADMIN_ROLE) {
        _protectionModule = module;
        emit ProtectionModuleSet(module);
    }

    /// @inheritdoc IMarginEngine
    function setRiskParams(RiskParams calldata params) external onlyRole(DEFAULT_ADMIN_ROLE) {
        _setRiskParams(params);
    }

    /// @dev ltv < lt < 1, and a liquidation at the largest discount must still improve health: lt * (1 + d) < 1.
    function _validRatios(uint64 ltv, uint64 lt, uint64 maxDiscount) internal pure returns (bool) {
        return ltv < lt && maxDiscount <= MAX_DISCOUNT
            && uint256(lt).wMulUp(RiskMath.WAD + maxDiscount) < RiskMath.WAD;
    }

    function _setRiskParams(RiskParams memory params) internal {
        if (params.minDiscount > MAX_MIN_DISCOUNT || params.fullCloseHealth > RiskMath.WAD) revert InvalidConfig();
        _params = params;
        emit RiskParamsSet(params.minDiscount, params.fullCloseHealth, params.fullCloseDebtValue, params.minDebt);
    }

    /// @inheritdoc IMarginEngine
    function setRiskBounds(address asset, RiskBounds calldata b) external onlyRole(DEFAULT_ADMIN_ROLE) {
        _listed(asset);
        bool disabled = b.ltvMin == 0 && b.ltvMax == 0 && b.ltMin == 0 && b.ltMax == 0 && b.maxStep == 0
            && b.minInterval == 0 && b.rampDuration == 0;
        bool valid = b.ltvMin <= b.ltvMax && b.ltMin <= b.ltMax && b.ltMax < RiskMath.WAD && b.maxStep != 0
            && b.rampDuration != 0 && b.rampDuration <= MAX_RAMP_DURATION;
        if (!disabled && !valid) revert InvalidRiskBounds(asset);
        _bounds[asset] = b;
        emit RiskBoundsSet(asset, b.ltvMin, b.ltvMax, b.ltMin, b.ltMax, b.maxStep, b.minInterval, b.rampDuration);
    }

    // ---------------------------------------------------------------- bounded risk updates

    /// @inheritdoc IMarginEngine
    function updateRiskParams(address asset, uint64 ltv, uint64 lt) external onlyRole(RISK_KEEPER_ROLE) {
        AssetConfig memory cfg = _listed(asset);
        RiskBounds memory b = _bounds[asset];
        if (b.maxStep == 0) revert RiskBoundsNotSet(asset);
        _requireWithin(asset, ltv, b.ltvMin, b.ltvMax);
        _requireWithin(asset, lt, b.ltMin, b.ltMax);
        uint64 ltNow = _effectiveLt(asset, cfg);
        _requireStep(asset, cfg.ltv, ltv, b.maxStep);
        _requireStep(asset, ltNow, lt, b.maxStep);
        uint256 nextAllowed = uint256(_ramps[asset].lastUpdate) + b.minInterval;
        if (block.timestamp < nextAllowed) revert RiskUpdateTooSoon(asset, nextAllowed);
        if (!_validRatios(ltv, lt, cfg.maxDiscount)) revert InvalidRiskUpdate(asset, ltv, lt);

        // A lower lt ramps down from the effective value, so no health drops in this block; the rest applies now.
        uint40 now_ = uint40(block.timestamp); // unix seconds fit 40 bits for another 30,000 years
        uint40 rampEnd = lt < ltNow ? now_ + b.rampDuration : 0;
        AssetConfig storage stored = _configs[asset];
        (stored.ltv, stored.lt, stored.rampEnd) = (ltv, lt, rampEnd);
        _ramps[asset] = LtRamp({ltFrom: ltNow, start: now_, lastUpdate: now_});
        emit RiskParamsUpdated(asset, msg.sender, ltv, ltNow, lt, rampEnd);
    }

    function _requireWithin(address asset, uint64 value, uint64 min, uint64 max) internal pure {
        if (value < min || value > max) revert OutsideRiskBounds(asset, value, min, max);
    }

    function _requireStep(address asset, uint64 current, uint64 requested, uint64 maxStep) internal pure {
        uint64 step = requested > current ? requested - current : current - requested;
        if (step > maxStep) revert RiskStepTooLarge(asset, current, requested, maxStep);
    }
}
