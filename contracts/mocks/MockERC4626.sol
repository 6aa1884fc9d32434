// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";
import {ERC4626} from "@openzeppelin/contracts/token/ERC20/extensions/ERC4626.sol";

/// @title MockERC4626
/// @notice A yield-bearing share (think staked ETH) for tests: its exchange rate rises when underlying tokens are
/// sent to it, which is exactly how a donation attack would try to inflate its price. `setConvertGas` makes
/// `convertToAssets` burn extra gas, for tests of the router's gas budget on share calls.
contract MockERC4626 is ERC4626 {
    /// @notice Gas `convertToAssets` burns before answering.
    uint256 public convertGas;

    constructor(IERC20 underlying, string memory name_, string memory symbol_)
        ERC4626(underlying)
        ERC20(name_, symbol_)
    {}

    function setConvertGas(uint256 gas_) external {
        convertGas = gas_;
    }

    function convertToAssets(uint256 shares) public view override returns (uint256) {
        uint256 stop = gasleft() - convertGas;
        while (gasleft() > stop) {}
        return super.convertToAssets(shares);
    }
}
