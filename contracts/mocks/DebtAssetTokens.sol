// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";

/// @notice The two ERC-777-style hooks a HookedERC20 holder may register for itself.
interface ITokenHooks {
    /// @notice Called on the sender's hook before its balance moves (ERC-777 `tokensToSend`).
    function tokensToSend(address operator, address from, address to, uint256 amount) external;

    /// @notice Called on the receiver's hook after its balance moved (ERC-777 `tokensReceived`).
    function tokensReceived(address operator, address from, address to, uint256 amount) external;
}

/// @title HookedERC20
/// @notice An ERC-20 with ERC-777's transfer hooks, for debt-asset tests: an account registers its own hook
/// contract (as ERC-1820 lets only the account itself do); the sender's hook runs before any balance moves and the
/// receiver's hook after. Any decimals, open mint.
contract HookedERC20 is ERC20 {
    uint8 internal immutable _decimals;
    mapping(address account => ITokenHooks) public hookOf;

    constructor(uint8 decimals_) ERC20("HOOKED", "HOOKED") {
        _decimals = decimals_;
    }

    function decimals() public view override returns (uint8) {
        return _decimals;
    }

    function mint(address to, uint256 amount) external {
        _mint(to, amount);
    }

    /// @notice Registers (or, with address(0), removes) the caller's hook.
    function setHook(ITokenHooks hook) external {
        hookOf[msg.sender] = hook;
    }

    function _update(address from, address to, uint256 value) internal override {
        ITokenHooks sendHook = from == address(0) ? ITokenHooks(address(0)) : hookOf[from];
        if (address(sendHook) != address(0)) sendHook.tokensToSend(msg.sender, from, to, value);
        super._update(from, to, value);
        ITokenHooks receiveHook = to == address(0) ? ITokenHooks(address(0)) : hookOf[to];
        if (address(receiveHook) != address(0)) receiveHook.tokensReceived(msg.sender, from, to, value);
    }
}

/// @title SwitchableFeeToken
/// @notice An ERC-20 whose owner-less `setFeeBps` switches a transfer fee on or off at any time (like USDT's
/// dormant fee switch): `feeBps` of every transfer is burnt, so the receiver gets less than the amount sent while
/// the sender pays exactly the amount. Any decimals, open mint.
contract SwitchableFeeToken is ERC20 {
    uint8 internal immutable _decimals;
    uint256 public feeBps;

    constructor(uint8 decimals_, uint256 feeBps_) ERC20("SWFEE", "SWFEE") {
        (_decimals, feeBps) = (decimals_, feeBps_);
    }

    function decimals() public view override returns (uint8) {
        return _decimals;
    }

    function mint(address to, uint256 amount) external {
        _mint(to, amount);
    }

    function setFeeBps(uint256 feeBps_) external {
        feeBps = feeBps_;
    }

    function _update(address from, address to, uint256 value) internal override {
        if (from == address(0) || to == address(0) || feeBps == 0) return super._update(from, to, value);
        uint256 fee = (value * feeBps) / 10_000;
        super._update(from, address(0), fee);
        super._update(from, to, value - fee);
    }
}

/// @title HookAttacker
/// @notice Registers itself as its own HookedERC20 hook. When armed, it replays `payload` against `target` once,
/// from the hook chosen (`onSend`: before its tokens leave; otherwise after tokens arrive), and bubbles up whatever
/// the re-entrant call reverted with. `execute` lets it act as an ordinary account.
contract HookAttacker is ITokenHooks {
    /// @dev The errors its re-entrant calls bubble up, declared so that clients decode them from this ABI.
    error ReentrancyGuardReentrantCall();
    error ReceivedLess(address asset, uint256 expected, uint256 received);

    address public target;
    bytes public payload;
    bool public onSend;
    bool public armed;
    /// @notice What the last re-entrant call returned.
    bytes public lastReturn;

    function arm(address target_, bytes calldata payload_, bool onSend_) external {
        (target, payload, onSend, armed) = (target_, payload_, onSend_, true);
    }

    function tokensToSend(address, address, address, uint256) external {
        if (onSend) _fire();
    }

    function tokensReceived(address, address, address, uint256) external {
        if (!onSend) _fire();
    }

    function _fire() internal {
        if (!armed) return;
        armed = false;
        (bool ok, bytes memory ret) = target.call(payload);
        if (!ok) {
            assembly ("memory-safe") {
                revert(add(ret, 0x20), mload(ret))
            }
        }
        lastReturn = ret;
    }

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
