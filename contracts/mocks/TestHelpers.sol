// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {ILiquidationCallback} from "../interfaces/ILiquidationCallback.sol";
import {IMarginEngine} from "../interfaces/IMarginEngine.sol";
import {ITransferHook} from "./MisbehavingTokens.sol";
import {MockERC20} from "./MockERC20.sol";

/// @title ReentrancyAttacker
/// @notice Installed as a HookToken hook; when armed, replays `payload` against `target` from inside a token
/// transfer and bubbles up whatever the re-entrant call reverted with.
contract ReentrancyAttacker is ITransferHook {
    address public target;
    bytes public payload;
    bool public armed;

    function arm(address target_, bytes calldata payload_) external {
        (target, payload, armed) = (target_, payload_, true);
    }

    function onTokenTransfer(address, address, uint256) external {
        if (!armed) return;
        armed = false;
        (bool ok, bytes memory ret) = target.call(payload);
        if (!ok) {
            assembly ("memory-safe") {
                revert(add(ret, 0x20), mload(ret))
            }
        }
    }

    /// @notice Lets the attacker act as an ordinary account too (approve, deposit, borrow).
    function execute(address to, bytes calldata data) external returns (bytes memory) {
        (bool ok, bytes memory ret) = to.call(data);
        if (!ok) {
            assembly ("memory-safe") {
                revert(add(ret, 0x20), mload(ret))
            }
        }
        return ret;
    }
}

/// @title MockLiquidator
/// @notice A liquidator without inventory: inside the callback it checks the seized collateral has arrived, then
/// "swaps" it by minting the debt asset it owes (a MockERC20) and approves the engine to pull it.
contract MockLiquidator is ILiquidationCallback {
    IMarginEngine public immutable engine;
    uint256 public collateralSeenInCallback;
    uint256 public callbacks;

    error CollateralNotReceived();
    error NotEngine();

    constructor(IMarginEngine engine_) {
        engine = engine_;
    }

    function liquidate(address owner, uint8 subId, address collateral, uint256 repay) external {
        engine.liquidate(owner, subId, collateral, repay, 0, address(this), abi.encode(collateral));
    }

    function onLiquidation(address collateral, uint256 seized, uint256 repaid, bytes calldata) external {
        if (msg.sender != address(engine)) revert NotEngine();
        uint256 held = IERC20(collateral).balanceOf(address(this));
        if (held < seized) revert CollateralNotReceived();
        collateralSeenInCallback = held;
        callbacks += 1;
        MockERC20 debt = MockERC20(engine.debtAsset());
        debt.mint(address(this), repaid);
        debt.approve(address(engine), repaid);
    }
}
