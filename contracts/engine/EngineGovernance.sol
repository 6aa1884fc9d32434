// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {IERC20Metadata} from "@openzeppelin/contracts/token/ERC20/extensions/IERC20Metadata.sol";
import {IOracleRouter} from "../interfaces/IOracleRouter.sol";
import {IScenarioGrid} from "../interfaces/IScenarioGrid.sol";
import {IVault} from "../interfaces/IVault.sol";
import {GridMath} from "../libraries/GridMath.sol";
import {RiskMath} from "../libraries/RiskMath.sol";
import {EngineBase} from "./EngineBase.sol";

/// @title EngineGovernance
/// @notice The MarginEngine's governance: listing collateral and debt assets, their configuration, the keeper's
/// bounded lt updates and the scenario grid (IScenarioGrid), with their views. Run only by DELEGATECALL from the
/// engine (its fallback and its typed governance entry points), over the engine's storage; called directly it
/// reverts `DirectCall`. Deployed beside the engine with the same vault and oracle, which the engine checks.
/// The rules are documented on IMarginEngine and IScenarioGrid.
contract EngineGovernance is EngineBase, IScenarioGrid {
    using RiskMath for uint256;

    /// @dev Longest lt ramp a bound may ask for.
    uint32 internal constant MAX_RAMP_DURATION = 365 days;

    constructor(IVault vault_, IOracleRouter oracle_) EngineBase(vault_, oracle_) {}

    /// @notice The vault and oracle this code was built for; the engine refuses a governance module of another.
    function binding() external view returns (address vault, address oracle) {
        return (address(_vault), address(_oracle));
    }

    // ---------------------------------------------------------------- debt assets (admin)

    /// @dev The rules are on IMarginEngine.listDebt.
    function listDebt(address vault, uint128 minDebt) external onlyDelegated onlyRole(DEFAULT_ADMIN_ROLE) {
        if (vault == address(0)) revert InvalidConfig();
        if (IVault(vault).engine() != address(this)) revert VaultNotBound(vault);
        address asset = IVault(vault).asset();
        if (_debtConfigs[asset].vault != address(0)) revert DebtAlreadyListed(asset);
        uint256 index = _debtList.length;
        if (index == MAX_DEBTS) revert TooManyDebts();
        uint8 dec = IERC20Metadata(asset).decimals();
        if (dec > 36) revert InvalidConfig();
        uint256 count = _params.gridCount;
        // Under a grid the new debt needs a column: 1 (no move) in every scenario, unless the asset already has
        // one as a collateral (an lt column, which would price the debt below its value).
        if (count != 0 && _configs[asset].listed) revert GridAssetsMismatch(asset);
        _debtList.push(asset);
        _debtConfigs[asset] = DebtConfig({vault: vault, index: uint8(index), decimals: dec, minDebt: minDebt});
        emit DebtListed(asset, vault, uint8(index), dec, minDebt);
        if (count != 0) _setLtColumn(asset, uint64(RiskMath.WAD), count);
    }

    /// @dev `asset`'s bit in the grid's coverage mask; reverts for an asset that is neither listed nor a debt.
    function _gridBit(address asset) internal view returns (uint256) {
        AssetConfig memory c = _configs[asset];
        if (c.listed) return 1 << c.index;
        DebtConfig memory d = _debtConfigs[asset];
        if (d.vault == address(0)) revert AssetNotListed(asset);
        return DEBT_BIT << d.index;
    }

    /// @dev Every asset a grid must cover: the listed collateral, then the debts that are not also collateral.
    function _gridAssets() internal view returns (address[] memory all) {
        uint256 n = _assets.length;
        address[] memory debts = _debtList;
        all = new address[](n + debts.length);
        for (uint256 i; i < n; ++i) {
            all[i] = _assets[i];
        }
        for (uint256 j; j < debts.length; ++j) {
            if (!_configs[debts[j]].listed) all[n++] = debts[j];
        }
        assembly ("memory-safe") {
            mstore(all, n)
        }
    }

    /// @dev The coverage mask of `_gridAssets()`.
    function _gridCoverage() internal view returns (uint256 mask) {
        address[] memory all = _gridAssets();
        for (uint256 i; i < all.length; ++i) {
            mask |= _gridBit(all[i]);
        }
    }

    // ---------------------------------------------------------------- bounded lt updates

    /// @dev The rules are on IMarginEngine.setRiskBounds.
    function setRiskBounds(address asset, RiskBounds calldata b) external onlyDelegated onlyRole(DEFAULT_ADMIN_ROLE) {
        _listed(asset);
        bool disabled = b.ltvMin == 0 && b.ltvMax == 0 && b.ltMin == 0 && b.ltMax == 0 && b.maxStep == 0
            && b.minInterval == 0 && b.rampDuration == 0;
        bool valid = b.ltvMin <= b.ltvMax && b.ltMin <= b.ltMax && b.ltMax < RiskMath.WAD && b.maxStep != 0
            && b.rampDuration != 0 && b.rampDuration <= MAX_RAMP_DURATION;
        if (!disabled && !valid) revert InvalidRiskBounds(asset);
        _bounds[asset] = b;
        emit RiskBoundsSet(asset, b.ltvMin, b.ltvMax, b.ltMin, b.ltMax, b.maxStep, b.minInterval, b.rampDuration);
    }

    /// @dev The rules are on IMarginEngine.updateRiskParams.
    function updateRiskParams(address asset, uint64 ltv, uint64 lt) external onlyDelegated onlyRole(RISK_KEEPER) {
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
        // A grid has one column per asset: a debt asset's (its price move) cannot also be a collateral's lt column.
        if (_params.gridCount != 0 && _debtConfigs[asset].vault != address(0)) revert GridAssetsMismatch(asset);
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
    /// @dev The bit of debt asset 0 in `setGrid`'s coverage mask (debt asset j uses `DEBT_BIT << j`; listed
    /// collateral assets use their index, below 32).
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
            uint256 bit = _gridBit(asset);
            if (covered & bit != 0) revert GridAssetsMismatch(asset);
            covered |= bit;
            _requireColumn(asset, columns[k], count);
            _columns[asset] = columns[k];
            emit GridColumnSet(asset, columns[k]);
        }
        if (covered != _gridCoverage()) revert GridAssetsMismatch(address(0));
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
            _gridBit(asset);
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
        address[] memory all = _gridAssets();
        for (uint256 i; i < all.length; ++i) {
            _rampFrom[all[i]] = _column(all[i], count);
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
        _gridBit(asset);
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
