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
import {EngineGovernance} from "./engine/EngineGovernance.sol";
import {EngineModule} from "./engine/EngineModule.sol";

/// @title MarginEngine
/// @notice Cross-margin sub-accounts, borrowing and liquidation; the rules are documented on IMarginEngine.
contract MarginEngine is EngineBase, IMarginEngine, ReentrancyGuardTransient {
    using RiskMath for uint256;
    using SafeERC20 for IERC20;
    using SafeCast for uint256;

    /// @inheritdoc IMarginEngine
    bytes32 public constant RISK_KEEPER_ROLE = RISK_KEEPER;

    /// @dev Liquidation, run by DELEGATECALL over this storage; created here with these immutables.
    address internal immutable _module;
    /// @dev Governance (listing, lt updates, the grid), run by DELEGATECALL over this storage; deployed beside the
    /// engine for the same vault and oracle (it does not fit in this contract's creation code).
    address internal immutable _governance;

    constructor(IVault vault_, IOracleRouter oracle_, address admin, RiskParams memory params, address governance_)
        EngineBase(vault_, oracle_)
    {
        if (admin == address(0) || governance_.code.length == 0) revert InvalidConfig();
        (address boundVault, address boundOracle) = EngineGovernance(governance_).binding();
        if (boundVault != address(vault_) || boundOracle != address(oracle_)) revert InvalidConfig();
        _governance = governance_;
        _module = address(new EngineModule(vault_, oracle_));
        _grantRole(DEFAULT_ADMIN_ROLE, admin);
        _setRiskParams(params);
        _debtList.push(_debtAsset);
        _debtConfigs[_debtAsset] = DebtConfig({vault: address(vault_), index: 0, decimals: _debtDecimals, minDebt: 0});
        emit DebtListed(_debtAsset, address(vault_), 0, _debtDecimals, 0);
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
        if (p.scaledDebt == 0 && p.debtMask == 0) return;
        _oracle.checkSequencer();
        _requireMargin(owner, subId, p, _vault.accrue());
    }

    function _requireMargin(address owner, uint8 subId, Position memory p, uint256 index) internal view {
        AccountHealth memory h = _valuation(owner, subId, p, index, address(0), address(0), false).h;
        if (h.ltvWeighted < h.debtValue) revert InsufficientMargin(h.ltvWeighted, h.debtValue);
    }

    // ---------------------------------------------------------------- debt

    /// @inheritdoc IMarginEngine
    function borrow(uint8 subId, uint256 assets, address receiver) external nonReentrant {
        _borrow(subId, _debtAsset, assets, receiver);
    }

    /// @inheritdoc IMarginEngine
    function borrowAsset(uint8 subId, address asset, uint256 assets, address receiver) external nonReentrant {
        _borrow(subId, asset, assets, receiver);
    }

    /// @dev Runs under `nonReentrant`; the only calls before its writes are to listed vaults (`accrue`, and the
    /// valuation's `borrowIndex`) and the router, all governance's own contracts.
    // slither-disable-next-line reentrancy-no-eth
    function _borrow(uint8 subId, address asset, uint256 assets, address receiver) internal {
        if (assets == 0) revert ZeroAmount();
        _oracle.checkSequencer();
        uint256 index = _vault.accrue();
        Position memory p = _positions[msg.sender][subId];
        (IVault vault, uint256 idx, uint256 minDebt) = (_vault, index, _params.minDebt);
        uint256 scaled;
        uint256 total;
        if (asset == _debtAsset) {
            scaled = assets.toScaledUp(idx);
            p.scaledDebt = SafeCast.toUint128(p.scaledDebt + scaled);
            _positions[msg.sender][subId].scaledDebt = p.scaledDebt;
            total = p.scaledDebt;
        } else {
            DebtConfig memory c = _debtConfig(asset);
            (vault, minDebt) = (IVault(c.vault), c.minDebt);
            idx = vault.accrue();
            scaled = assets.toScaledUp(idx);
            total = _scaledDebts[msg.sender][subId][asset] + scaled;
            _scaledDebts[msg.sender][subId][asset] = total;
            p.debtMask |= uint8(1 << c.index);
            _positions[msg.sender][subId].debtMask = p.debtMask;
        }
        uint256 debt = total.toAssetsUp(idx);
        if (debt < minDebt) revert DebtBelowMinimum(debt, minDebt);
        _requireMargin(msg.sender, subId, p, index);
        if (asset == _debtAsset) emit Borrowed(msg.sender, subId, assets, scaled, receiver);
        else emit BorrowedAsset(msg.sender, subId, asset, assets, scaled, receiver);
        vault.lend(assets, scaled, receiver);
    }

    /// @inheritdoc IMarginEngine
    function repay(address owner, uint8 subId, uint256 assets) external nonReentrant returns (uint256) {
        return _repay(owner, subId, _debtAsset, assets);
    }

    /// @inheritdoc IMarginEngine
    function repayAsset(address owner, uint8 subId, address asset, uint256 assets)
        external
        nonReentrant
        returns (uint256)
    {
        return _repay(owner, subId, asset, assets);
    }

    function _repay(address owner, uint8 subId, address asset, uint256 assets) internal returns (uint256 repaid) {
        if (assets == 0) revert ZeroAmount();
        bool primary = asset == _debtAsset;
        DebtConfig memory c = primary ? DebtConfig(address(_vault), 0, 0, _params.minDebt) : _debtConfig(asset);
        IVault vault = IVault(c.vault);
        uint256 index = vault.accrue();
        uint256 scaledDebt = primary ? _positions[owner][subId].scaledDebt : _scaledDebts[owner][subId][asset];
        if (scaledDebt == 0) revert NothingToRepay();
        uint256 debt = scaledDebt.toAssetsUp(index);
        uint256 scaled;
        if (assets >= debt) {
            (repaid, scaled) = (debt, scaledDebt);
        } else {
            // A partial repayment extinguishes scaled debt rounded down, and must not leave dust.
            (repaid, scaled) = (assets, assets.toScaledDown(index));
            uint256 remaining = RiskMath.toAssetsUp(scaledDebt - scaled, index);
            if (remaining < c.minDebt) revert DebtBelowMinimum(remaining, c.minDebt);
        }
        if (primary) {
            // scaled <= scaledDebt < 2**128 in both branches.
            _positions[owner][subId].scaledDebt = uint128(scaledDebt - scaled);
            emit Repaid(msg.sender, owner, subId, repaid, scaled);
        } else {
            _scaledDebts[owner][subId][asset] = scaledDebt - scaled;
            if (scaled == scaledDebt) _positions[owner][subId].debtMask &= ~uint8(1 << c.index);
            emit RepaidAsset(msg.sender, owner, subId, asset, repaid, scaled);
        }
        // Pull, measured, then book: the vault never books cash it lacks (a transfer fee reverts ReceivedLess),
        // and a payer's transfer hook meets the vault's books as they were before this repayment.
        _pullExact(asset, address(vault), repaid);
        vault.noteRepayment(repaid, scaled);
    }

    /// @dev A debt asset's configuration; reverts DebtNotListed for anything else.
    function _debtConfig(address asset) internal view returns (DebtConfig memory c) {
        c = _debtConfigs[asset];
        if (c.vault == address(0)) revert DebtNotListed(asset);
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
    function liquidateDebt(
        address owner,
        uint8 subId,
        address debtAsset,
        address collateral,
        uint256 repayAssets,
        uint256 minSeized,
        address receiver,
        bytes calldata data
    ) external nonReentrant returns (uint256 repaid, uint256 seized) {
        (repaid, seized) = abi.decode(_delegate(msg.data), (uint256, uint256));
    }

    /// @inheritdoc IMarginEngine
    function writeOff(address owner, uint8 subId) external nonReentrant returns (uint256 badDebt) {
        badDebt = abi.decode(_delegate(msg.data), (uint256));
    }

    /// @inheritdoc IMarginEngine
    function previewLiquidationDebt(address owner, uint8 subId, address debtAsset, address collateral, uint256 repayAssets)
        external
        view
        returns (LiquidationQuote memory)
    {
        return _previewDelegated();
    }

    /// @dev A liquidation preview from the module: a view cannot DELEGATECALL, so a static call to this engine's
    /// `delegateView` runs the module's view here.
    function _previewDelegated() internal view returns (LiquidationQuote memory) {
        (bool ok, bytes memory ret) = address(this).staticcall(abi.encodeCall(this.delegateView, (msg.data)));
        return abi.decode(abi.decode(_bubble(ok, ret), (bytes)), (LiquidationQuote));
    }

    /// @inheritdoc IMarginEngine
    function previewLiquidation(address owner, uint8 subId, address collateral, uint256 repayAssets)
        external
        view
        returns (LiquidationQuote memory)
    {
        return _previewDelegated();
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

    /// @notice The governance module the engine's fallback and governance entry points run.
    function governance() external view returns (address) {
        return _governance;
    }

    /// @dev Runs `data` in the module over this engine's storage; a revert comes back with the module's reason.
    function _delegate(bytes calldata data) internal returns (bytes memory) {
        return _delegateTo(_module, data);
    }

    function _delegateTo(address target, bytes calldata data) internal returns (bytes memory) {
        // `data` is the calldata of one of this engine's typed entry points (their selectors are fixed), or comes
        // through `delegateView`, which only the engine itself may call; the target is an immutable module.
        // slither-disable-next-line controlled-delegatecall
        (bool ok, bytes memory ret) = target.delegatecall(data);
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
    function debtOfAsset(address owner, uint8 subId, address asset) external view returns (uint256) {
        if (asset == _debtAsset) return uint256(_positions[owner][subId].scaledDebt).toAssetsUp(_vault.borrowIndex());
        return _scaledDebts[owner][subId][asset].toAssetsUp(IVault(_debtConfig(asset).vault).borrowIndex());
    }

    /// @inheritdoc IMarginEngine
    function scaledDebtOf(address owner, uint8 subId, address asset) external view returns (uint256) {
        if (asset == _debtAsset) return _positions[owner][subId].scaledDebt;
        _debtConfig(asset);
        return _scaledDebts[owner][subId][asset];
    }

    /// @inheritdoc IMarginEngine
    function debtAssets() external view returns (address[] memory) {
        return _debtList;
    }

    /// @inheritdoc IMarginEngine
    function debtConfig(address asset) external view returns (DebtConfig memory c) {
        c = _debtConfig(asset);
        if (asset == _debtAsset) c.minDebt = _params.minDebt;
    }

    /// @inheritdoc IMarginEngine
    function accountHealth(address owner, uint8 subId) external view returns (AccountHealth memory) {
        return _health(owner, subId, false);
    }

    /// @inheritdoc IMarginEngine
    function liquidationHealth(address owner, uint8 subId) external view returns (AccountHealth memory) {
        return _health(owner, subId, true);
    }

    function _health(address owner, uint8 subId, bool lenient) internal view returns (AccountHealth memory) {
        return _valuation(owner, subId, _positions[owner][subId], _vault.borrowIndex(), address(0), address(0), lenient).h;
    }

    // ---------------------------------------------------------------- governance

    /// @inheritdoc IMarginEngine
    function listAsset(address asset, uint64 ltv, uint64 lt, uint64 maxDiscount, uint128 supplyCap) external {
        _delegateTo(_governance, msg.data);
    }

    /// @inheritdoc IMarginEngine
    function setAssetConfig(address asset, uint64 ltv, uint64 lt, uint64 maxDiscount, uint128 supplyCap) external {
        _delegateTo(_governance, msg.data);
    }

    /// @inheritdoc IMarginEngine
    function listDebt(address vault, uint128 minDebt) external {
        _delegateTo(_governance, msg.data);
    }

    /// @inheritdoc IMarginEngine
    function setRiskBounds(address asset, RiskBounds calldata bounds) external {
        _delegateTo(_governance, msg.data);
    }

    /// @inheritdoc IMarginEngine
    function updateRiskParams(address asset, uint64 ltv, uint64 lt) external {
        _delegateTo(_governance, msg.data);
    }

    /// @notice The scenario grid's governance and view (IScenarioGrid), run in the governance module over this
    /// storage; any other unknown call reverts there (it has nothing else the engine lacks).
    fallback() external {
        address module_ = _governance;
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
}
