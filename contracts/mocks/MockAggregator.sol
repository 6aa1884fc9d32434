// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {SafeCast} from "@openzeppelin/contracts/utils/math/SafeCast.sol";
import {AggregatorV3Interface} from "../interfaces/AggregatorV3Interface.sol";

/// @title MockAggregator
/// @notice A Chainlink-style feed for tests, drills and local deployments: keeps a round history and lets anyone
/// push answers, set timestamps and rounds, or make the feed revert or burn all its gas.
/// @dev `decimals` lives in storage (not an immutable) so the drill can install this code at a real feed's
/// address with `anvil_setCode` and then set the feed's own decimals.
contract MockAggregator is AggregatorV3Interface {
    /// @dev One slot per round, as Chainlink's OCR aggregators store int192 answers and 32-bit timestamps.
    struct Round {
        int192 answer;
        uint32 startedAt;
        uint32 updatedAt;
    }

    error NoDataPresent(uint80 roundId);
    error FeedBroken();

    event AnswerUpdated(int256 indexed current, uint256 indexed roundId, uint256 updatedAt);

    uint8 public decimals;
    uint80 public latestRound;
    bool public reverting;
    bool public gasBomb;
    string public description;
    mapping(uint80 roundId => Round) internal _rounds;

    constructor(uint8 decimals_, int256 initialAnswer, string memory description_) {
        decimals = decimals_;
        description = description_;
        if (initialAnswer != 0) _push(initialAnswer, block.timestamp, block.timestamp);
    }

    function version() external pure returns (uint256) {
        return 4;
    }

    /// @notice Pushes a new round with `answer`, started and updated now.
    function setAnswer(int256 answer) external {
        _push(answer, block.timestamp, block.timestamp);
    }

    /// @notice Pushes a new round with explicit timestamps (e.g. a stale `updatedAt`, or a sequencer status
    /// change time in `startedAt`).
    function setAnswerAt(int256 answer, uint256 startedAt, uint256 updatedAt) external {
        _push(answer, startedAt, updatedAt);
    }

    /// @notice Overwrites round `roundId` and makes it the latest.
    function setRound(uint80 roundId, int256 answer, uint256 startedAt, uint256 updatedAt) external {
        _rounds[roundId] = Round(SafeCast.toInt192(answer), SafeCast.toUint32(startedAt), SafeCast.toUint32(updatedAt));
        latestRound = roundId;
        emit AnswerUpdated(answer, roundId, updatedAt);
    }

    function setDecimals(uint8 decimals_) external {
        decimals = decimals_;
    }

    function setReverting(bool on) external {
        reverting = on;
    }

    function setGasBomb(bool on) external {
        gasBomb = on;
    }

    function getRoundData(uint80 roundId) external view returns (uint80, int256, uint256, uint256, uint80) {
        _misbehave();
        Round memory r = _rounds[roundId];
        if (r.updatedAt == 0) revert NoDataPresent(roundId);
        return (roundId, r.answer, r.startedAt, r.updatedAt, roundId);
    }

    function latestRoundData() external view returns (uint80, int256, uint256, uint256, uint80) {
        _misbehave();
        uint80 id = latestRound;
        Round memory r = _rounds[id];
        return (id, r.answer, r.startedAt, r.updatedAt, id);
    }

    function latestAnswer() external view returns (int256) {
        return _rounds[latestRound].answer;
    }

    function _push(int256 answer, uint256 startedAt, uint256 updatedAt) internal {
        uint80 id = latestRound + 1;
        _rounds[id] = Round(SafeCast.toInt192(answer), SafeCast.toUint32(startedAt), SafeCast.toUint32(updatedAt));
        latestRound = id;
        emit AnswerUpdated(answer, id, updatedAt);
    }

    function _misbehave() internal view {
        if (reverting) revert FeedBroken();
        if (gasBomb) {
            // Burn every unit of gas the caller forwarded.
            while (true) {}
        }
    }
}
