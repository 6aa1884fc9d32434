// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

/// @title ILiquidationCallback
/// @notice Implemented by a liquidator that wants the seized collateral before paying: the engine sends the
/// collateral, calls `onLiquidation` on `msg.sender`, then pulls `repaid` debt assets from it.
interface ILiquidationCallback {
    /// @param collateral The seized asset, already transferred to the receiver.
    /// @param seized Collateral units transferred.
    /// @param repaid Debt-asset units the engine will pull from the caller when this returns.
    /// @param data Opaque bytes passed to `liquidate`.
    function onLiquidation(address collateral, uint256 seized, uint256 repaid, bytes calldata data) external;
}
