// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {ILens} from "./interfaces/ILens.sol";
import {IMarginEngine} from "./interfaces/IMarginEngine.sol";
import {IOracleRouter} from "./interfaces/IOracleRouter.sol";
import {IScenarioGrid} from "./interfaces/IScenarioGrid.sol";
import {IVault} from "./interfaces/IVault.sol";
import {RiskMath} from "./libraries/RiskMath.sol";

/// @title Lens
/// @notice Read-only batch views over a MarginEngine; documented on ILens.
contract Lens is ILens {
    using RiskMath for uint256;

    IMarginEngine public immutable engine;

    error LengthMismatch();

    constructor(IMarginEngine engine_) {
        engine = engine_;
    }

    /// @inheritdoc ILens
    function accounts(address[] calldata owners, uint8[] calldata subIds)
        external
        view
        returns (AccountData[] memory out)
    {
        if (owners.length != subIds.length) revert LengthMismatch();
        uint256 index = IVault(engine.vault()).borrowIndex();
        out = new AccountData[](owners.length);
        for (uint256 i; i < owners.length; ++i) {
            IMarginEngine.Position memory p = engine.position(owners[i], subIds[i]);
            out[i] = AccountData({
                owner: owners[i],
                subId: subIds[i],
                scaledDebt: p.scaledDebt,
                debt: uint256(p.scaledDebt).toAssetsUp(index),
                assetMask: p.assetMask,
                balances: engine.balancesOf(owners[i], subIds[i])
            });
        }
    }

    /// @inheritdoc ILens
    function market() external view returns (MarketData memory m) {
        IOracleRouter router = IOracleRouter(engine.oracle());
        m.blockNumber = block.number;
        m.timestamp = block.timestamp;
        m.borrowIndex = IVault(engine.vault()).borrowIndex();
        m.debtAsset = engine.debtAsset();
        m.debtDecimals = engine.debtDecimals();
        m.debtPrice = _price(router, m.debtAsset);
        m.assets = engine.assetList();
        m.configs = new IMarginEngine.AssetConfig[](m.assets.length);
        m.prices = new PriceData[](m.assets.length);
        for (uint256 i; i < m.assets.length; ++i) {
            m.configs[i] = engine.assetConfig(m.assets[i]);
            m.prices[i] = _price(router, m.assets[i]);
        }
        m.params = engine.riskParams();
    }

    /// @inheritdoc ILens
    function grid() external view returns (GridData memory g) {
        IScenarioGrid scenarios = IScenarioGrid(address(engine));
        address debt = engine.debtAsset();
        IMarginEngine.GridView memory v = scenarios.grid(debt);
        g.count = v.count;
        if (g.count == 0) return g;
        (g.initialScale, g.rampStart, g.rampEnd) = (v.config.initialScale, v.config.rampStart, v.config.rampEnd);
        address[] memory assets = engine.assetList();
        address[] memory debts = engine.debtAssets();
        g.columns = new uint256[4][](assets.length + debts.length);
        for (uint256 i; i < assets.length; ++i) {
            g.columns[i] = scenarios.grid(assets[i]).effective;
        }
        g.columns[assets.length] = v.effective;
        for (uint256 j = 1; j < debts.length; ++j) {
            g.columns[assets.length + j] = scenarios.grid(debts[j]).effective;
        }
    }

    /// @inheritdoc ILens
    function debts() external view returns (DebtData[] memory out) {
        IOracleRouter router = IOracleRouter(engine.oracle());
        address[] memory assets = engine.debtAssets();
        out = new DebtData[](assets.length);
        for (uint256 j; j < assets.length; ++j) {
            IMarginEngine.DebtConfig memory c = engine.debtConfig(assets[j]);
            out[j] = DebtData({
                config: c,
                borrowIndex: IVault(c.vault).borrowIndex(),
                price: _price(router, assets[j])
            });
        }
    }

    /// @inheritdoc ILens
    function accountDebts(address[] calldata owners, uint8[] calldata subIds)
        external
        view
        returns (uint256[][] memory out)
    {
        if (owners.length != subIds.length) revert LengthMismatch();
        address[] memory assets = engine.debtAssets();
        out = new uint256[][](owners.length);
        for (uint256 i; i < owners.length; ++i) {
            IMarginEngine.Position memory p = engine.position(owners[i], subIds[i]);
            out[i] = new uint256[](assets.length);
            out[i][0] = p.scaledDebt;
            uint256 mask = p.debtMask;
            for (uint256 j = 1; mask >> j != 0; ++j) {
                if ((mask >> j) & 1 == 1) out[i][j] = engine.scaledDebtOf(owners[i], subIds[i], assets[j]);
            }
        }
    }

    /// @inheritdoc ILens
    function healths(address[] calldata owners, uint8[] calldata subIds)
        external
        view
        returns (HealthData[] memory out)
    {
        if (owners.length != subIds.length) revert LengthMismatch();
        out = new HealthData[](owners.length);
        for (uint256 i; i < owners.length; ++i) {
            try engine.accountHealth(owners[i], subIds[i]) returns (IMarginEngine.AccountHealth memory h) {
                out[i] = HealthData(true, h);
            } catch {
                out[i].ok = false;
            }
        }
    }

    /// @inheritdoc ILens
    function liquidationHealths(address[] calldata owners, uint8[] calldata subIds)
        external
        view
        returns (HealthData[] memory out)
    {
        if (owners.length != subIds.length) revert LengthMismatch();
        out = new HealthData[](owners.length);
        for (uint256 i; i < owners.length; ++i) {
            try engine.liquidationHealth(owners[i], subIds[i]) returns (IMarginEngine.AccountHealth memory h) {
                out[i] = HealthData(true, h);
            } catch {
                out[i].ok = false;
            }
        }
    }

    function _price(IOracleRouter router, address asset) internal view returns (PriceData memory p) {
        p.asset = asset;
        try router.price(asset) returns (uint256 value) {
            (p.ok, p.price) = (true, value);
        } catch (bytes memory reason) {
            p.error = reason;
        }
    }
}
