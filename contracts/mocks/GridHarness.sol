// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {GridMath} from "../libraries/GridMath.sol";
import {RiskMath} from "../libraries/RiskMath.sol";

/// @notice Test harness: GridMath over positions given as amounts and prices (valued as the engine values them),
/// in batches for the differential campaign, and over columns kept in storage for the gas table.
contract GridHarness {
    using RiskMath for uint256;

    struct Position {
        uint256 amount;
        uint256 price;
        uint8 decimals;
        uint256[4] column;
    }

    struct Case {
        Position[] longs;
        Position[] shorts;
        uint256 count;
    }

    mapping(uint256 asset => uint256[4]) internal _columns;
    uint256 public lastHealth;

    function health(Case memory c) public pure returns (GridMath.Result memory) {
        GridMath.Leg[] memory longs = new GridMath.Leg[](c.longs.length);
        for (uint256 k; k < c.longs.length; ++k) {
            Position memory p = c.longs[k];
            longs[k] = GridMath.Leg(p.amount.valueDown(p.price, p.decimals), p.column);
        }
        GridMath.Leg[] memory shorts = new GridMath.Leg[](c.shorts.length);
        for (uint256 k; k < c.shorts.length; ++k) {
            Position memory p = c.shorts[k];
            shorts[k] = GridMath.Leg(p.amount.valueUp(p.price, p.decimals), p.column);
        }
        return GridMath.health(longs, shorts, c.count);
    }

    function healthBatch(Case[] memory cases) external pure returns (GridMath.Result[] memory out) {
        out = new GridMath.Result[](cases.length);
        for (uint256 i; i < cases.length; ++i) {
            out[i] = health(cases[i]);
        }
    }

    function setColumn(uint256 asset, uint256[4] calldata column) external {
        _columns[asset] = column;
    }

    /// @notice A margin check's grid part as a transaction (for its gas): each held asset's column read from
    /// storage, values given, the result stored.
    function checkStored(uint256[] calldata longAssets, uint256[] calldata longValues, uint256[] calldata shortAssets,
        uint256[] calldata shortValues, uint256 count) external {
        GridMath.Leg[] memory longs = new GridMath.Leg[](longAssets.length);
        for (uint256 k; k < longAssets.length; ++k) {
            longs[k] = GridMath.Leg(longValues[k], _load(longAssets[k], count));
        }
        GridMath.Leg[] memory shorts = new GridMath.Leg[](shortAssets.length);
        for (uint256 k; k < shortAssets.length; ++k) {
            shorts[k] = GridMath.Leg(shortValues[k], _load(shortAssets[k], count));
        }
        lastHealth = GridMath.health(longs, shorts, count).health;
    }

    /// @dev Only the words the grid's scenarios use are read.
    function _load(uint256 asset, uint256 count) internal view returns (uint256[4] memory column) {
        uint256 words = (count + GridMath.MOVES_PER_WORD - 1) / GridMath.MOVES_PER_WORD;
        for (uint256 w; w < words; ++w) {
            column[w] = _columns[asset][w];
        }
    }
}
