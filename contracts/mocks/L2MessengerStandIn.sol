// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

/// @title L2MessengerStandIn
/// @notice Stands in for Optimism's L2 cross-domain messenger in tests of Chainlink's OptimismSequencerUptimeFeed:
/// `relay` calls the target while `xDomainMessageSender()` reports the given L1 sender, which is all the feed
/// checks (the real messenger does the same after proving the message came from L1).
contract L2MessengerStandIn {
    address internal constant NO_SENDER = address(0xdead);
    address public xDomainMessageSender = NO_SENDER;

    error RelayFailed(bytes reason);

    function relay(address target, address l1Sender, bytes calldata data) external {
        xDomainMessageSender = l1Sender;
        (bool ok, bytes memory ret) = target.call(data);
        xDomainMessageSender = NO_SENDER;
        if (!ok) revert RelayFailed(ret);
    }
}
