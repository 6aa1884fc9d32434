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
import {ReentrancyGuardTransient} from "@openzeppelin/contracts/utils/ReentrancyGuardTransient.sol";
import {RiskMath} from "./libraries/RiskMath.sol";

/// @title Vault
/// @notice ERC-4626 lending vault over the debt asset; the rules are documented on IVault.
contract Vault is IVault, ERC4626, AccessControl, ReentrancyGuardTransient {
    using RiskMath for uint256;
    using SafeERC20 for IERC20;

    /// @dev Virtual shares: 10**6 shares per asset unit at the start, so an attacker must donate a million times
    /// a victim's deposit to round it to zero (and donations do not count anyway, see `idle`).
    uint8 internal constant DECIMALS_OFFSET = 6;
    /// @dev At most half the interest may go to the reserve.
    uint64 internal constant MAX_RESERVE_FACTOR = 0.5e18;
    /// @dev At most 1,000 % a year.
    uint256 internal constant MAX_RATE = 10e18;
    /// @dev Most debt-asset units the books may hold, idle + totalDebt (IVault): half of the 128-bit counters, the
    /// other half is headroom for rounding, so no counter can overflow. Deposits and interest stop here.
    uint256 internal constant MAX_BOOKED = 2 ** 127;
    /// @dev The borrow index's ceiling (RAY), the largest its 128-bit slot holds: about 3.4e11 times its start.
    uint256 internal constant MAX_INDEX = type(uint128).max;

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
        _index = SafeCast.toUint128(index);
        _lastAccrual = uint64(block.timestamp);
        if (toReserve != 0) _reserve = SafeCast.toUint128(_reserve + toReserve);
        emit Accrued(index, interest, toReserve);
        return index;
    }

    /// @dev Index, interest and reserve share accrued since the last accrual, computed from stored state.
    /// Simple interest over the elapsed time, held to the index's two ceilings (`_capIndexDown`); the index
    /// rounds down so the vault never books interest that borrowers' rounded-up debts do not cover.
    /// No overflow: index <= MAX_INDEX < 2**128, rate <= MAX_RATE < 2**64 and elapsed < 2**64 (uint64 time), so
    /// `index * rate * elapsed < 2**256`; scaled < 2**128 (scaled <= debt <= MAX_BOOKED + rounding, as the index
    /// never falls below RAY), so `scaled * index < 2**256` in toAssetsUp.
    function _pending() internal view returns (uint256 index, uint256 interest, uint256 toReserve) {
        index = _index;
        uint256 elapsed = block.timestamp - _lastAccrual;
        uint256 scaled = totalScaledDebt;
        // Zero elapsed time or zero debt accrues nothing; neither value can be forced by a donation.
        // slither-disable-next-line incorrect-equality
        if (elapsed == 0 || scaled == 0) return (index, 0, 0);
        uint256 cash = _idle;
        uint256 debtBefore = scaled.toAssetsUp(index);
        uint256 rate = _rate(debtBefore, cash);
        uint256 grown = index + RiskMath.mulDivDown(index, rate * elapsed, RiskMath.WAD * RiskMath.YEAR);
        // Below both ceilings (the usual case) `grown` stands as it is; the check is _capIndexDown's, cheaper.
        uint256 debtAfter = grown <= MAX_INDEX ? scaled.toAssetsUp(grown) : MAX_BOOKED + 1;
        if (cash + debtAfter <= MAX_BOOKED) {
            index = grown;
        } else {
            index = _capIndexDown(grown, index, scaled, cash);
            debtAfter = scaled.toAssetsUp(index);
        }
        interest = debtAfter - debtBefore;
        toReserve = interest.wMulDown(_reserveFactor);
    }

    /// @dev `grown` held to MAX_INDEX and to the largest index at which `scaled` debt, rounded up, still fits
    /// beside `cash` within MAX_BOOKED (that index rounded down); never below `index`, which only rounding left
    /// above a ceiling. Saturating instead of reverting: accrual, hence repay, liquidation and redemption, never
    /// stops; interest stops.
    function _capIndexDown(uint256 grown, uint256 index, uint256 scaled, uint256 cash)
        internal
        pure
        returns (uint256)
    {
        uint256 room = cash < MAX_BOOKED ? MAX_BOOKED - cash : 0;
        // room * RAY < 2**127 * 2**90: no overflow.
        uint256 ceiling = RiskMath.mulDivDown(room, RiskMath.RAY, scaled).min(MAX_INDEX);
        return Math.max(grown.min(ceiling), index);
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
    function lend(uint256 assets, uint256 scaled, address receiver) external onlyEngine nonReentrant {
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
    function noteRepayment(uint256 assets, uint256 scaled) external onlyEngine nonReentrant {
        _idle = SafeCast.toUint128(_idle + assets);
        totalScaledDebt -= scaled;
        emit RepaymentNoted(assets, scaled);
    }

    /// @inheritdoc IVault
    function realizeBadDebt(uint256 scaled) external onlyEngine nonReentrant {
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

    /// @notice What `deposit` accepts: the room left below MAX_BOOKED (idle + totalDebt, pending interest
    /// included), lowered only if the shares it mints would not fit the supply (possible only once bad debt has
    /// made shares nearly worthless). Depositing it succeeds; one unit more reverts ERC4626ExceededMaxDeposit.
    function maxDeposit(address) public view override(ERC4626, IERC4626) returns (uint256) {
        (uint256 assets,) = _maxDepositDown();
        return assets;
    }

    /// @notice The most shares `mint` accepts: those `maxDeposit` buys, rounded down, so `previewMint` of it
    /// (rounded up) stays within `maxDeposit`.
    function maxMint(address) public view override(ERC4626, IERC4626) returns (uint256) {
        (uint256 assets, uint256 total) = _maxDepositDown();
        return Math.mulDiv(assets, totalSupply() + 10 ** DECIMALS_OFFSET, total + 1, Math.Rounding.Floor);
    }

    /// @dev `maxDeposit`'s assets and the totalAssets it was computed at.
    function _maxDepositDown() internal view returns (uint256 assets, uint256 total) {
        (uint256 index,, uint256 toReserve) = _pending();
        uint256 gross = _idle + totalScaledDebt.toAssetsUp(index);
        uint256 res = _reserve + toReserve;
        total = gross > res ? gross - res : 0;
        if (gross >= MAX_BOOKED) return (0, total);
        assets = MAX_BOOKED - gross;
        uint256 supply = totalSupply();
        // Below 2**128 shares, assets * (supply + 10**6) < 2**256 and the supply cannot overflow (the usual case).
        if (supply < 2 ** 128) return (assets, total);
        // Beyond this the share conversion itself overflows; deposits are impossible.
        if (supply > type(uint256).max - 10 ** DECIMALS_OFFSET) return (0, total);
        uint256 shareRoom = type(uint256).max - supply;
        uint256 perTotal = supply + 10 ** DECIMALS_OFFSET;
        (bool fits, uint256 product) = Math.tryMul(assets, perTotal);
        if (fits && product / (total + 1) <= shareRoom) return (assets, total);
        // The largest deposit whose shares (rounded down) fit; here perTotal > total + 1, so no overflow.
        return (Math.mulDiv(shareRoom, total + 1, perTotal, Math.Rounding.Floor), total);
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

    function deposit(uint256 assets, address receiver)
        public
        override(ERC4626, IERC4626)
        nonReentrant
        returns (uint256)
    {
        accrue();
        return super.deposit(assets, receiver);
    }

    function mint(uint256 shares, address receiver)
        public
        override(ERC4626, IERC4626)
        nonReentrant
        returns (uint256)
    {
        accrue();
        return super.mint(shares, receiver);
    }

    function withdraw(uint256 assets, address receiver, address owner)
        public
        override(ERC4626, IERC4626)
        nonReentrant
        returns (uint256)
    {
        accrue();
        return super.withdraw(assets, receiver, owner);
    }

    function redeem(uint256 shares, address receiver, address owner)
        public
        override(ERC4626, IERC4626)
        nonReentrant
        returns (uint256)
    {
        accrue();
        return super.redeem(shares, receiver, owner);
    }

    /// @dev Pulls first and books only what arrived: a shortfall (a transfer fee) reverts ReceivedLess, any excess
    /// stays unbooked (skim). The pull is the one external call before the state changes; the guard keeps hooks
    /// out, and a hook reading views meanwhile sees the books as they were before this deposit.
    function _deposit(address caller, address receiver, uint256 assets, uint256 shares) internal override {
        IERC20 token = IERC20(asset());
        uint256 before = token.balanceOf(address(this));
        token.safeTransferFrom(caller, address(this), assets);
        uint256 held = token.balanceOf(address(this));
        // Only the token itself could lower the vault's balance here (the vault is locked): reported as 0.
        uint256 received = held > before ? held - before : 0;
        if (received < assets) revert ReceivedLess(address(token), assets, received);
        // Cannot overflow: maxDeposit keeps idle + debt within MAX_BOOKED.
        _idle = SafeCast.toUint128(_idle + assets);
        _mint(receiver, shares);
        emit Deposit(caller, receiver, assets, shares);
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
    function withdrawReserve(uint256 assets, address to) external onlyRole(DEFAULT_ADMIN_ROLE) nonReentrant {
        accrue();
        if (assets > _reserve) revert ReserveTooSmall(assets, _reserve);
        if (assets > _idle) revert InsufficientLiquidity(assets, _idle);
        _reserve -= uint128(assets);
        _idle -= uint128(assets);
        emit ReserveWithdrawn(to, assets);
        IERC20(asset()).safeTransfer(to, assets);
    }

    /// @inheritdoc IVault
    function skim(address to) external onlyRole(DEFAULT_ADMIN_ROLE) nonReentrant {
        uint256 extra = IERC20(asset()).balanceOf(address(this)) - _idle;
        emit Skimmed(to, extra);
        IERC20(asset()).safeTransfer(to, extra);
    }
}
