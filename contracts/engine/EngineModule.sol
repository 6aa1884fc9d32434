// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {IERC20Metadata} from "@openzeppelin/contracts/token/ERC20/extensions/IERC20Metadata.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {ILiquidationCallback} from "../interfaces/ILiquidationCallback.sol";
import {IOracleRouter} from "../interfaces/IOracleRouter.sol";
import {IScenarioGrid} from "../interfaces/IScenarioGrid.sol";
import {IVault} from "../interfaces/IVault.sol";
import {GridMath} from "../libraries/GridMath.sol";
import {RiskMath} from "../libraries/RiskMath.sol";
import {EngineBase} from "./EngineBase.sol";

/// @title EngineModule
/// @notice Liquidation and write-off of the MarginEngine, run only by DELEGATECALL from the engine that created it
/// (so over the engine's storage, under its re-entrancy lock, with its events and token balances); the rules are
/// documented on IMarginEngine. Called directly it reverts `DirectCall`. It exists to keep each half of the
/// engine well under EIP-170.
contract EngineModule is EngineBase, IScenarioGrid {
    using RiskMath for uint256;
    using SafeERC20 for IERC20;

    /// @dev Close factor while health is near 1: 50 % of the debt.
    uint256 internal constant HALF_CLOSE = 0.5e18;
    /// @dev Discount kept below the health-neutral one (health / lt - 1), so that rounding of a liquidation's
    /// amounts cannot bring health down at the cap: 1e-6 (0.0001 %).
    uint256 internal constant HEALTH_NEUTRAL_MARGIN = 1e12;

    address private immutable _self = address(this);

    /// @notice The module was called directly instead of through its engine.
    error DirectCall();

    modifier onlyDelegated() {
        if (address(this) == _self) revert DirectCall();
        _;
    }

    constructor(IVault vault_, IOracleRouter oracle_) EngineBase(vault_, oracle_) {}

    function previewLiquidation(address owner, uint8 subId, address collateral, uint256 repayAssets)
        external
        view
        onlyDelegated
        returns (LiquidationQuote memory q)
    {
        (q,,) = _quote(owner, subId, _positions[owner][subId], collateral, repayAssets, _vault.borrowIndex());
    }

    function liquidate(
        address owner,
        uint8 subId,
        address collateral,
        uint256 repayAssets,
        uint256 minSeized,
        address receiver,
        bytes calldata data
    ) external onlyDelegated returns (uint256 repaid, uint256 seized) {
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
        if (v.gridCount != 0) {
            // Under a grid: the whole grid again, with the seized collateral's leg and the debt's after the
            // liquidation (any scenario may bind afterwards).
            v.longs[v.wantLeg].value = (balance - seized).valueDown(price, decimals);
            v.shorts[0].value = debtAfter.valueUp(v.debtPrice, _debtDecimals);
            uint256 after_ = GridMath.health(v.longs, v.shorts, v.gridCount).health;
            if (after_ < v.h.health) revert LiquidationLowersHealth(v.h.health, after_);
            return;
        }
        uint256 ltAfter = v.h.ltWeighted - balance.valueDown(price, decimals).wMulDown(lt)
            + (balance - seized).valueDown(price, decimals).wMulDown(lt);
        uint256 healthAfter = ltAfter.wDivDown(debtAfter.valueUp(v.debtPrice, _debtDecimals));
        if (healthAfter < v.h.health) revert LiquidationLowersHealth(v.h.health, healthAfter);
    }

    /// @dev Discount, close factor and the requested amount for an unhealthy account; reverts NotLiquidatable when
    /// `h` (the figures after any write-off) is healthy.
    function _repayLimits(AccountHealth memory h, uint256 requested, uint64 maxDiscount)
        internal
        view
        returns (LiquidationQuote memory q)
    {
        // Under a grid, writing off an insolvent account's uncovered debt can by itself restore health (a scenario
        // may price the debt down further than the collateral): there is nothing left to liquidate.
        if (h.ltWeighted >= h.debtValue) revert NotLiquidatable(h.health);
        StoredParams memory rp = _params;
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

    // ---------------------------------------------------------------- listing (admin)

    /// @dev The rules are on IMarginEngine.
    function listAsset(address asset, uint64 ltv, uint64 lt, uint64 maxDiscount, uint128 supplyCap)
        external
        onlyDelegated
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
        uint256 count = _params.gridCount;
        if (count == 0) return;
        // Under a grid the new asset moves to its lt in every scenario (the additive rule's treatment, no credit),
        // so that no holder of it is ever unpriceable by the grid; the ramp's start is the same column.
        if (index >= GRID_MAX_ASSETS) revert TooManyAssets();
        _setLtColumn(asset, lt, count);
    }

    /// @dev `asset`'s column and ramp start: its lt, in whole millionths rounded down, in each of `count` scenarios.
    function _setLtColumn(address asset, uint64 lt, uint256 count) internal {
        uint256[4] memory col = [uint256(0), 0, 0, 0];
        uint256 m = uint256(lt) / GridMath.MOVE_UNIT;
        for (uint256 s; s < count; ++s) {
            col[s >> 3] |= m << ((s & 7) << 5);
        }
        _requireColumn(asset, col, count);
        _columns[asset] = col;
        _rampFrom[asset] = col;
        emit GridColumnSet(asset, col);
    }

    /// @dev The rules are on IMarginEngine.
    function setAssetConfig(address asset, uint64 ltv, uint64 lt, uint64 maxDiscount, uint128 supplyCap)
        external
        onlyDelegated
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

    // ---------------------------------------------------------------- the scenario grid's governance

    /// @dev Longest grid ramp the limits may ask for.
    uint32 internal constant MAX_GRID_RAMP = 365 days;
    /// @dev Multipliers in whole millionths: 0.0001 to 100.
    uint256 internal constant MIN_MOVE = 100;
    uint256 internal constant MAX_MOVE = 100e6;
    /// @dev Listed collateral assets a grid may cover (the debt asset comes on top).
    uint256 internal constant GRID_MAX_ASSETS = 16;
    /// @dev The bit of the debt asset in `setGrid`'s coverage mask (listed assets use their index, below 32).
    uint256 internal constant DEBT_BIT = 1 << 32;

    function setGrid(uint8 count, uint64 initialScale, address[] calldata assets, uint256[4][] calldata columns)
        external
        onlyDelegated
        onlyRole(DEFAULT_ADMIN_ROLE)
    {
        if (count > GridMath.MAX_SCENARIOS || (count != 0 && (initialScale == 0 || initialScale > RiskMath.WAD))) {
            revert InvalidGrid(count, initialScale);
        }
        _params.gridCount = count;
        _grid = GridConfig({initialScale: initialScale, rampStart: 0, rampEnd: 0, lastUpdate: _grid.lastUpdate});
        emit GridSet(count, initialScale);
        if (count == 0) return;
        if (_assets.length > GRID_MAX_ASSETS) revert TooManyAssets();
        if (assets.length != columns.length) revert GridAssetsMismatch(address(0));
        uint256 covered = 0;
        for (uint256 k; k < assets.length; ++k) {
            address asset = assets[k];
            uint256 bit = asset == _debtAsset ? DEBT_BIT : 1 << _listed(asset).index;
            if (covered & bit != 0) revert GridAssetsMismatch(asset);
            covered |= bit;
            _requireColumn(asset, columns[k], count);
            _columns[asset] = columns[k];
            emit GridColumnSet(asset, columns[k]);
        }
        if (covered != DEBT_BIT | ((1 << _assets.length) - 1)) revert GridAssetsMismatch(address(0));
    }

    function setGridBounds(
        address[] calldata assets,
        uint256[4][] calldata lower,
        uint256[4][] calldata upper,
        GridLimits calldata limits
    ) external onlyDelegated onlyRole(DEFAULT_ADMIN_ROLE) {
        if (limits.maxStep == 0 || limits.rampDuration == 0 || limits.rampDuration > MAX_GRID_RAMP) {
            revert InvalidGridBounds(address(0), 0);
        }
        if (assets.length != lower.length || assets.length != upper.length) revert InvalidGridBounds(address(0), 0);
        _gridLimits = limits;
        emit GridLimitsSet(limits.maxStep, limits.minInterval, limits.rampDuration);
        for (uint256 k; k < assets.length; ++k) {
            address asset = assets[k];
            if (asset != _debtAsset) _listed(asset);
            (uint256[4] memory lower_, uint256[4] memory upper_) = (lower[k], upper[k]);
            for (uint256 s; s < GridMath.MAX_SCENARIOS; ++s) {
                (uint256 lo, uint256 hi) = (GridMath.millionths(lower_, s), GridMath.millionths(upper_, s));
                bool off = lo == 0 && hi == 0;
                if (!off && (lo < MIN_MOVE || hi > MAX_MOVE || lo > hi)) revert InvalidGridBounds(asset, s);
            }
            (_lower[asset], _upper[asset]) = (lower[k], upper[k]);
            emit GridBoundsSet(asset, lower[k], upper[k]);
        }
    }

    function updateGrid(address[] calldata assets, uint256[4][] calldata columns)
        external
        onlyDelegated
        onlyRole(RISK_KEEPER)
    {
        uint256 count = _params.gridCount;
        if (count == 0) revert GridNotSet();
        GridLimits memory lim = _gridLimits;
        if (lim.maxStep == 0) revert GridBoundsNotSet();
        uint256 nextAllowed = uint256(_grid.lastUpdate) + lim.minInterval;
        if (block.timestamp < nextAllowed) revert GridUpdateTooSoon(nextAllowed);
        if (assets.length != columns.length) revert GridAssetsMismatch(address(0));

        // Every column restarts its ramp from the one in force now: nothing jumps in this block.
        uint256 n = _assets.length;
        for (uint256 i; i <= n; ++i) {
            address asset = i == n ? _debtAsset : _assets[i];
            _rampFrom[asset] = _column(asset, count);
        }
        for (uint256 k; k < assets.length; ++k) {
            _checkUpdate(assets[k], columns[k], count, lim.maxStep);
            _columns[assets[k]] = columns[k];
            emit GridColumnSet(assets[k], columns[k]);
        }
        uint40 start = uint40(block.timestamp); // unix seconds fit 40 bits for another 30,000 years
        uint40 end = start + lim.rampDuration;
        (_grid.rampStart, _grid.rampEnd, _grid.lastUpdate) = (start, end, start);
        emit GridUpdated(msg.sender, start, end);
    }

    /// @dev The risk keeper's new column for `asset`: valid, within its bounds, and at most `maxStep` from the
    /// column in force (already stored as the ramp's start).
    function _checkUpdate(address asset, uint256[4] memory col, uint256 count, uint256 maxStep) internal view {
        if (asset != _debtAsset) _listed(asset);
        _requireColumn(asset, col, count);
        (uint256[4] memory lo, uint256[4] memory hi) = (_lower[asset], _upper[asset]);
        uint256[4] memory current = _rampFrom[asset];
        for (uint256 s; s < count; ++s) {
            (uint256 m, uint256 cur) = (GridMath.millionths(col, s), GridMath.millionths(current, s));
            (uint256 l, uint256 u) = (GridMath.millionths(lo, s), GridMath.millionths(hi, s));
            if (m < l || m > u) revert GridOutsideBounds(asset, s, m, l, u);
            if ((m > cur ? m - cur : cur - m) > maxStep) revert GridStepTooLarge(asset, s, cur, m, maxStep);
        }
    }

    /// @inheritdoc IScenarioGrid
    function grid(address asset) external view onlyDelegated returns (GridView memory g) {
        g.count = _params.gridCount;
        (g.config, g.limits) = (_grid, _gridLimits);
        (g.target, g.rampFrom, g.lower, g.upper) = (_columns[asset], _rampFrom[asset], _lower[asset], _upper[asset]);
        if (g.count != 0) g.effective = _column(asset, g.count);
    }

    /// @dev Every multiplier of the grid's first `count` scenarios within [MIN_MOVE, MAX_MOVE], none beyond them.
    function _requireColumn(address asset, uint256[4] memory column, uint256 count) internal pure {
        for (uint256 s; s < GridMath.MAX_SCENARIOS; ++s) {
            uint256 m = GridMath.millionths(column, s);
            if (s < count ? m < MIN_MOVE || m > MAX_MOVE : m != 0) revert InvalidMove(asset, s, m);
        }
    }
}
