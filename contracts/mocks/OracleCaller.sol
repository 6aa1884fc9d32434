// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {IOracleRouter} from "../interfaces/IOracleRouter.sol";

/// @title OracleCaller
/// @notice Calls the router's `tryPrice` forwarding exactly the gas it is told, as a contract that wants to value a
/// collateral at zero when it has no price would: a test sends real transactions through it to check that a
/// gas-starved call reverts instead of returning "no price".
contract OracleCaller {
    bool public lastOk;
    uint256 public lastPrice;

    event Priced(address indexed asset, bool ok, uint256 price);

    /// @notice `router.tryPrice(asset)` with `gas` forwarded; stores and emits the answer, or bubbles up the
    /// router's revert data.
    function tryPriceWithGas(IOracleRouter router, address asset, uint256 gas) external returns (bool ok, uint256 p) {
        (bool success, bytes memory ret) =
            address(router).staticcall{gas: gas}(abi.encodeCall(IOracleRouter.tryPrice, (asset)));
        if (!success) {
            assembly ("memory-safe") {
                revert(add(ret, 0x20), mload(ret))
            }
        }
        (ok, p) = abi.decode(ret, (bool, uint256));
        (lastOk, lastPrice) = (ok, p);
        emit Priced(asset, ok, p);
    }
}
