// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";
import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {IERC20Metadata} from "@openzeppelin/contracts/token/ERC20/extensions/IERC20Metadata.sol";
import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";
import {IERC4626} from "@openzeppelin/contracts/interfaces/IERC4626.sol";
import {ERC4626} from "@openzeppelin/contracts/token/ERC20/extensions/ERC4626.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {IVault} from "./interfaces/IVault.sol";
import {Math} from "@openzeppelin/contracts/utils/math/Math.sol";
import {SafeCast} from "@openzeppelin/contracts/utils/math/SafeCast.sol";
import {RiskMath} from "./libraries/RiskMath.sol";

/// @title Vault
/// @notice ERC-4626 lending vault over the debt asset; the rules are documented on IVault.
contract Vault is IVault, ERC4626, AccessControl {
    using RiskMath for uint256;
    using SafeERC20 for IERC20;
    using SafeCast for uint256;

    /// @dev Virtual shares: 10**6 shares per asset unit at the start, so an attacker must donate a million times
    /// a victim's deposit to round it to zero (and donations do not count anyway, see `idle`).
    uint8 internal constant DECIMALS_OFFSET = 6;
    /// @dev At most half the interest may go to the reserve.
    uint64 internal constant MAX_RESERVE_FACTOR = 0.5e18;
    /// @dev At most 1,000 % a year, so the index cannot overflow in any realistic lifetime.
    uint256 internal constant MAX_RATE = 10e18;

    address public engine;

    // Slot: cash and reserve. Both in debt-asset units.
    uint128 internal _idle;
    uint128 internal _reserve;
    // Slot: everything an accrual reads besides the totals.
    uint128 internal _index; // RAY
    uint64 internal _lastAccrual;
    uint64 internal _reserveFactor; // WAD
    // Slot: scaled debt.
    uint256 public totalScaledDebt;
    // Slot: rate model.
    RateModel internal _model;

    modifier onlyEngine() {
        if (msg.sender != engine) revert NotEngine(msg.sender);
        _;
    }

    constructor(IERC20 asset_, string memory name_, string memory symbol_, address admin, RateModel memory model, uint64 reserveFactor)
        ERC4626(asset_)
        ERC20(name_, symbol_)
    {
        if (admin == address(0)) revert InvalidConfig();
        _grantRole(DEFAULT_ADMIN_ROLE, admin);
        _index = uint128(RiskMath.RAY);
        _lastAccrual = uint64(block.timestamp);
        _setRateModel(model, reserveFactor);
    }

    // ---------------------------------------------------------------- interest

    /// @inheritdoc IVault
    function accrue() public returns (uint256) {
        (uint256 index, uint256 interest, uint256 toReserve) = _pending();
        // Exact equality is intended: nothing to store when already accrued in this block.
        // slither-disable-next-line incorrect-equality
        if (block.timestamp == _lastAccrual) return index;
        _index = index.toUint128();
        _lastAccrual = uint64(block.timestamp);
        if (toReserve != 0) _reserve = (_reserve + toReserve).toUint128();
        emit Accrued(index, interest, toReserve);
        return index;
    }

    /// @dev Index, interest and reserve share accrued since the last accrual, computed from stored state.
    /// Simple interest over the elapsed time; the index rounds down so the vault never books interest that
    /// borrowers' rounded-up debts do not cover.
    function _pending() internal view returns (uint256 index, uint256 interest, uint256 toReserve) {
        index = _index;
        uint256 elapsed = block.timestamp - _lastAccrual;
        uint256 scaled = totalScaledDebt;
        // Zero elapsed time or zero debt accrues nothing; neither value can be forced by a donation.
        // slither-disable-next-line incorrect-equality
        if (elapsed == 0 || scaled == 0) return (index, 0, 0);
        uint256 debtBefore = scaled.toAssetsUp(index);
        uint256 rate = _rate(debtBefore, _idle);
        index += RiskMath.mulDivDown(index, rate * elapsed, RiskMath.WAD * RiskMath.YEAR);
        uint256 debtAfter = scaled.toAssetsUp(index);
        interest = debtAfter - debtBefore;
        toReserve = interest.wMulDown(_reserveFactor);
    }

    /// @dev Kinked utilisation rate, WAD per year.
    function _rate(uint256 debt, uint256 cash) internal view returns (uint256) {
        RateModel memory m = _model;
        // Guards the division; debt is the engine's own bookkeeping, not a manipulable balance.
        // slither-disable-next-line incorrect-equality
        uint256 util = debt == 0 ? 0 : debt.wDivDown(debt + cash);
        if (util <= m.kink) return m.baseRate + RiskMath.mulDivDown(util, m.slope1, m.kink);
        return m.baseRate + m.slope1 + RiskMath.mulDivDown(util - m.kink, m.slope2, RiskMath.WAD - m.kink);
    }

    // ---------------------------------------------------------------- engine

    /// @inheritdoc IVault
    function lend(uint256 assets, uint256 scaled, address receiver) external onlyEngine {
        uint256 cash = _idle;
        if (assets > cash) revert InsufficientLiquidity(assets, cash);
        // assets <= cash was checked above.
        unchecked {
            _idle = uint128(cash - assets);
        }
        totalScaledDebt += scaled;
        emit Lent(receiver, assets, scaled);
        IERC20(asset()).safeTransfer(receiver, assets);
    }

    /// @inheritdoc IVault
    function noteRepayment(uint256 assets, uint256 scaled) external onlyEngine {
        _idle = (_idle + assets).toUint128();
        totalScaledDebt -= scaled;
        emit RepaymentNoted(assets, scaled);
    }

    /// @inheritdoc IVault
    function realizeBadDebt(uint256 scaled) external onlyEngine {
        uint256 assets = scaled.toAssetsUp(_index);
        totalScaledDebt -= scaled;
        uint256 covered = assets.min(_reserve);
        // covered <= _reserve by construction.
        unchecked {
            _reserve -= uint128(covered);
        }
        emit BadDebtRealized(assets, covered, assets - covered);
    }

    // ---------------------------------------------------------------- ERC-4626

    /// @notice Idle cash plus what borrowers owe, less the insurance reserve.
    function totalAssets() public view override(ERC4626, IERC4626) returns (uint256) {
        (uint256 index,, uint256 toReserve) = _pending();
        uint256 gross = _idle + totalScaledDebt.toAssetsUp(index);
        uint256 res = _reserve + toReserve;
        return gross > res ? gross - res : 0;
    }

    /// @notice Limited by idle cash: lent assets come back only through repayments.
    function maxWithdraw(address owner) public view override(ERC4626, IERC4626) returns (uint256) {
        return super.maxWithdraw(owner).min(_idle);
    }

    /// @notice Limited by idle cash, like `maxWithdraw`.
    function maxRedeem(address owner) public view override(ERC4626, IERC4626) returns (uint256) {
        uint256 shares = super.maxRedeem(owner);
        uint256 cash = _idle;
        if (previewRedeem(shares) <= cash) return shares;
        return _convertToShares(cash, Math.Rounding.Floor);
    }

    function deposit(uint256 assets, address receiver) public override(ERC4626, IERC4626) returns (uint256) {
        accrue();
        return super.deposit(assets, receiver);
    }

    function mint(uint256 shares, address receiver) public override(ERC4626, IERC4626) returns (uint256) {
        accrue();
        return super.mint(shares, receiver);
    }

    function withdraw(uint256 assets, address receiver, address owner)
        public
        override(ERC4626, IERC4626)
        returns (uint256)
    {
        accrue();
        return super.withdraw(assets, receiver, owner);
    }

    function redeem(uint256 shares, address receiver, address owner)
        public
        override(ERC4626, IERC4626)
        returns (uint256)
    {
        accrue();
        return super.redeem(shares, receiver, owner);
    }

    function _deposit(address caller, address receiver, uint256 assets, uint256 shares) internal override {
        // Refuses (SafeCastOverflowedUintDowncast) rather than truncates an absurd deposit.
        _idle = (_idle + assets).toUint128();
        super._deposit(caller, receiver, assets, shares);
    }

    function _withdraw(address caller, address receiver, address owner, uint256 assets, uint256 shares)
        internal
        override
    {
        uint256 cash = _idle;
        if (assets > cash) revert InsufficientLiquidity(assets, cash);
        // assets <= cash was checked above.
        unchecked {
            _idle = uint128(cash - assets);
        }
        super._withdraw(caller, receiver, owner, assets, shares);
    }

    function _decimalsOffset() internal pure override returns (uint8) {
        return DECIMALS_OFFSET;
    }

    // ---------------------------------------------------------------- views

    /// @inheritdoc IVault
    function borrowIndex() external view returns (uint256 index) {
        (index,,) = _pending();
    }

    /// @inheritdoc IVault
    function totalDebt() external view returns (uint256) {
        (uint256 index,,) = _pending();
        return totalScaledDebt.toAssetsUp(index);
    }

    /// @inheritdoc IVault
    function idle() external view returns (uint256) {
        return _idle;
    }

    /// @inheritdoc IVault
    function reserve() external view returns (uint256) {
        (,, uint256 toReserve) = _pending();
        return _reserve + toReserve;
    }

    /// @inheritdoc IVault
    function borrowRate() external view returns (uint256) {
        (uint256 index,,) = _pending();
        return _rate(totalScaledDebt.toAssetsUp(index), _idle);
    }

    /// @inheritdoc IVault
    function utilization() external view returns (uint256) {
        (uint256 index,,) = _pending();
        uint256 debt = totalScaledDebt.toAssetsUp(index);
        // Guards the division, as in _rate.
        // slither-disable-next-line incorrect-equality
        return debt == 0 ? 0 : debt.wDivDown(debt + _idle);
    }

    /// @inheritdoc IVault
    function rateModel() external view returns (RateModel memory, uint64) {
        return (_model, _reserveFactor);
    }

    // ---------------------------------------------------------------- governance

    /// @inheritdoc IVault
    function setEngine(address engine_) external onlyRole(DEFAULT_ADMIN_ROLE) {
        if (engine != address(0)) revert EngineAlreadySet();
        if (engine_ == address(0)) revert InvalidConfig();
        engine = engine_;
        emit EngineSet(engine_);
    }

    /// @inheritdoc IVault
    function setRateModel(RateModel calldata model, uint64 reserveFactor) external onlyRole(DEFAULT_ADMIN_ROLE) {
        accrue();
        _setRateModel(model, reserveFactor);
    }

    function _setRateModel(RateModel memory model, uint64 reserveFactor) internal {
        if (
            model.kink == 0 || model.kink >= RiskMath.WAD || reserveFactor > MAX_RESERVE_FACTOR
                || uint256(model.baseRate) + model.slope1 + model.slope2 > MAX_RATE
        ) revert InvalidConfig();
        _model = model;
        _reserveFactor = reserveFactor;
        emit RateModelSet(model.baseRate, model.slope1, model.slope2, model.kink, reserveFactor);
    }

    /// @inheritdoc IVault
    function withdrawReserve(uint256 assets, address to) external onlyRole(DEFAULT_ADMIN_ROLE) {
        accrue();
        if (assets > _reserve) revert ReserveTooSmall(assets, _reserve);
        if (assets > _idle) revert InsufficientLiquidity(assets, _idle);
        _reserve -= uint128(assets);
        _idle -= uint128(assets);
        emit ReserveWithdrawn(to, assets);
        IERC20(asset()).safeTransfer(to, assets);
    }

    /// @inheritdoc IVault
    function skim(address to) external onlyRole(DEFAULT_ADMIN_ROLE) {
        uint256 extra = IERC20(asset()).balanceOf(address(this)) - _idle;
        emit Skimmed(to, extra);
        IERC20(asset()).safeTransfer(to, extra);
    }
}
