// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {IERC20Metadata} from "@openzeppelin/contracts/token/ERC20/extensions/IERC20Metadata.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {SafeCast} from "@openzeppelin/contracts/utils/math/SafeCast.sol";
import {ReentrancyGuardTransient} from "@openzeppelin/contracts/utils/ReentrancyGuardTransient.sol";
import {IMarginEngine} from "./interfaces/IMarginEngine.sol";
import {IOracleRouter} from "./interfaces/IOracleRouter.sol";
import {IVault} from "./interfaces/IVault.sol";
import {RiskMath} from "./libraries/RiskMath.sol";
import {EngineBase} from "./engine/EngineBase.sol";
import {EngineModule} from "./engine/EngineModule.sol";

/// @title MarginEngine
/// @notice Cross-margin sub-accounts, borrowing and liquidation; the rules are documented on IMarginEngine.
contract MarginEngine is EngineBase, IMarginEngine, ReentrancyGuardTransient {
    using RiskMath for uint256;
    using SafeERC20 for IERC20;
    using SafeCast for uint256;

    /// @dev Longest lt ramp a bound may ask for.
    uint32 internal constant MAX_RAMP_DURATION = 365 days;


    /// @inheritdoc IMarginEngine
    bytes32 public constant RISK_KEEPER_ROLE = RISK_KEEPER;

    /// @dev Liquidation and write-off, run by DELEGATECALL over this storage; created here with these immutables.
    address internal immutable _module;

    constructor(IVault vault_, IOracleRouter oracle_, address admin, RiskParams memory params)
        EngineBase(vault_, oracle_)
    {
        if (admin == address(0)) revert InvalidConfig();
        _module = address(new EngineModule(vault_, oracle_));
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

    // ---------------------------------------------------------------- liquidation (in the module) and write-off

    /// @inheritdoc IMarginEngine
    function liquidate(
        address owner,
        uint8 subId,
        address collateral,
        uint256 repayAssets,
        uint256 minSeized,
        address receiver,
        bytes calldata data
    )
        external
        nonReentrant
        returns (uint256 repaid, uint256 seized)
    {
        (repaid, seized) = abi.decode(_delegate(msg.data), (uint256, uint256));
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

    /// @inheritdoc IMarginEngine
    function previewLiquidation(address owner, uint8 subId, address collateral, uint256 repayAssets)
        external
        view
        returns (LiquidationQuote memory)
    {
        // A view cannot DELEGATECALL: a static call to this engine's `delegateView` runs the module's view here.
        (bool ok, bytes memory ret) = address(this).staticcall(abi.encodeCall(this.delegateView, (msg.data)));
        return abi.decode(abi.decode(_bubble(ok, ret), (bytes)), (LiquidationQuote));
    }

    /// @inheritdoc IMarginEngine
    function delegateView(bytes calldata data) external returns (bytes memory) {
        // Only this engine's own static calls: anyone else could reach the module's writes without the lock.
        if (msg.sender != address(this)) revert NotSelf(msg.sender);
        return _delegate(data);
    }

    /// @inheritdoc IMarginEngine
    function module() external view returns (address) {
        return _module;
    }

    /// @dev Runs `data` in the module over this engine's storage; a revert comes back with the module's reason.
    function _delegate(bytes calldata data) internal returns (bytes memory) {
        // `data` is the calldata of one of this engine's typed entry points (their selectors are fixed), or comes
        // through `delegateView`, which only the engine itself may call; the target is the immutable module.
        // slither-disable-next-line controlled-delegatecall
        (bool ok, bytes memory ret) = _module.delegatecall(data);
        return _bubble(ok, ret);
    }

    function _bubble(bool ok, bytes memory ret) internal pure returns (bytes memory) {
        if (!ok) {
            assembly ("memory-safe") {
                revert(add(ret, 0x20), mload(ret))
            }
        }
        return ret;
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
        StoredParams memory p = _params;
        return RiskParams(p.minDiscount, p.fullCloseHealth, p.fullCloseDebtValue, p.minDebt);
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

    // ---------------------------------------------------------------- governance

    /// @inheritdoc IMarginEngine
    function listAsset(address asset, uint64 ltv, uint64 lt, uint64 maxDiscount, uint128 supplyCap) external {
        _delegate(msg.data);
    }

    /// @inheritdoc IMarginEngine
    function setAssetConfig(address asset, uint64 ltv, uint64 lt, uint64 maxDiscount, uint128 supplyCap) external {
        _delegate(msg.data);
    }

    /// @notice The scenario grid's governance and view (IScenarioGrid), run in the module over this storage;
    /// any other unknown call reverts there (the module has nothing else the engine lacks).
    fallback() external {
        address module_ = _module;
        assembly ("memory-safe") {
            let ptr := mload(0x40)
            calldatacopy(ptr, 0, calldatasize())
            let ok := delegatecall(gas(), module_, ptr, calldatasize(), 0, 0)
            returndatacopy(ptr, 0, returndatasize())
            if iszero(ok) { revert(ptr, returndatasize()) }
            return(ptr, returndatasize())
        }
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

    function _setRiskParams(RiskParams memory params) internal {
        if (
            params.minDiscount > MAX_MIN_DISCOUNT || params.fullCloseHealth > RiskMath.WAD
                || params.fullCloseDebtValue > type(uint120).max
        ) revert InvalidConfig();
        (_params.minDiscount, _params.fullCloseHealth) = (params.minDiscount, params.fullCloseHealth);
        (_params.fullCloseDebtValue, _params.minDebt) = (uint120(params.fullCloseDebtValue), params.minDebt);
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
