"""The fixed-point units the contracts use, defined once. Values that cross a seam between layers carry their unit
in their type (`Wad`, `Ray`, `Wei`); arithmetic on them is plain `int`, as in the Solidity they mirror.

- `Wad`: 18-decimal fixed point: healths, USD prices and values, ltv / lt / discounts, the share of a close factor.
- `Ray`: 27-decimal fixed point: the vault's borrow index.
- `Wei`: the smallest unit of a token or of the native coin (token amounts, gas prices in wei per gas).
"""

from __future__ import annotations

from typing import Final, NewType

Wad = NewType("Wad", int)
Ray = NewType("Ray", int)
Wei = NewType("Wei", int)

WAD: Final = 10**18
RAY: Final = 10**27
GWEI: Final = 10**9  # wei per gwei
YEAR: Final = 365 * 24 * 60 * 60  # seconds, as RiskMath.YEAR
