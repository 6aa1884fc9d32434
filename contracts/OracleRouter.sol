// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";
import {IERC20Metadata} from "@openzeppelin/contracts/token/ERC20/extensions/IERC20Metadata.sol";
import {IERC4626} from "@openzeppelin/contracts/interfaces/IERC4626.sol";
import {AggregatorV3Interface} from "./interfaces/AggregatorV3Interface.sol";
import {IOracleRouter} from "./interfaces/IOracleRouter.sol";
import {RiskMath} from "./libraries/RiskMath.sol";

/// @title OracleRouter
/// @notice Validated Chainlink prices for the MarginEngine; the rules are documented on IOracleRouter.
contract OracleRouter is IOracleRouter, AccessControl {
    using RiskMath for uint256;

    /// @inheritdoc IOracleRouter
    uint256 public constant FEED_CALL_GAS = 100_000;
    /// @inheritdoc IOracleRouter
    uint256 public constant SHARE_REFRESH_INTERVAL = 1 days;
    /// @inheritdoc IOracleRouter
    uint256 public constant SHARE_CAP_MAX_AGE = 30 days;
    /// @dev Gas the router needs left before a feed call: EIP-150 forwards at most 63/64 of what remains, so this
    /// much guarantees the call its full budget, plus a margin for the work after it.
    uint256 internal constant FEED_GAS_FLOOR = (FEED_CALL_GAS * 64) / 63 + 10_000;
    /// @dev Gas given to a feed's `decimals()` call, read with every answer (a Chainlink proxy forwards it to its
    /// current aggregator: a few thousand gas).
    uint256 internal constant DECIMALS_CALL_GAS = 30_000;
    /// @dev As FEED_GAS_FLOOR, for the `decimals()` call. Made right after `latestRoundData`, it never binds for a
    /// feed whose answer took less than ~60k of its 100k budget, so it does not raise what callers must forward.
    uint256 internal constant DECIMALS_GAS_FLOOR = (DECIMALS_CALL_GAS * 64) / 63 + 10_000;
    /// @dev Largest feed decimals the router scales exactly (10**(18 - decimals)).
    uint256 internal constant MAX_FEED_DECIMALS = 18;
    /// @dev Bytes of a well-formed `latestRoundData` answer: five 32-byte words.
    uint256 internal constant ROUND_DATA_SIZE = 160;
    /// @dev Sequencer-uptime feeds answer 0 when the sequencer is up and 1 when it is down.
    int256 internal constant SEQUENCER_UP = 0;

    mapping(address asset => FeedConfig) internal _feeds;
    mapping(address asset => SecondaryConfig) internal _secondaries;
    mapping(address share => ShareConfig) internal _shares;
    address internal _sequencerFeed;
    uint32 internal _sequencerGrace;

    constructor(address admin) {
        if (admin == address(0)) revert InvalidConfig();
        _grantRole(DEFAULT_ADMIN_ROLE, admin);
    }

    // ---------------------------------------------------------------- prices

    /// @inheritdoc IOracleRouter
    function price(address asset) external view returns (uint256 p) {
        bytes memory failure;
        (p, failure) = _price(asset);
        if (failure.length != 0) {
            // `failure` is the ABI encoding of one of this contract's typed errors with its arguments.
            assembly ("memory-safe") {
                revert(add(failure, 0x20), mload(failure))
            }
        }
    }

    /// @inheritdoc IOracleRouter
    function tryPrice(address asset) external view returns (bool ok, uint256 p) {
        bytes memory failure;
        (p, failure) = _price(asset);
        if (failure.length != 0) return (false, 0);
        ok = true;
    }

    /// @inheritdoc IOracleRouter
    function checkSequencer() external view {
        address feed = _sequencerFeed;
        if (feed == address(0)) return;
        (bool ok, int256 answer, uint256 startedAt,) = _readFeed(feed);
        // An unreadable sequencer feed gates new risk too: this path only ever protects borrowing.
        if (!ok || answer != SEQUENCER_UP) revert SequencerDown();
        // A status change time of zero (an invalid round) or in the future proves nothing: still in grace.
        if (startedAt == 0 || startedAt > block.timestamp || block.timestamp - startedAt <= _sequencerGrace) {
            revert SequencerGracePeriod(startedAt, _sequencerGrace);
        }
    }

    /// @dev The validated price of `asset`, or `failure` = the exact revert data `price(asset)` reverts with (a
    /// typed error and its arguments; empty when the price is valid). Never reverts because of a feed or the
    /// configuration; reverts only for lack of gas (`_readFeed`, `_readShareRate`).
    function _price(address asset) internal view returns (uint256, bytes memory failure) {
        // The common case reads two slots: the feed config. Share and secondary configs are read only when
        // there is no feed (a share) or the flag says a secondary exists.
        FeedConfig memory cfg = _feeds[asset];
        if (cfg.feed == address(0)) {
            ShareConfig storage share = _shares[asset];
            if (share.underlying == address(0)) {
                return (0, abi.encodeWithSelector(AssetNotConfigured.selector, asset));
            }
            return _sharePrice(asset, share);
        }
        uint256 primary;
        (primary, failure) = _validatedPrice(asset, cfg.feed, cfg.maxStaleness);
        if (failure.length != 0) return (0, failure);
        if (primary <= cfg.minPrice || primary >= cfg.maxPrice) {
            return (0, abi.encodeWithSelector(PriceOutOfBounds.selector, asset, primary));
        }

        if (cfg.hasSecondary) {
            SecondaryConfig memory sec = _secondaries[asset];
            uint256 secondary;
            (secondary, failure) = _validatedPrice(asset, sec.feed, sec.maxStaleness);
            if (failure.length != 0) return (0, failure);
            uint256 gap = primary > secondary ? primary - secondary : secondary - primary;
            // Deviation relative to the primary, rounded up so a borderline disagreement is refused. A gap above
            // 2**255 / WAD is, against a primary below 2**128, a deviation far above any uint64 maximum; below it,
            // gap * WAD + primary cannot overflow.
            if (gap > type(uint256).max / (2 * RiskMath.WAD) || gap.wDivUp(primary) > sec.maxDeviation) {
                return (0, abi.encodeWithSelector(PriceDeviationTooHigh.selector, asset, primary, secondary));
            }
        }
        return (primary, failure);
    }

    /// @dev Share price = underlying price * min(exchange rate, cap) / 10**underlyingDecimals, rounded down.
    function _sharePrice(address share, ShareConfig storage cfg) internal view returns (uint256, bytes memory) {
        (uint256 underlyingPrice, bytes memory failure) = _price(cfg.underlying);
        if (failure.length != 0) return (0, failure);
        uint256 cap = _shareRateCapDown(cfg);
        (bool ok, uint256 rate) = _readShareRate(share, 10 ** cfg.shareDecimals);
        if (!ok) return (0, abi.encodeWithSelector(FeedCallFailed.selector, share, share));
        return (RiskMath.mulDivDown(underlyingPrice, rate.min(cap), 10 ** cfg.underlyingDecimals), failure);
    }

    /// @dev The highest exchange rate a share may be priced at now: the snapshot grown linearly by
    /// `maxYearlyGrowth` over the time since it was taken, at most `SHARE_CAP_MAX_AGE` of it; rounded down.
    function _shareRateCapDown(ShareConfig storage cfg) internal view returns (uint256) {
        uint256 snapshot = cfg.snapshotRate;
        uint256 elapsed = (block.timestamp - cfg.snapshotTime).min(SHARE_CAP_MAX_AGE);
        return snapshot
            + RiskMath.mulDivDown(snapshot, uint256(cfg.maxYearlyGrowth) * elapsed, RiskMath.WAD * RiskMath.YEAR);
    }

    /// @dev Reads one feed and applies the answer guards; returns the price scaled to WAD with the decimals the
    /// feed reports now (a proxy's decimals follow its current aggregator), or the failure.
    function _validatedPrice(address asset, address feed, uint32 maxStaleness)
        internal
        view
        returns (uint256, bytes memory failure)
    {
        (bool ok, int256 answer,, uint256 updatedAt) = _readFeed(feed);
        if (!ok) return (0, abi.encodeWithSelector(FeedCallFailed.selector, asset, feed));
        if (answer <= 0) return (0, abi.encodeWithSelector(NonPositivePrice.selector, asset, answer));
        if (updatedAt == 0 || updatedAt > block.timestamp) {
            return (0, abi.encodeWithSelector(InvalidUpdateTime.selector, asset, updatedAt));
        }
        if (block.timestamp - updatedAt > maxStaleness) {
            return (0, abi.encodeWithSelector(StalePrice.selector, asset, updatedAt, uint256(maxStaleness)));
        }
        (bool decOk, uint256 decimals) = _readDecimals(feed);
        if (!decOk) return (0, abi.encodeWithSelector(FeedCallFailed.selector, asset, feed));
        if (decimals > MAX_FEED_DECIMALS) {
            return (0, abi.encodeWithSelector(UnsupportedFeedDecimals.selector, asset, feed, decimals));
        }
        uint256 scale = 10 ** (MAX_FEED_DECIMALS - decimals);
        // An answer whose scaled price would not fit a uint256 is beyond any bound (they are uint128): refused as
        // out of bounds, at the largest price, rather than by an arithmetic panic that `tryPrice` could not report.
        if (uint256(answer) > type(uint256).max / scale) {
            return (0, abi.encodeWithSelector(PriceOutOfBounds.selector, asset, type(uint256).max));
        }
        return (uint256(answer) * scale, failure);
    }

    /// @dev Calls `latestRoundData` with a fixed gas budget and copies at most five words back, so a reverting,
    /// gas-burning or return-bombing feed yields `ok = false` instead of a revert we cannot type.
    function _readFeed(address feed)
        internal
        view
        returns (bool ok, int256 answer, uint256 startedAt, uint256 updatedAt)
    {
        _requireGas(FEED_GAS_FLOOR);
        bytes4 selector = AggregatorV3Interface.latestRoundData.selector;
        uint256 size;
        assembly ("memory-safe") {
            let ptr := mload(0x40)
            mstore(ptr, selector)
            ok := staticcall(FEED_CALL_GAS, feed, ptr, 4, ptr, ROUND_DATA_SIZE)
            size := returndatasize()
            answer := mload(add(ptr, 0x20))
            startedAt := mload(add(ptr, 0x40))
            updatedAt := mload(add(ptr, 0x60))
        }
        ok = ok && size >= ROUND_DATA_SIZE;
    }

    /// @dev `convertToAssets(shareUnit)` of an ERC-4626 share under the same rules as a feed call: a fixed gas
    /// budget, one word copied back, and `ok = false` for a revert, a gas burn or a short answer.
    function _readShareRate(address share, uint256 shareUnit) internal view returns (bool ok, uint256 rate) {
        _requireGas(FEED_GAS_FLOOR);
        bytes4 selector = IERC4626.convertToAssets.selector;
        uint256 size;
        assembly ("memory-safe") {
            let ptr := mload(0x40)
            mstore(ptr, selector)
            mstore(add(ptr, 0x04), shareUnit)
            ok := staticcall(FEED_CALL_GAS, share, ptr, 0x24, ptr, 0x20)
            size := returndatasize()
            rate := mload(ptr)
        }
        ok = ok && size >= 0x20;
    }

    /// @dev A feed's `decimals()` under the same rules: a fixed budget, one word back, `ok = false` for a revert,
    /// a gas burn or a short answer.
    function _readDecimals(address feed) internal view returns (bool ok, uint256 decimals) {
        _requireGas(DECIMALS_GAS_FLOOR);
        bytes4 selector = AggregatorV3Interface.decimals.selector;
        uint256 size;
        assembly ("memory-safe") {
            let ptr := mload(0x40)
            mstore(ptr, selector)
            ok := staticcall(DECIMALS_CALL_GAS, feed, ptr, 4, ptr, 0x20)
            size := returndatasize()
            decimals := mload(ptr)
        }
        ok = ok && size >= 0x20;
    }

    /// @dev Refuses to make an external oracle call that could not get its full budget: a failure must be the
    /// callee's own, never the caller's choice of gas limit. `floor` = budget * 64/63 (EIP-150) + a margin.
    function _requireGas(uint256 floor) internal view {
        if (gasleft() < floor) revert InsufficientGasForOracle(gasleft());
    }

    // ---------------------------------------------------------------- views

    /// @inheritdoc IOracleRouter
    function feedConfig(address asset) external view returns (FeedConfig memory) {
        return _feeds[asset];
    }

    /// @inheritdoc IOracleRouter
    function secondaryConfig(address asset) external view returns (SecondaryConfig memory) {
        return _secondaries[asset];
    }

    /// @inheritdoc IOracleRouter
    function shareConfig(address share) external view returns (ShareConfig memory) {
        return _shares[share];
    }

    /// @inheritdoc IOracleRouter
    function sequencer() external view returns (address feed, uint32 gracePeriod) {
        return (_sequencerFeed, _sequencerGrace);
    }

    // ---------------------------------------------------------------- governance

    /// @inheritdoc IOracleRouter
    function setFeed(address asset, address feed, uint32 maxStaleness, uint128 minPrice, uint128 maxPrice)
        external
        onlyRole(DEFAULT_ADMIN_ROLE)
    {
        if (
            asset == address(0) || feed == address(0) || maxStaleness == 0 || minPrice >= maxPrice
                || _shares[asset].underlying != address(0)
        ) revert InvalidConfig();
        uint8 dec = AggregatorV3Interface(feed).decimals();
        if (dec > 18) revert InvalidConfig();
        bool hasSecondary = _secondaries[asset].feed != address(0);
        _feeds[asset] = FeedConfig(feed, maxStaleness, dec, hasSecondary, minPrice, maxPrice);
        emit FeedSet(asset, feed, maxStaleness, minPrice, maxPrice);
    }

    /// @inheritdoc IOracleRouter
    function setSecondaryFeed(address asset, address feed, uint32 maxStaleness, uint64 maxDeviation)
        external
        onlyRole(DEFAULT_ADMIN_ROLE)
    {
        if (feed == address(0)) {
            delete _secondaries[asset];
            _feeds[asset].hasSecondary = false;
        } else {
            if (_feeds[asset].feed == address(0) || maxStaleness == 0 || maxDeviation == 0) revert InvalidConfig();
            uint8 dec = AggregatorV3Interface(feed).decimals();
            if (dec > 18) revert InvalidConfig();
            _secondaries[asset] = SecondaryConfig(feed, maxStaleness, dec, maxDeviation);
            _feeds[asset].hasSecondary = true;
        }
        emit SecondaryFeedSet(asset, feed, maxStaleness, maxDeviation);
    }

    /// @inheritdoc IOracleRouter
    function setShareAsset(address share, address underlying, uint64 maxYearlyGrowth)
        external
        onlyRole(DEFAULT_ADMIN_ROLE)
    {
        if (
            share == address(0) || _feeds[share].feed != address(0) || _feeds[underlying].feed == address(0)
                || IERC4626(share).asset() != underlying
        ) {
            revert InvalidConfig();
        }
        uint8 shareDec = IERC20Metadata(share).decimals();
        uint256 rate = IERC4626(share).convertToAssets(10 ** shareDec);
        if (rate == 0) revert InvalidConfig();
        _shares[share] = ShareConfig({
            underlying: underlying,
            shareDecimals: shareDec,
            underlyingDecimals: IERC20Metadata(underlying).decimals(),
            snapshotTime: uint64(block.timestamp),
            maxYearlyGrowth: maxYearlyGrowth,
            snapshotRate: rate
        });
        emit ShareAssetSet(share, underlying, rate, maxYearlyGrowth);
    }

    /// @inheritdoc IOracleRouter
    function refreshShareRate(address share) external returns (uint256 snapshot) {
        ShareConfig storage cfg = _shares[share];
        if (cfg.underlying == address(0)) revert AssetNotConfigured(share);
        uint256 nextAllowed = uint256(cfg.snapshotTime) + SHARE_REFRESH_INTERVAL;
        if (block.timestamp < nextAllowed) revert ShareRefreshTooSoon(share, nextAllowed);
        (bool ok, uint256 rate) = _readShareRate(share, 10 ** cfg.shareDecimals);
        // A zero rate would pin the cap at zero for good: it is left to governance (`setShareAsset`).
        if (!ok || rate == 0) revert FeedCallFailed(share, share);
        // Never above the cap: a donation made since the last snapshot is not carried into the next one.
        snapshot = rate.min(_shareRateCapDown(cfg));
        cfg.snapshotRate = snapshot;
        cfg.snapshotTime = uint64(block.timestamp);
        emit ShareRateRefreshed(share, rate, snapshot);
    }

    /// @inheritdoc IOracleRouter
    function setSequencerFeed(address feed, uint32 gracePeriod) external onlyRole(DEFAULT_ADMIN_ROLE) {
        _sequencerFeed = feed;
        _sequencerGrace = gracePeriod;
        emit SequencerFeedSet(feed, gracePeriod);
    }
}
