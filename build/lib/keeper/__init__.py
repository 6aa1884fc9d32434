"""collateral-keeper: the off-chain half. Reads the same oracles as the contracts, mirrors their risk math and
keeps collateral ratios enforced."""

__version__ = "0.1.0"
