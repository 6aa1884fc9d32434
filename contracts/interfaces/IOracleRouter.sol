// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

/// @title IOracleRouter
/// @notice Turns Chainlink-style feeds into validated prices. A price is USD per whole token, WAD-scaled (1e18):
/// `value = amount * price / 10**tokenDecimals`. Nothing is ever priced with an answer that failed a guard: every
/// failure reverts with a typed error, so callers fail closed.
/// @dev Guards per feed, in order: the call succeeds within `FEED_CALL_GAS` and returns a full round; `answer > 0`;
/// `0 < updatedAt <= block.timestamp`; `block.timestamp - updatedAt <= maxStaleness`; the feed's `decimals()` answers
/// (else `FeedCallFailed`) with at most 18 (else `UnsupportedFeedDecimals`); the scaled price lies strictly
/// between `minPrice` and `maxPrice` (a feed pinned at its circuit-breaker bound is refused, the LUNA lesson); with
/// a secondary feed, the two prices differ by at most `maxDeviation` relative to the primary. An answer too large
/// to scale (its WAD price would not fit a uint256) gives `PriceOutOfBounds(asset, type(uint256).max)`, and a
/// secondary too far from the primary to compute the deviation gives `PriceDeviationTooHigh`: no answer makes the
/// router's arithmetic panic, so `tryPrice` can report every bad answer.
/// Decimals: the answer is scaled with the decimals the feed reports at the same read, not with those cached at
/// `setFeed`. A Chainlink proxy's decimals are its current aggregator's, and a phase change
/// (`proposeAggregator`/`confirmAggregator`) may bring an aggregator with other decimals: such an answer is priced
/// right at once, without governance. (Refusing it instead would stop borrowing and, for a caller that values an
/// unpriceable collateral at zero, liquidate every holder of the asset during a routine feed migration; the feed's
/// owner, who can change its decimals, can change its answer anyway.) Cost: one `decimals()` call per feed read,
/// measured ~0.9k gas on a mock feed and ~3.8k through an AggregatorProxy over a FluxAggregator (whose decimals
/// are in storage; an OCR2 aggregator's are immutable, so less).
/// An ERC-4626 share whose `convertToAssets` reverts, exceeds `FEED_CALL_GAS` or returns less than one word gives
/// `FeedCallFailed(share, share)`.
/// `tryPrice` reports the same failures as `ok = false` instead of reverting, for callers that must go on without
/// the price (e.g. valuing an unpriceable collateral at zero).
/// Known attack: a caller that forwards too little gas could make a healthy feed call fail, and with `tryPrice`
/// make a valid price look unavailable. The router refuses to call a feed or a share unless enough gas remains for
/// the full `FEED_CALL_GAS` budget and reverts `InsufficientGasForOracle` instead, so a failure is the feed's own.
/// Gas estimation (for integrators): `eth_estimateGas` answers the least gas limit with which a call succeeds on the
/// block it is run against, and a transaction that prices assets needs, at its last feed read, a full feed budget
/// left (~111.6k). The vault accrues interest at most once per block, before the engine reads prices: estimated in
/// the block of the last accrual (nodes estimate against the latest block) and mined in a later one, a borrow,
/// withdraw or liquidation pays ~11.6k gas for an accrual its estimate did not see, and with exactly the estimate
/// it reverts `InsufficientGasForOracle` (without the floor it would run out of gas instead: any exact estimate
/// fails when the state costs more when mined). Send it with at least `estimate + max(10 %, 25,000 gas)`; the
/// keeper adds 20 %. A contract forwarding gas to the engine must forward what such an estimate says.
interface IOracleRouter {
    /// @notice Configuration of an asset's primary feed.
    struct FeedConfig {
        address feed; // AggregatorV3Interface; address(0) = asset not configured
        uint32 maxStaleness; // seconds an answer stays valid after `updatedAt`
        uint8 feedDecimals; // decimals the feed reported when set (<= 18); prices use the decimals it reports now
        bool hasSecondary; // a secondary feed is set (saves reading its slots when there is none)
        uint128 minPrice; // exclusive lower bound, WAD USD per whole token
        uint128 maxPrice; // exclusive upper bound, WAD USD per whole token
    }

    /// @notice Configuration of an asset's optional secondary feed.
    struct SecondaryConfig {
        address feed;
        uint32 maxStaleness;
        uint8 feedDecimals;
        uint64 maxDeviation; // WAD, e.g. 0.02e18 = 2 %, relative to the primary price
    }

    /// @notice An ERC-4626 share priced through its underlying asset's feed, with a capped exchange rate.
    struct ShareConfig {
        address underlying; // asset whose feed prices the share's assets
        uint8 shareDecimals;
        uint8 underlyingDecimals;
        uint64 snapshotTime; // when `snapshotRate` was taken
        uint64 maxYearlyGrowth; // WAD per year, e.g. 0.15e18: the cap rises linearly by 15 % of the snapshot a year
        uint256 snapshotRate; // underlying units per whole share at `snapshotTime` (at most the cap then)
    }

    /// @notice The primary feed answered with a value that is zero or negative.
    error NonPositivePrice(address asset, int256 answer);
    /// @notice The feed's latest update is older than its maximum staleness.
    error StalePrice(address asset, uint256 updatedAt, uint256 maxStaleness);
    /// @notice The feed reported an update time of zero or in the future.
    error InvalidUpdateTime(address asset, uint256 updatedAt);
    /// @notice The scaled price is at or outside the configured bounds.
    error PriceOutOfBounds(address asset, uint256 price);
    /// @notice The feed call reverted, ran out of its gas budget or returned malformed data.
    error FeedCallFailed(address asset, address feed);
    /// @notice The feed reports more than 18 decimals now (it had at most 18 when it was set: a proxy whose new
    /// aggregator has more). Point the asset at a feed with at most 18 decimals.
    error UnsupportedFeedDecimals(address asset, address feed, uint256 decimals);
    /// @notice Less gas remained than a full feed call budget needs; retry with more gas.
    error InsufficientGasForOracle(uint256 gasLeft);
    /// @notice The primary and secondary prices disagree beyond the maximum deviation.
    error PriceDeviationTooHigh(address asset, uint256 primary, uint256 secondary);
    /// @notice No feed is configured for the asset.
    error AssetNotConfigured(address asset);
    /// @notice The L2 sequencer reports down.
    error SequencerDown();
    /// @notice The L2 sequencer came back up less than the grace period ago (or reports an invalid status time:
    /// zero or in the future).
    error SequencerGracePeriod(uint256 upSince, uint256 gracePeriod);
    /// @notice `refreshShareRate` was called less than `SHARE_REFRESH_INTERVAL` after the share's last snapshot.
    error ShareRefreshTooSoon(address share, uint256 nextAllowed);
    /// @notice A configuration value is invalid (zero address, bounds inverted, decimals > 18, ...).
    error InvalidConfig();

    /// @notice The primary feed of `asset` was set.
    event FeedSet(address indexed asset, address feed, uint32 maxStaleness, uint128 minPrice, uint128 maxPrice);
    /// @notice The secondary feed of `asset` was set (feed == address(0) removes it).
    event SecondaryFeedSet(address indexed asset, address feed, uint32 maxStaleness, uint64 maxDeviation);
    /// @notice `share` is priced as an ERC-4626 share of `underlying`.
    event ShareAssetSet(address indexed share, address indexed underlying, uint256 snapshotRate, uint64 maxYearlyGrowth);
    /// @notice The share's snapshot moved to `snapshotRate` = min(`rate`, the cap at that time).
    event ShareRateRefreshed(address indexed share, uint256 rate, uint256 snapshotRate);
    /// @notice The sequencer-uptime feed was set (address(0) disables the gate).
    event SequencerFeedSet(address indexed feed, uint32 gracePeriod);

    /// @notice Gas given to one feed call.
    function FEED_CALL_GAS() external view returns (uint256);

    /// @notice Least time between two snapshots of a share's exchange rate (1 day).
    function SHARE_REFRESH_INTERVAL() external view returns (uint256);

    /// @notice Longest time the share-rate cap keeps growing after its snapshot (30 days): with no refresh for
    /// longer, the cap stays at `snapshot * (1 + maxYearlyGrowth * 30 days / YEAR)`.
    function SHARE_CAP_MAX_AGE() external view returns (uint256);

    /// @notice Validated price of `asset`, WAD USD per whole token. Reverts with a typed error when invalid.
    /// @param asset A token with a feed (`setFeed`) or an ERC-4626 share (`setShareAsset`).
    /// @return The price, WAD USD per whole token of `asset`.
    function price(address asset) external view returns (uint256);

    /// @notice The price `price(asset)` would return, or `ok = false` (price 0) wherever `price(asset)` would revert
    /// because of the feed or the configuration: no feed configured, unreadable/reverting/short answer, answer <= 0,
    /// bad or future update time, stale, out of bounds, secondary feed disagreeing or unreadable, share rate
    /// unreadable. It reverts only for lack of gas (`InsufficientGasForOracle`, or an out-of-gas), so a caller can
    /// never make a price look unavailable by limiting the gas it forwards.
    /// @dev Both functions run the same validation, which reports a failure instead of reverting; `price` reverts
    /// with that failure's typed error, `tryPrice` returns false. Every external oracle call (a feed's
    /// `latestRoundData`, a share's `convertToAssets`) is made only when a full `FEED_CALL_GAS` budget is left.
    /// @param asset A token with a feed (`setFeed`) or an ERC-4626 share (`setShareAsset`).
    /// @return ok True when the price is valid.
    /// @return price The validated price (WAD USD per whole token) when `ok`, else 0.
    function tryPrice(address asset) external view returns (bool ok, uint256 price);

    /// @notice Reverts with `SequencerDown` or `SequencerGracePeriod` when new risk must not be taken.
    /// Returns silently when no sequencer feed is configured. Never used on the liquidation path.
    function checkSequencer() external view;

    /// @notice Primary feed configuration of `asset`.
    function feedConfig(address asset) external view returns (FeedConfig memory);

    /// @notice Secondary feed configuration of `asset` (feed == address(0) when none).
    function secondaryConfig(address asset) external view returns (SecondaryConfig memory);

    /// @notice Share configuration of `share` (underlying == address(0) when `share` is not a vault share).
    function shareConfig(address share) external view returns (ShareConfig memory);

    /// @notice The sequencer-uptime feed and its grace period in seconds.
    function sequencer() external view returns (address feed, uint32 gracePeriod);

    /// @notice Sets the primary feed of `asset` (not an ERC-4626 share set with `setShareAsset`). Admin only.
    /// Reads the feed's decimals (must be <= 18; stored for information, every price read re-reads them). Keeps a
    /// secondary feed already set.
    function setFeed(address asset, address feed, uint32 maxStaleness, uint128 minPrice, uint128 maxPrice) external;

    /// @notice Sets or removes (feed = address(0)) the secondary feed of `asset`. Admin only.
    function setSecondaryFeed(address asset, address feed, uint32 maxStaleness, uint64 maxDeviation) external;

    /// @notice Prices ERC-4626 `share` (which must have no feed of its own) through `underlying`'s feed,
    /// snapshotting the current exchange rate; the rate used is capped at
    /// `snapshot * (1 + maxYearlyGrowth * min(elapsed, SHARE_CAP_MAX_AGE) / YEAR)`, `elapsed` counted from the last
    /// snapshot (this call or `refreshShareRate`). Admin only; calling it again resets the snapshot to the current
    /// rate, whatever it is (governance's override, e.g. after a slashing or to accept a real jump).
    function setShareAsset(address share, address underlying, uint64 maxYearlyGrowth) external;

    /// @notice Moves `share`'s snapshot to min(its current exchange rate, the cap now) and its time to now, so the
    /// cap keeps measuring growth from a recent rate. Anyone may call it, at most once per
    /// `SHARE_REFRESH_INTERVAL`; a keeper should, daily. Reverts `AssetNotConfigured`, `ShareRefreshTooSoon`, or
    /// `FeedCallFailed(share, share)` when the rate cannot be read or is zero.
    /// @dev Why the cap needs this: measured from an old snapshot, the cap has drifted above the real rate by the
    /// allowed growth the share did not use, and a one-block donation up to that headroom was priced at once (15 %
    /// a year after a snapshot of a share that does not grow). Refreshed daily, the headroom is one day's allowed
    /// growth above the real rate. The refresh cannot carry a donation in: the new snapshot is at most the cap, so
    /// repeated refreshes let a donated rate in no faster than `maxYearlyGrowth` (compounded daily). If nobody
    /// refreshes, the cap stops growing `SHARE_CAP_MAX_AGE` after the last snapshot: the share is then priced at most
    /// 30 days of allowed growth above it (below its real rate once it has really grown more), which fails safe
    /// for the protocol and gives every holder a reason to call it.
    /// @param share An ERC-4626 share set with `setShareAsset`.
    /// @return snapshot The new snapshot rate, underlying units per whole share.
    function refreshShareRate(address share) external returns (uint256 snapshot);

    /// @notice Sets the L2 sequencer-uptime feed; address(0) disables the gate. Admin only.
    function setSequencerFeed(address feed, uint32 gracePeriod) external;
}
