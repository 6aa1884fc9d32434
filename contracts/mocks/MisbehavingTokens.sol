// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";

/// @notice Minimal balance bookkeeping shared by the tokens below, which break the ERC-20 return conventions.
abstract contract BareToken {
    string public name;
    string public symbol;
    uint8 public immutable decimals;
    uint256 public totalSupply;
    mapping(address => uint256) public balanceOf;
    mapping(address => mapping(address => uint256)) public allowance;

    event Transfer(address indexed from, address indexed to, uint256 value);
    event Approval(address indexed owner, address indexed spender, uint256 value);

    constructor(string memory name_, uint8 decimals_) {
        (name, symbol, decimals) = (name_, name_, decimals_);
    }

    function mint(address to, uint256 amount) external {
        totalSupply += amount;
        balanceOf[to] += amount;
        emit Transfer(address(0), to, amount);
    }

    function _move(address from, address to, uint256 amount) internal {
        require(balanceOf[from] >= amount);
        balanceOf[from] -= amount;
        balanceOf[to] += amount;
        emit Transfer(from, to, amount);
    }

    function _spend(address from, uint256 amount) internal {
        if (from != msg.sender && allowance[from][msg.sender] != type(uint256).max) {
            require(allowance[from][msg.sender] >= amount);
            allowance[from][msg.sender] -= amount;
        }
    }
}

/// @title NoReturnToken
/// @notice Like USDT on mainnet: `transfer`, `transferFrom` and `approve` return nothing.
contract NoReturnToken is BareToken {
    constructor(uint8 decimals_) BareToken("NORET", decimals_) {}

    function approve(address spender, uint256 amount) external {
        allowance[msg.sender][spender] = amount;
        emit Approval(msg.sender, spender, amount);
    }

    function transfer(address to, uint256 amount) external {
        _move(msg.sender, to, amount);
    }

    function transferFrom(address from, address to, uint256 amount) external {
        _spend(from, amount);
        _move(from, to, amount);
    }
}

/// @title ReturnsFalseToken
/// @notice Returns false instead of reverting when a transfer cannot happen, and also when `failing` is set.
contract ReturnsFalseToken is BareToken {
    bool public failing;

    constructor(uint8 decimals_) BareToken("FALSE", decimals_) {}

    function setFailing(bool on) external {
        failing = on;
    }

    function approve(address spender, uint256 amount) external returns (bool) {
        allowance[msg.sender][spender] = amount;
        emit Approval(msg.sender, spender, amount);
        return true;
    }

    function transfer(address to, uint256 amount) external returns (bool) {
        if (failing || balanceOf[msg.sender] < amount) return false;
        _move(msg.sender, to, amount);
        return true;
    }

    function transferFrom(address from, address to, uint256 amount) external returns (bool) {
        if (failing || balanceOf[from] < amount || (from != msg.sender && allowance[from][msg.sender] < amount)) {
            return false;
        }
        _spend(from, amount);
        _move(from, to, amount);
        return true;
    }
}

/// @title FeeOnTransferToken
/// @notice Burns `feeBps` of every transfer, so the receiver gets less than the amount sent.
contract FeeOnTransferToken is ERC20 {
    uint256 public immutable feeBps;

    constructor(uint256 feeBps_) ERC20("FEE", "FEE") {
        feeBps = feeBps_;
    }

    function mint(address to, uint256 amount) external {
        _mint(to, amount);
    }

    function _update(address from, address to, uint256 value) internal override {
        if (from == address(0) || to == address(0)) return super._update(from, to, value);
        uint256 fee = (value * feeBps) / 10_000;
        super._update(from, address(0), fee);
        super._update(from, to, value - fee);
    }
}

/// @notice Receives a call on every transfer of a HookToken.
interface ITransferHook {
    function onTokenTransfer(address from, address to, uint256 amount) external;
}

/// @title HookToken
/// @notice An ERC-20 that calls a hook contract on every transfer (like ERC-777 hooks), letting a test re-enter.
contract HookToken is ERC20 {
    ITransferHook public hook;

    constructor() ERC20("HOOK", "HOOK") {}

    function mint(address to, uint256 amount) external {
        _mint(to, amount);
    }

    function setHook(ITransferHook hook_) external {
        hook = hook_;
    }

    function _update(address from, address to, uint256 value) internal override {
        super._update(from, to, value);
        if (address(hook) != address(0) && from != address(0)) hook.onTokenTransfer(from, to, value);
    }
}
