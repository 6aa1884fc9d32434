// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {IERC4626} from "@openzeppelin/contracts/interfaces/IERC4626.sol";

/// @title IVault
/// @notice ERC-4626 lending vault over the debt asset (a stablecoin). Depositors' assets are lent to one borrower
/// only, the MarginEngine, which keeps each account's scaled debt. Interest accrues through a borrow index (RAY)
/// at a kinked utilisation rate; a reserve factor of the interest feeds an insurance reserve that absorbs bad debt
/// before depositors do.
/// @dev `totalAssets = idle + totalDebt - reserve`, where `idle` is the cash the vault accounts for (tokens sent
/// to it without a deposit are ignored, so a donation cannot move the share price) and `totalDebt` rounds up.
/// Shares carry a decimals offset (virtual shares) against the first-depositor inflation attack.
/// Withdrawals are limited to idle cash: when utilisation is 100 %, depositors wait for repayments.
interface IVault is IERC4626 {
    /// @notice Interest rate model, all rates WAD per year.
    struct RateModel {
        uint64 baseRate; // rate at 0 % utilisation
        uint64 slope1; // added between 0 and `kink`
        uint64 slope2; // added between `kink` and 100 %
        uint64 kink; // WAD utilisation where the slope steepens
    }

    error NotEngine(address caller);
    error EngineAlreadySet();
    error InsufficientLiquidity(uint256 requested, uint256 idle);
    error InvalidConfig();
    error ReserveTooSmall(uint256 requested, uint256 reserve);

    event EngineSet(address indexed engine);
    event Accrued(uint256 borrowIndex, uint256 interest, uint256 reserveAdded);
    event Lent(address indexed receiver, uint256 assets, uint256 scaled);
    event RepaymentNoted(uint256 assets, uint256 scaled);
    /// @notice Bad debt written off: `coveredByReserve` came from the insurance reserve and `socialized` lowered
    /// `totalAssets`, i.e. the depositors' share price.
    event BadDebtRealized(uint256 assets, uint256 coveredByReserve, uint256 socialized);
    event RateModelSet(uint64 baseRate, uint64 slope1, uint64 slope2, uint64 kink, uint64 reserveFactor);
    event ReserveWithdrawn(address indexed to, uint256 assets);
    event Skimmed(address indexed to, uint256 amount);

    /// @notice The MarginEngine, the only borrower.
    function engine() external view returns (address);

    /// @notice Current borrow index (RAY), including interest not yet accrued in storage.
    function borrowIndex() external view returns (uint256);

    /// @notice Sum of all accounts' scaled debt.
    function totalScaledDebt() external view returns (uint256);

    /// @notice Total owed by borrowers, rounded up, including pending interest.
    function totalDebt() external view returns (uint256);

    /// @notice Cash the vault accounts for.
    function idle() external view returns (uint256);

    /// @notice Insurance reserve in debt-asset units, including the share of pending interest.
    function reserve() external view returns (uint256);

    /// @notice Borrow rate (WAD per year) at the current utilisation.
    function borrowRate() external view returns (uint256);

    /// @notice Utilisation `totalDebt / (totalDebt + idle)`, WAD.
    function utilization() external view returns (uint256);

    function rateModel() external view returns (RateModel memory model, uint64 reserveFactor);

    /// @notice Accrues interest to now and returns the borrow index. Anyone may call.
    function accrue() external returns (uint256 index);

    /// @notice Engine only: sends `assets` to `receiver` against `scaled` new debt. Call `accrue` first.
    function lend(uint256 assets, uint256 scaled, address receiver) external;

    /// @notice Engine only: books a repayment of `assets` extinguishing `scaled` debt. The engine transfers the
    /// tokens to the vault in the same transaction.
    function noteRepayment(uint256 assets, uint256 scaled) external;

    /// @notice Engine only: writes off `scaled` debt (its assets rounded up) as bad debt, from the reserve first.
    function realizeBadDebt(uint256 scaled) external;

    /// @notice One-time wiring of the engine. Admin only.
    function setEngine(address engine_) external;

    /// @notice Sets the rate model and reserve factor (<= 50 %). Admin only; accrues first.
    function setRateModel(RateModel calldata model, uint64 reserveFactor) external;

    /// @notice Withdraws `assets` of the reserve from idle cash. Admin only.
    function withdrawReserve(uint256 assets, address to) external;

    /// @notice Sends tokens held beyond `idle` (donations, mistakes) to `to`. Admin only.
    function skim(address to) external;
}
