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
///
/// Tokens the debt asset may be. Transfer hooks (ERC-777 style): every function that moves the asset or changes the
/// books (deposit, mint, withdraw, redeem, lend, noteRepayment, realizeBadDebt, withdrawReserve, skim) holds a
/// transient re-entrancy lock, so a hook that calls back into any of them reverts `ReentrancyGuardReentrantCall`.
/// Deposits pull before they book, so a hook reading the vault meanwhile sees the books as before the deposit; the
/// engine pulls a repayment before it calls `noteRepayment`, so a payer's hook meets the books as before the
/// repayment and anything it does there is priced exactly as just before it. `accrue` stays open: every entry point
/// accrues first, so inside one it changes nothing.
/// Fee on transfer: every inflow is measured (the vault's balance before and after) and a shortfall is refused with
/// `ReceivedLess`, in `deposit`/`mint` here and in the engine's `repay`; the vault never books cash it does not hold.
/// Refusing, rather than booking what arrived, keeps ERC-4626's exact previews (a deposit mints `previewDeposit`,
/// a mint charges `previewMint`) and keeps every debt exact: the engine decides what a repayment extinguishes
/// before the tokens move. The price: if the asset's fee is switched on after deployment, deposits and repayments
/// stop until it is off again, while withdrawals go on (the vault sends what it books; the receiver bears the
/// fee). A token that takes more than the amount from the sender is not supported.
/// Limits: the books, `idle + totalDebt`, never exceed 2**127 units (MAX_BOOKED, half the 128-bit counters; the
/// other half absorbs rounding). `maxDeposit` is the room left; when interest would pass the bound, the index stops
/// where the books are full. The index itself stops at 2**128 - 1 (MAX_INDEX, about 3.4e11 times its start): at the
/// 1,000 %/yr maximum, accrued every second, it gets there in about 2.7 years, in about 34 years at the default
/// model's 79 %/yr, and accrued lazily (simple interest between accruals) only after some 3.4e10 years. Both ceilings saturate, never
/// revert, so accrual, repayment, liquidation and redemption keep working at any horizon; debts stay rounded up.
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
    /// @notice A deposit or mint delivered less of `asset` than it books: the token took a transfer fee.
    error ReceivedLess(address asset, uint256 expected, uint256 received);

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

    /// @notice Engine only: books a repayment of `assets` extinguishing `scaled` debt, as idle cash. The engine
    /// transfers the tokens to the vault in the same transaction, before this call, and checks that all of them
    /// arrived (`repay` does; see the token notes above).
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
