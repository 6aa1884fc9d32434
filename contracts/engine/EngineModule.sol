// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {ILiquidationCallback} from "../interfaces/ILiquidationCallback.sol";
import {IOracleRouter} from "../interfaces/IOracleRouter.sol";
import {IVault} from "../interfaces/IVault.sol";
import {GridMath} from "../libraries/GridMath.sol";
import {RiskMath} from "../libraries/RiskMath.sol";
import {EngineBase} from "./EngineBase.sol";

/// @title EngineModule
/// @notice Liquidation and write-off of the MarginEngine, run only by DELEGATECALL from the engine that created it
/// (so over the engine's storage, under its re-entrancy lock, with its events and token balances); the rules are
/// documented on IMarginEngine. Called directly it reverts `DirectCall`. It exists to keep each half of the
/// engine well under EIP-170.
contract EngineModule is EngineBase {
    using RiskMath for uint256;
    using SafeERC20 for IERC20;

    /// @dev Close factor while health is near 1: 50 % of the debt.
    uint256 internal constant HALF_CLOSE = 0.5e18;
    /// @dev Discount kept below the health-neutral one (health / lt - 1), so that rounding of a liquidation's
    /// amounts cannot bring health down at the cap: 1e-6 (0.0001 %).
    uint256 internal constant HEALTH_NEUTRAL_MARGIN = 1e12;

    constructor(IVault vault_, IOracleRouter oracle_) EngineBase(vault_, oracle_) {}

    function previewLiquidation(address owner, uint8 subId, address collateral, uint256 repayAssets)
        external
        view
        onlyDelegated
        returns (LiquidationQuote memory q)
    {
        (q,) = _quote(owner, subId, _positions[owner][subId], _debtAsset, collateral, repayAssets, _vault.borrowIndex());
    }

    function previewLiquidationDebt(
        address owner,
        uint8 subId,
        address debtAsset,
        address collateral,
        uint256 repayAssets
    ) external view onlyDelegated returns (LiquidationQuote memory q) {
        (q,) = _quote(owner, subId, _positions[owner][subId], debtAsset, collateral, repayAssets, _vault.borrowIndex());
    }

    function liquidate(
        address owner,
        uint8 subId,
        address collateral,
        uint256 repayAssets,
        uint256 minSeized,
        address receiver,
        bytes calldata data
    ) external onlyDelegated returns (uint256, uint256) {
        return _liquidate(owner, subId, _debtAsset, collateral, repayAssets, minSeized, receiver, data);
    }

    function liquidateDebt(
        address owner,
        uint8 subId,
        address debtAsset,
        address collateral,
        uint256 repayAssets,
        uint256 minSeized,
        address receiver,
        bytes calldata data
    ) external onlyDelegated returns (uint256, uint256) {
        return _liquidate(owner, subId, debtAsset, collateral, repayAssets, minSeized, receiver, data);
    }

    function _liquidate(
        address owner,
        uint8 subId,
        address debtAsset,
        address collateral,
        uint256 repayAssets,
        uint256 minSeized,
        address receiver,
        bytes calldata data
    ) internal returns (uint256 repaid, uint256 seized) {
        (LiquidationQuote memory q, Valuation memory v) =
            _settleLiquidation(owner, subId, debtAsset, collateral, repayAssets, minSeized);
        (repaid, seized) = (q.repaid, q.seized);
        Debt memory d = v.debts[v.wantDebt];
        // The loss lands before anything leaves: no one (a lending liquidator in its callback included) can redeem
        // from a vault at a price that ignores it.
        _realize(v.debts);
        IERC20(collateral).safeTransfer(receiver, seized);
        if (data.length != 0) ILiquidationCallback(msg.sender).onLiquidation(collateral, seized, repaid, data);
        // Pulled, measured, then booked, as `repay` does: the vault never books cash it did not receive.
        IVault vault = _vaultOf(d.asset);
        _pullExact(d.asset, address(vault), repaid);
        vault.noteRepayment(repaid, v.wantRepaid);
    }

    /// @dev The rules are on IMarginEngine.writeOff. Runs under the engine's `nonReentrant`; the calls before its
    /// writes are the listed vaults' (`accrue`, `borrowIndex`) and the router's.
    // slither-disable-next-line reentrancy-no-eth
    function writeOff(address owner, uint8 subId) external onlyDelegated returns (uint256 badDebt) {
        Position memory p = _positions[owner][subId];
        Valuation memory v = _valuation(owner, subId, p, _vault.accrue(), address(0), address(0), true);
        // A missing price could hide collateral worth the debt: forgiving debt on a guess is never safe. The call
        // only reverts, with the router's reason.
        // slither-disable-next-line unused-return
        if (v.unpriced != address(0)) _oracle.price(v.unpriced);
        uint256 debtValue = v.h.debtValue;
        if (!_writeOff(v)) revert NotInsolvent(v.cover, debtValue);
        badDebt = _bookDebts(owner, subId, p, v.debts);
        _realize(v.debts);
    }

    /// @dev Quotes and books a liquidation and emits its events; the caller does the external calls.
    function _settleLiquidation(
        address owner,
        uint8 subId,
        address debtAsset,
        address collateral,
        uint256 repayAssets,
        uint256 minSeized
    ) internal returns (LiquidationQuote memory q, Valuation memory v) {
        uint256 index = _vault.accrue();
        // The repaid vault's index must be stored before its books change (the others accrue as they realise).
        // slither-disable-next-line unused-return
        if (debtAsset != _debtAsset) IVault(_debtConfigs[debtAsset].vault).accrue();
        Position memory p = _positions[owner][subId];
        (q, v) = _quote(owner, subId, p, debtAsset, collateral, repayAssets, index);
        if (q.seized < minSeized) revert SeizedBelowMinimum(q.seized, minSeized);

        uint256 balance = _balances[owner][subId][collateral] - q.seized;
        _balances[owner][subId][collateral] = balance;
        // An exact integer check, not a time comparison (see _effectiveLt).
        // slither-disable-next-line incorrect-equality
        if (balance == 0) p.assetMask &= ~uint32(1 << _configs[collateral].index);
        _supplies[collateral].totalSupplied -= uint128(q.seized); // seized <= a balance <= totalSupplied
        _bookDebts(owner, subId, p, v.debts);

        if (debtAsset == _debtAsset) {
            emit Liquidated(msg.sender, owner, subId, collateral, q.repaid, q.seized, q.discount);
        } else {
            emit LiquidatedDebt(msg.sender, owner, subId, debtAsset, collateral, q.repaid, q.seized, q.discount);
        }
    }

    /// @dev The whole liquidation computation, shared by the liquidations and their previews (the rules are on
    /// IMarginEngine.liquidate). Returns the quote and the valuation, with the scaled debt the repayment
    /// extinguishes (`wantRepaid`) and each debt's write-off (`off`: the insolvency write-off first, plus what
    /// the last collateral leaves or the liquidation leaves uncovered).
    function _quote(
        address owner,
        uint8 subId,
        Position memory p,
        address debtAsset,
        address collateral,
        uint256 requested,
        uint256 index
    ) internal view returns (LiquidationQuote memory q, Valuation memory v) {
        AssetConfig memory cfg = _listed(collateral);
        v = _valuation(owner, subId, p, index, collateral, debtAsset, true);
        if (v.h.debtValue == 0 || v.h.ltWeighted >= v.h.debtValue) revert NotLiquidatable(v.h.health);
        if (v.wantDebt == v.debts.length) {
            if (_debtConfigs[debtAsset].vault == address(0)) revert DebtNotListed(debtAsset);
            revert NothingToRepay();
        }
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
        if (v.unpriced == address(0) && _writeOff(v)) _setHealth(v);
        Debt memory d = v.debts[v.wantDebt];

        q = _repayLimits(v.h, d, requested, cfg.maxDiscount);
        q.discount = q.discount.min(degraded ? _params.minDiscount : _neutralDiscount(v.h.health, v.wantLt));
        (q.repaid, q.seized) = _seizeAmounts(q.repaid, q.discount, v.wantBalance, d, v.wantPrice, cfg.decimals);
        // An exact integer check, not a time comparison (see _effectiveLt).
        // slither-disable-next-line incorrect-equality
        if (q.seized == 0) revert NothingSeized();

        // An exact integer check, not a time comparison (see _effectiveLt).
        // slither-disable-next-line incorrect-equality
        v.wantRepaid = q.repaid == d.amount ? d.scaled : q.repaid.toScaledDown(d.index);
        d.scaled -= v.wantRepaid;
        uint256 debtAfter = d.scaled.toAssetsUp(d.index);
        bool closed = false;
        // An exact integer check, not a time comparison (see _effectiveLt).
        // slither-disable-next-line incorrect-equality
        if (q.seized == v.wantBalance) {
            // A whole collateral taken may leave less than minDebt (the next collateral settles it); the last one
            // realises whatever debt remains, in every debt asset, as bad debt in this call.
            // slither-disable-next-line incorrect-equality
            if (p.assetMask == uint32(1 << cfg.index)) closed = _closeAll(v.debts);
        } else {
            // A repayment the liquidator chose must not leave dust.
            uint256 minDebt = _minDebt(d.asset);
            if (debtAfter != 0 && debtAfter < minDebt) revert LiquidationLeavesDust(debtAfter, minDebt);
        }
        // The debt value left: the other debts' and the repaid one's remainder (0 when the account is closed).
        uint256 valueAfter = debtAfter.valueUp(d.price, d.decimals);
        if (!closed && !degraded && v.h.debtValue - d.value + valueAfter != 0) {
            _requireHealthKept(v, q.seized, cfg.decimals, d.value, valueAfter, v.wantDebt);
            // A discount above the cover's minDiscount can leave a nearly insolvent account unable to cover what
            // remains: that loss is written off in the same call too, so every liquidation leaves its account
            // covered (or without debt).
            if (v.unpriced == address(0)) _writeOffAfter(v, q.seized, cfg, d, debtAfter, valueAfter);
        }
        // An exact integer check, not a time comparison (see _effectiveLt).
        // slither-disable-next-line incorrect-equality
        if (d.off != 0) q.badDebt = d.off.toAssetsUp(d.index);
    }

    /// @dev Every debt's remainder written off (the last collateral is gone); true.
    function _closeAll(Debt[] memory debts) internal pure returns (bool) {
        for (uint256 k; k < debts.length; ++k) {
            (debts[k].off, debts[k].scaled) = (debts[k].off + debts[k].scaled, 0);
        }
        return true;
    }

    /// @dev After seizing `seized` of the wanted collateral, with the repaid debt `d` at `debtAfter` (value
    /// `valueAfter`): the write-off of whatever the remaining cover no longer covers, every debt in proportion.
    function _writeOffAfter(
        Valuation memory v,
        uint256 seized,
        AssetConfig memory cfg,
        Debt memory d,
        uint256 debtAfter,
        uint256 valueAfter
    ) internal view {
        uint256 onePlus = RiskMath.WAD + uint256(_params.minDiscount).min(cfg.maxDiscount);
        v.cover = v.cover - v.wantBalance.valueDown(v.wantPrice, cfg.decimals).wDivDown(onePlus)
            + (v.wantBalance - seized).valueDown(v.wantPrice, cfg.decimals).wDivDown(onePlus);
        v.h.debtValue = v.h.debtValue - d.value + valueAfter;
        (d.amount, d.value) = (debtAfter, valueAfter);
        _writeOff(v);
    }

    /// @dev The largest discount at which seizing collateral of liquidation threshold `lt` keeps `health`:
    /// `health / lt - 1`, less a margin for the rounding of the amounts; 0 when there is none.
    function _neutralDiscount(uint256 health, uint256 lt) internal pure returns (uint256) {
        uint256 neutral = health.wDivDown(lt);
        return neutral > RiskMath.WAD + HEALTH_NEUTRAL_MARGIN ? neutral - RiskMath.WAD - HEALTH_NEUTRAL_MARGIN : 0;
    }

    /// @dev Rule 6: the health after seizing `seized` of the wanted collateral with the repaid debt's value going
    /// from `valueBefore` to `valueAfter` (the other debts unchanged), figured exactly as `accountHealth` will
    /// figure it (same prices and indexes), is not below the health before.
    function _requireHealthKept(
        Valuation memory v,
        uint256 seized,
        uint8 decimals,
        uint256 valueBefore,
        uint256 valueAfter,
        uint256 debtLeg
    ) internal view {
        (uint256 price, uint256 balance, uint256 lt) = (v.wantPrice, v.wantBalance, v.wantLt);
        uint256 after_;
        if (v.gridCount != 0) {
            // Under a grid: the whole grid again, with the seized collateral's leg and the repaid debt's after the
            // liquidation (any scenario may bind afterwards).
            v.longs[v.wantLeg].value = (balance - seized).valueDown(price, decimals);
            v.shorts[debtLeg].value = valueAfter;
            after_ = GridMath.health(v.longs, v.shorts, v.gridCount).health;
        } else {
            uint256 ltAfter = v.h.ltWeighted - balance.valueDown(price, decimals).wMulDown(lt)
                + (balance - seized).valueDown(price, decimals).wMulDown(lt);
            after_ = ltAfter.wDivDown(v.h.debtValue - valueBefore + valueAfter);
        }
        if (after_ < v.h.health) revert LiquidationLowersHealth(v.h.health, after_);
    }

    /// @dev Discount, close factor and the requested amount of debt `d` for an unhealthy account; reverts
    /// NotLiquidatable when `h` (the figures after any write-off) is healthy. The close factor's debt value and the
    /// health are the account's (every debt); the close factor and the dust rule apply to `d`.
    function _repayLimits(AccountHealth memory h, Debt memory d, uint256 requested, uint64 maxDiscount)
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
        q.maxRepay = fullClose ? d.amount : d.amount.wMulUp(HALF_CLOSE);
        if (d.amount - q.maxRepay < _minDebt(d.asset)) q.maxRepay = d.amount;
        q.repaid = requested.min(q.maxRepay);
        // An exact integer check, not a time comparison (see _effectiveLt).
        // slither-disable-next-line incorrect-equality
        if (q.repaid == 0) revert ZeroAmount();
    }

    /// @dev Collateral bought by `repaid` of debt `d` at `discount`, rounded down; when it exceeds `balance`, the
    /// whole balance at its discounted value, rounded up (never above the original `repaid`).
    function _seizeAmounts(
        uint256 repaid,
        uint256 discount,
        uint256 balance,
        Debt memory d,
        uint256 collPrice,
        uint8 collDecimals
    ) internal pure returns (uint256, uint256 seized) {
        uint256 seizeValue = repaid.valueDown(d.price, d.decimals).wMulDown(RiskMath.WAD + discount);
        seized = seizeValue.amountDown(collPrice, collDecimals);
        if (seized <= balance) return (repaid, seized);
        uint256 payValue = balance.valueUp(collPrice, collDecimals).wDivUp(RiskMath.WAD + discount);
        return (payValue.amountUp(d.price, d.decimals).min(repaid), balance);
    }
}
