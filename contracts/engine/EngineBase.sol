// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";
import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {IERC20Metadata} from "@openzeppelin/contracts/token/ERC20/extensions/IERC20Metadata.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {IMarginEngineTypes} from "../interfaces/IMarginEngine.sol";
import {IOracleRouter} from "../interfaces/IOracleRouter.sol";
import {IVault} from "../interfaces/IVault.sol";
import {GridMath} from "../libraries/GridMath.sol";
import {RiskMath} from "../libraries/RiskMath.sol";

/// @title EngineBase
/// @notice The engine's state and the helpers both of its halves use: `MarginEngine` (accounts, borrowing,
/// governance, views) and `EngineModule` (liquidation and write-off), which the engine runs by DELEGATECALL
/// over this same storage. Both inherit this contract and nothing else with storage, so their layouts are one
/// layout by construction; the module is created by the engine's constructor with the engine's own immutables.
abstract contract EngineBase is AccessControl, IMarginEngineTypes {
    using RiskMath for uint256;
    using SafeERC20 for IERC20;

    /// @dev Collateral assets fit in a 32-bit account mask.
    uint256 internal constant MAX_ASSETS = 32;
    /// @dev Debt assets (the primary included) fit in the position's 8-bit debt mask.
    uint256 internal constant MAX_DEBTS = 8;
    bytes32 internal constant RISK_KEEPER = keccak256("RISK_KEEPER_ROLE");
    /// @dev Cap of any asset's liquidation discount: 25 %.
    uint64 internal constant MAX_DISCOUNT = 0.25e18;
    /// @dev Cap of the discount at health just below 1: 5 %.
    uint64 internal constant MAX_MIN_DISCOUNT = 0.05e18;

    IVault internal immutable _vault;
    IOracleRouter internal immutable _oracle;
    address internal immutable _debtAsset;
    uint8 internal immutable _debtDecimals;

    // Slither reads one contract at a time: the variables marked uninitialized-state below are written in the
    // other half (the module lists assets and sets grids; the engine ramps lts).
    // slither-disable-next-line uninitialized-state
    address[] internal _assets;
    // slither-disable-next-line uninitialized-state
    mapping(address asset => AssetConfig) internal _configs;
    mapping(address asset => AssetSupply) internal _supplies;
    /// @dev RiskParams as stored, with the grid's scenario count in the slot every valuation reads anyway, so the
    /// additive rule (no grid) costs no extra storage read.
    struct StoredParams {
        uint64 minDiscount;
        uint64 fullCloseHealth;
        uint120 fullCloseDebtValue;
        uint8 gridCount;
        uint128 minDebt;
    }

    // slither-disable-next-line uninitialized-state
    StoredParams internal _params;
    mapping(address owner => mapping(uint8 subId => Position)) internal _positions;
    mapping(address owner => mapping(uint8 subId => mapping(address asset => uint256))) internal _balances;
    // slither-disable-next-line uninitialized-state
    mapping(address asset => RiskBounds) internal _bounds;
    // slither-disable-next-line uninitialized-state
    mapping(address asset => LtRamp) internal _ramps;
    address internal _protectionModule;
    // slither-disable-next-line uninitialized-state
    GridConfig internal _grid;
    GridLimits internal _gridLimits;
    // slither-disable-next-line uninitialized-state
    mapping(address asset => uint256[4]) internal _columns;
    // slither-disable-next-line uninitialized-state
    mapping(address asset => uint256[4]) internal _rampFrom;
    mapping(address asset => uint256[4]) internal _lower;
    mapping(address asset => uint256[4]) internal _upper;
    /// @dev The debt assets, the primary first (written by the engine's constructor and `listDebt`).
    // slither-disable-next-line uninitialized-state
    address[] internal _debtList;
    // slither-disable-next-line uninitialized-state
    mapping(address asset => DebtConfig) internal _debtConfigs;
    /// @dev Scaled debts in the debt assets other than the primary (whose figure is in the position).
    mapping(address owner => mapping(uint8 subId => mapping(address asset => uint256))) internal _scaledDebts;

    /// @dev Where this code is deployed: the engine's modules refuse to run anywhere but in their engine.
    address private immutable _self = address(this);

    /// @notice A module was called directly instead of through its engine.
    error DirectCall();

    modifier onlyDelegated() {
        if (address(this) == _self) revert DirectCall();
        _;
    }

    constructor(IVault vault_, IOracleRouter oracle_) {
        if (address(vault_) == address(0) || address(oracle_) == address(0)) revert InvalidConfig();
        _vault = vault_;
        _oracle = oracle_;
        _debtAsset = vault_.asset();
        _debtDecimals = IERC20Metadata(_debtAsset).decimals();
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

    /// @dev One debt a sub-account owes, as the valuation and the liquidation use it.
    struct Debt {
        address asset;
        uint8 decimals;
        uint256 index; // its vault's borrow index now (RAY)
        uint256 scaled; // the scaled debt, less what a write-off or the liquidation takes off
        uint256 amount; // `scaled` in assets, rounded up
        uint256 price; // WAD
        uint256 value; // `amount` in WAD USD, rounded up
        uint256 off; // scaled debt written off (realised as bad debt in its vault)
    }

    /// @dev Risk figures of a sub-account with what the callers need beside them, in memory to spare the stack.
    struct Valuation {
        AccountHealth h; // `debt` is the primary debt asset's; `debtValue` counts every debt
        Debt[] debts; // every debt owed, the primary first
        uint256 wantDebt; // the wanted debt's index in `debts`; `debts.length` when not owed
        uint256 wantRepaid; // liquidation: the scaled debt of the wanted debt its repayment extinguishes
        uint256 wantPrice; // WAD; 0 when the wanted asset is not held, or (lenient) has no valid price
        uint256 wantBalance; // the wanted asset's balance
        uint256 wantLt; // the wanted asset's effective lt (when held)
        uint256 cover; // lenient only: Σ value_down(c_i) / (1 + min(minDiscount, maxDiscount_i)), rounded down
        address unpriced; // lenient only: the first held asset without a valid price, or address(0)
        uint256 minDiscount;
        uint256 gridCount; // 0: the additive rule; else the grid's scenarios, and the fields below are set
        GridMath.Leg[] longs; // the held collateral, in asset-list order
        GridMath.Leg[] shorts; // the debts, in `debts` order
        uint256 wantLeg; // `want`'s index in `longs` (when held)
        uint256 binding; // the scenario setting health
    }

    /// @dev The risk figures of a sub-account, reading each price once. Strict (new risk, the `accountHealth` view)
    /// reverts with the router's error for any invalid price. Lenient (liquidation, write-off) values a held asset
    /// whose price is invalid at zero, so a dust balance of it cannot freeze a liquidation; a missing debt-asset
    /// price still reverts. `want`'s price is returned so callers do not read the oracle twice. `index` is the
    /// primary vault's borrow index; the other debts use their vault's `borrowIndex()` (what `accrue()` returns
    /// in this block).
    function _valuation(
        address owner,
        uint8 subId,
        Position memory p,
        uint256 index,
        address want,
        address wantDebt,
        bool lenient
    ) internal view returns (Valuation memory v) {
        v.debts = _debtsOf(owner, subId, p, index);
        (v.minDiscount, v.gridCount) = (_params.minDiscount, _params.gridCount);
        uint256 n = v.debts.length;
        v.wantDebt = n;
        if (v.gridCount != 0) v.shorts = new GridMath.Leg[](n);
        for (uint256 k; k < n; ++k) {
            Debt memory d = v.debts[k];
            d.price = _oracle.price(d.asset);
            d.value = d.amount.valueUp(d.price, d.decimals);
            v.h.debtValue += d.value;
            if (d.asset == wantDebt) v.wantDebt = k;
            if (v.gridCount != 0) v.shorts[k] = GridMath.Leg(d.value, _column(d.asset, v.gridCount));
        }
        // An exact integer check, not a time comparison (see _effectiveLt).
        // slither-disable-next-line incorrect-equality
        if (p.scaledDebt != 0) v.h.debt = v.debts[0].amount;
        _addCollaterals(v, _balances[owner][subId], p.assetMask, want, lenient);
        _setHealth(v);
    }

    /// @dev Values every collateral in `mask` into `v` (and its grid legs).
    function _addCollaterals(
        Valuation memory v,
        mapping(address => uint256) storage balances,
        uint256 mask,
        address want,
        bool lenient
    ) internal view {
        if (v.gridCount != 0) v.longs = new GridMath.Leg[](_heldCount(mask));
        uint256 j = 0;
        for (uint256 i; mask != 0; ++i) {
            // An exact integer check, not a time comparison (see _effectiveLt).
            // slither-disable-next-line incorrect-equality
            if (mask & 1 == 1) {
                address asset = _assets[i];
                uint256 value = _addCollateral(v, asset, balances[asset], asset == want, lenient);
                if (v.gridCount != 0) {
                    if (asset == want) v.wantLeg = j;
                    v.longs[j++] = GridMath.Leg(value, _column(asset, v.gridCount));
                }
            }
            mask >>= 1;
        }
    }

    /// @dev The debts `p` owes: the primary's at `index`, then every other in `debtAssets()` order.
    function _debtsOf(address owner, uint8 subId, Position memory p, uint256 index)
        internal
        view
        returns (Debt[] memory debts)
    {
        uint256 mask = p.debtMask;
        bool primary = p.scaledDebt != 0;
        debts = new Debt[](_heldCount(mask) + (primary ? 1 : 0));
        uint256 k = 0;
        if (primary) _setDebt(debts[k++], _debtAsset, _debtDecimals, p.scaledDebt, index);
        mapping(address => uint256) storage scaled = _scaledDebts[owner][subId];
        for (uint256 j = 1; mask >> j != 0; ++j) {
            if ((mask >> j) & 1 == 1) {
                address asset = _debtList[j];
                DebtConfig memory c = _debtConfigs[asset];
                _setDebt(debts[k++], asset, c.decimals, scaled[asset], IVault(c.vault).borrowIndex());
            }
        }
    }

    function _setDebt(Debt memory d, address asset, uint8 decimals, uint256 scaled, uint256 index) internal pure {
        (d.asset, d.decimals, d.index, d.scaled) = (asset, decimals, index, scaled);
        d.amount = scaled.toAssetsUp(index);
    }

    /// @dev The vault lending `asset` (a listed debt asset).
    function _vaultOf(address asset) internal view returns (IVault) {
        return asset == _debtAsset ? _vault : IVault(_debtConfigs[asset].vault);
    }

    /// @dev Adds one held collateral to the valuation's additive sums (and the cover when lenient); returns its
    /// value, rounded down.
    function _addCollateral(
        Valuation memory v,
        address asset,
        uint256 balance,
        bool wanted,
        bool lenient
    ) internal view returns (uint256 value) {
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
        uint256 lt = _effectiveLt(asset, cfg);
        if (wanted) (v.wantPrice, v.wantBalance, v.wantLt) = (assetPrice, balance, lt);
        value = balance.valueDown(assetPrice, cfg.decimals);
        AccountHealth memory h = v.h;
        h.collateralValue += value;
        h.ltWeighted += value.wMulDown(lt);
        h.ltvWeighted += value.wMulDown(cfg.ltv);
        if (lenient) v.cover += value.wDivDown(RiskMath.WAD + v.minDiscount.min(cfg.maxDiscount));
    }

    /// @dev `v.h.health` from the figures in `v`: the additive `ltWeighted / debtValue`, or under a grid the grid's
    /// health, with `ltWeighted = health · debtValue` (the debt value the maintenance grid supports, so
    /// `ltWeighted < debtValue` iff health < 1 still), `ltvWeighted = ltWeighted · initialScale`, the binding
    /// scenario, and `wantLt` the wanted collateral's move over the wanted debt's there (rounded up), the lt that
    /// makes the liquidation's health-neutral discount `health / wantLt - 1`.
    function _setHealth(Valuation memory v) internal view {
        AccountHealth memory h = v.h;
        // An exact integer check, not a time comparison (see _effectiveLt).
        // slither-disable-next-line incorrect-equality
        if (h.debtValue == 0) {
            h.health = type(uint256).max;
            return;
        }
        // An exact integer check (no grid), not a time comparison (see _effectiveLt).
        // slither-disable-next-line incorrect-equality
        if (v.gridCount == 0) {
            h.health = h.ltWeighted.wDivDown(h.debtValue);
            return;
        }
        for (uint256 k; k < v.debts.length; ++k) {
            v.shorts[k].value = v.debts[k].value;
        }
        GridMath.Result memory r = GridMath.health(v.longs, v.shorts, v.gridCount);
        (h.health, v.binding) = (r.health, r.binding);
        h.ltWeighted = r.health.wMulDown(h.debtValue);
        h.ltvWeighted = h.ltWeighted.wMulDown(_grid.initialScale);
        if (v.wantBalance != 0 && v.wantDebt < v.debts.length) {
            v.wantLt = GridMath.move(v.longs[v.wantLeg].column, r.binding).mulDivUp(
                RiskMath.WAD, GridMath.move(v.shorts[v.wantDebt].column, r.binding)
            );
        }
    }

    function _heldCount(uint256 mask) internal pure returns (uint256 n) {
        for (; mask != 0; mask >>= 1) n += mask & 1;
    }

    /// @dev `asset`'s column in force for a grid of `count` scenarios: its target, or while the grid ramps each
    /// multiplier on the line from its `from` value, the step rounded down (towards `from`). Reads only the words
    /// the grid uses.
    function _column(address asset, uint256 count) internal view returns (uint256[4] memory col) {
        uint256 words = (count + 7) >> 3;
        uint256[4] storage target = _columns[asset];
        for (uint256 w; w < words; ++w) {
            col[w] = target[w];
        }
        GridConfig memory g = _grid;
        if (block.timestamp >= g.rampEnd) return col;
        uint256[4] storage from = _rampFrom[asset];
        (uint256 elapsed, uint256 span) = (block.timestamp - g.rampStart, g.rampEnd - g.rampStart);
        for (uint256 s; s < count; ++s) {
            (uint256 w, uint256 shift) = (s >> 3, (s & 7) << 5);
            uint256 a = (from[w] >> shift) & 0xFFFFFFFF;
            uint256 b = (col[w] >> shift) & 0xFFFFFFFF;
            uint256 m = b >= a ? a + (b - a).mulDivDown(elapsed, span) : a - (a - b).mulDivDown(elapsed, span);
            col[w] = (col[w] & ~(uint256(0xFFFFFFFF) << shift)) | (m << shift);
        }
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

    /// @dev The smallest debt a borrow, repayment or liquidation may leave in `asset`.
    function _minDebt(address asset) internal view returns (uint256) {
        return asset == _debtAsset ? _params.minDebt : _debtConfigs[asset].minDebt;
    }

    function _listed(address asset) internal view returns (AssetConfig memory cfg) {
        cfg = _configs[asset];
        if (!cfg.listed) revert AssetNotListed(asset);
    }

    /// @dev The insolvency write-off: when the cover value is below the debt value, every debt is brought down to
    /// its share of the cover (`cover · value_j / debtValue`, in its asset rounded up for the lenders), adding what
    /// it takes off to `off`. Updates the debts and `v.h`'s debt and debt value (not the health); false when the
    /// account is covered.
    function _writeOff(Valuation memory v) internal pure returns (bool any) {
        AccountHealth memory h = v.h;
        uint256 total = h.debtValue;
        if (v.cover >= total) return false;
        h.debtValue = 0;
        for (uint256 k; k < v.debts.length; ++k) {
            Debt memory d = v.debts[k];
            uint256 keep = v.cover.mulDivUp(d.value, total).amountUp(d.price, d.decimals);
            if (keep < d.amount) {
                // keep < amount, so its scaled figure is at most `scaled`.
                uint256 off = d.scaled - keep.toScaledUp(d.index);
                (d.off, d.scaled, any) = (d.off + off, d.scaled - off, true);
                d.amount = d.scaled.toAssetsUp(d.index);
                d.value = d.amount.valueUp(d.price, d.decimals);
            }
            h.debtValue += d.value;
        }
        if (h.debt != 0) h.debt = v.debts[0].amount;
    }

    /// @dev Books every debt of `v` as it now stands (`scaled`) in the position and emits the write-offs; the
    /// caller realises them in the vaults (`_realize`) after its other effects. Returns the primary's bad debt.
    function _bookDebts(address owner, uint8 subId, Position memory p, Debt[] memory debts)
        internal
        returns (uint256 primaryBad)
    {
        for (uint256 k; k < debts.length; ++k) {
            Debt memory d = debts[k];
            if (d.asset == _debtAsset) {
                p.scaledDebt = uint128(d.scaled); // never above the stored figure
                if (d.off != 0) {
                    primaryBad = d.off.toAssetsUp(d.index);
                    emit BadDebtRealized(owner, subId, primaryBad);
                }
            } else {
                _scaledDebts[owner][subId][d.asset] = d.scaled;
                // An exact integer check, not a time comparison (see _effectiveLt).
                // slither-disable-next-line incorrect-equality
                if (d.scaled == 0) p.debtMask &= ~uint8(1 << _debtConfigs[d.asset].index);
                if (d.off != 0) emit BadDebtRealizedIn(owner, subId, d.asset, d.off.toAssetsUp(d.index));
            }
        }
        _positions[owner][subId] = p;
    }

    /// @dev Realises each debt's write-off in its own vault (accrued first, so the loss meets this block's index).
    function _realize(Debt[] memory debts) internal {
        for (uint256 k; k < debts.length; ++k) {
            Debt memory d = debts[k];
            if (d.off == 0) continue;
            IVault vault = _vaultOf(d.asset);
            // The vault returns the index the valuation already used (`borrowIndex()` in this block).
            // slither-disable-next-line unused-return
            if (d.asset != _debtAsset) vault.accrue();
            vault.realizeBadDebt(d.off);
        }
    }

    /// @dev ltv < lt < 1, and a liquidation at the largest discount must still improve health: lt * (1 + d) < 1.
    function _validRatios(uint64 ltv, uint64 lt, uint64 maxDiscount) internal pure returns (bool) {
        return ltv < lt && maxDiscount <= MAX_DISCOUNT && uint256(lt).wMulUp(RiskMath.WAD + maxDiscount) < RiskMath.WAD;
    }
}
