"""Drill scenario files: a crash written as TOML (format in docs/drills.md), loaded and checked before a drill starts.

`load_scenario("black-thursday")` reads the library file `keeper/drills/scenarios/black-thursday.toml` (package data);
`load_scenario("my/crash.toml")` reads any file. Every problem in a file is reported at once, each with the file, the
line and what is wrong, in one `ScenarioError`, so nothing is deployed or seeded for a scenario that cannot run.

`tomllib` gives values without positions, so `_LineMap` scans the text for table headers (`[accounts]`, each
`[[step]]`, ...) and `key =` lines and remembers where each one is. Its limits: a key inside an inline table or an
inline array (`accounts = {count = 5}`, `step = [{at = 0}]`) is reported at the line of the key that holds it, and a
table made only by dotted keys (`accounts.count = 5`) at the line of that key; problems with a value that spans lines
point at the line where the value starts.
"""

from __future__ import annotations

import difflib
import json
import math
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from types import MappingProxyType
from typing import Literal, cast, get_args

from keeper.core.errors import KeeperError

FaultKind = Literal["stale", "zero", "negative", "sequencer_down", "base_fee", "rpc_outage"]
FAULT_KINDS: tuple[str, ...] = get_args(FaultKind)
FEED_FAULTS = frozenset({"stale", "zero", "negative"})  # the kinds that act on one asset's price feed
FAULT_FIELDS: Mapping[str, tuple[str, ...]] = {  # besides `at` and `kind`
    "stale": ("asset", "duration"),
    "zero": ("asset", "duration"),
    "negative": ("asset", "duration"),
    "sequencer_down": ("duration",),
    "base_fee": ("gwei", "duration"),
    "rpc_outage": ("duration",),
}
TOP_KEYS = ("name", "description", "seed", "block_time_s", "accounts", "asset", "step", "fault", "margin")
MARGIN_KEYS = ("initial_scale", "scenario")
MAX_GRID_SCENARIOS = 32
GRID_MOVE_RANGE = (0.0001, 100.0)  # the engine's bounds on a multiplier
ACCOUNTS_KEYS = ("count", "health", "assets", "protected", "book")
BOOK_KEYS = ("name", "weight", "long", "short")
ASSET_KEYS = ("symbol", "price", "quote", "borrow")
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")  # the name becomes a folder name: drills/<name>-<time>/
LIBRARY_PACKAGE = "keeper.drills"
LIBRARY_FOLDER = "scenarios"


@dataclass(frozen=True)
class Book:
    """A kind of position (`[[accounts.book]]`): collateral `long` and debts `short`, each a share of the book's
    value by asset symbol; `weight` is its share of the seeded accounts."""

    name: str
    weight: float
    long: Mapping[str, float]
    short: Mapping[str, float]


@dataclass(frozen=True)
class Accounts:
    """The borrowers a drill seeds: `count` sub-accounts, initial health drawn uniformly from `health`. Either
    collateral drawn from `assets` (one or more per account) against the quote asset, or, with `books`, each account
    one of the books (drawn by weight) with its legs. `protected` (0..1) is the fraction of owners that opt in to
    protection (rebalancer and pre-liquidation band)."""

    count: int
    health: tuple[float, float]
    assets: tuple[str, ...]
    protected: float = 0.0
    books: tuple[Book, ...] = ()


@dataclass(frozen=True)
class Asset:
    """An asset's initial USD price; the one with `quote` is the debt asset, and those with `borrow` are further
    debt assets (`listDebt`: collateral that may also be borrowed, each from a Vault of its own)."""

    symbol: str
    price: float
    quote: bool = False
    borrow: bool = False


@dataclass(frozen=True)
class Step:
    """At `at` seconds after the start, the market prices of the assets in `prices` (USD per whole token)."""

    at: int
    prices: Mapping[str, float]


@dataclass(frozen=True)
class Fault:
    """Something going wrong from `at` for `duration` seconds. `asset` is set for stale/zero/negative, `gwei` for
    base_fee; the other field is None."""

    at: int
    kind: FaultKind
    duration: int
    asset: str | None = None
    gwei: float | None = None

    @property
    def end(self) -> int:
        """The first second after the fault."""
        return self.at + self.duration


@dataclass(frozen=True)
class Margin:
    """A scenario grid the drill sets on the engine before seeding (`[margin]`, docs/portfolio-margin.md): each
    scenario maps asset symbols to price multipliers (an asset a scenario does not name: 1.0); `initial_scale` is
    the initial margin's scale. `keeper drill --additive` ignores it, for the side-by-side run."""

    scenarios: tuple[Mapping[str, float], ...]
    initial_scale: float = 1.0


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    seed: int
    block_time_s: int
    accounts: Accounts
    assets: tuple[Asset, ...]
    steps: tuple[Step, ...]  # strictly increasing `at`
    faults: tuple[Fault, ...]  # in file order
    source: str = ""  # the file it was read from, for messages
    margin: Margin | None = None  # None: the additive rule

    @property
    def quote(self) -> Asset:
        """The debt asset (exactly one asset has `quote = true`)."""
        return next(a for a in self.assets if a.quote)

    def asset(self, symbol: str) -> Asset:
        for a in self.assets:
            if a.symbol == symbol:
                return a
        raise ValueError(f"{symbol!r} is not an asset of scenario {self.name!r}")

    def price_path(self, symbol: str) -> list[tuple[int, float]]:
        """The market price of `symbol` as (seconds after start, USD price) points: the initial price at 0, then each
        step that sets it. Faults are not applied: this is the market, not what the feed reports."""
        path = [(0, self.asset(symbol).price)]
        for step in self.steps:
            if symbol in step.prices:
                point = (step.at, step.prices[symbol])
                if step.at == 0:
                    path[0] = point
                else:
                    path.append(point)
        return path

    @property
    def duration_s(self) -> int:
        """Seconds from the start to the last step or the end of the last fault, whichever is later."""
        ends = [s.at for s in self.steps] + [f.end for f in self.faults]
        return max(ends, default=0)


@dataclass(frozen=True)
class Problem:
    line: int | None  # 1-based; None when the problem is not inside the file (e.g. it does not exist)
    message: str


class ScenarioError(KeeperError):
    """A scenario that cannot be used: the file is missing or unreadable, is not TOML, or breaks a rule. Every problem
    found is listed, one per line, as `<file>:<line>: <what is wrong>`."""

    def __init__(self, source: str, problems: Sequence[Problem]) -> None:
        self.source = source
        self.problems = tuple(sorted(problems, key=lambda p: p.line or 0))
        lines = [f"{source}:{p.line}: {p.message}" if p.line else f"{source}: {p.message}" for p in self.problems]
        if len(lines) == 1:
            text = lines[0]
        else:
            text = f"{source}: {len(lines)} problems in this scenario; fix them and run again\n  " + "\n  ".join(lines)
        super().__init__(text)


# --- where things are in the text


class _ValueScanner:
    """Follows a TOML value across lines: open brackets/braces and multi-line strings."""

    def __init__(self) -> None:
        self.depth = 0
        self.quote: str | None = None

    @property
    def done(self) -> bool:
        return self.depth == 0 and self.quote is None

    def feed(self, text: str) -> None:
        i = 0
        while i < len(text):
            if self.quote is not None:
                if self.quote[0] == '"' and text[i] == "\\":
                    i += 2
                elif text.startswith(self.quote, i):
                    i += len(self.quote)
                    self.quote = None
                else:
                    i += 1
                continue
            char = text[i]
            if char == "#":
                break
            if text.startswith('"""', i) or text.startswith("'''", i):
                self.quote = text[i : i + 3]
                i += 3
                continue
            if char in "\"'":
                self.quote = char
            elif char in "[{":
                self.depth += 1
            elif char in "]}":
                self.depth -= 1
            i += 1
        if self.quote in ('"', "'"):  # a one-line string ends with its line (tomllib has checked it was closed)
            self.quote = None


_KEY = r"""(?:[A-Za-z0-9_-]+|"(?:[^"\\]|\\.)*"|'[^']*')"""
_DOTTED = rf"{_KEY}(?:\s*\.\s*{_KEY})*"
_HEADER = re.compile(rf"\s*(\[\[|\[)\s*({_DOTTED})\s*\]")
_KEY_VALUE = re.compile(rf"\s*({_DOTTED})\s*=")
_KEY_PART = re.compile(_KEY)

_KeyPath = tuple[str | int, ...]  # ("step", 2, "at"): the third [[step]]'s `at`


def _key_parts(dotted: str) -> tuple[str, ...]:
    parts: list[str] = []
    for match in _KEY_PART.finditer(dotted):
        raw = match.group(0)
        if raw.startswith('"'):
            try:
                parts.append(str(json.loads(raw)))
            except json.JSONDecodeError:
                parts.append(raw[1:-1])
        elif raw.startswith("'"):
            parts.append(raw[1:-1])
        else:
            parts.append(raw)
    return tuple(parts)


class _LineMap:
    """Line numbers of table headers and `key =` lines, by their path in the parsed document."""

    def __init__(self, text: str) -> None:
        self._lines: dict[_KeyPath, int] = {}
        self._last_line = max(1, text.count("\n") + (0 if text.endswith("\n") else 1))
        counts: dict[_KeyPath, int] = {}  # array-of-tables path -> how many seen so far
        table: _KeyPath = ()
        value: _ValueScanner | None = None
        for number, line in enumerate(text.split("\n"), start=1):
            if value is not None:
                value.feed(line)
                if value.done:
                    value = None
                continue
            header = _HEADER.match(line)
            if header:
                path = self._resolve(_key_parts(header.group(2)), counts)
                if header.group(1) == "[[":
                    index = counts.get(path, 0)
                    counts[path] = index + 1
                    path = (*path, index)
                table = path
                self._remember(table, number)
                continue
            key = _KEY_VALUE.match(line)
            if key:
                self._remember((*table, *_key_parts(key.group(1))), number)
                value = _ValueScanner()
                value.feed(line[key.end() :])
                if value.done:
                    value = None

    @staticmethod
    def _resolve(parts: tuple[str, ...], counts: Mapping[_KeyPath, int]) -> _KeyPath:
        """`[[a.b]]` / `[a.b]` name a table under the latest `[[a]]` when `a` is an array of tables."""
        path: _KeyPath = ()
        for i, part in enumerate(parts):
            path = (*path, part)
            if i < len(parts) - 1 and path in counts:
                path = (*path, counts[path] - 1)
        return path

    def _remember(self, path: _KeyPath, number: int) -> None:
        for n in range(1, len(path) + 1):
            self._lines.setdefault(path[:n], number)

    def of(self, *path: str | int) -> int:
        """The line of `path`, else of the nearest enclosing table or key that was found, else line 1."""
        for n in range(len(path), 0, -1):
            found = self._lines.get(path[:n])
            if found is not None:
                return found
        return 1

    @property
    def last(self) -> int:
        return self._last_line


# --- checking


def _toml_type(value: object) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a float"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    return "a date/time"


def _show(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value)) if abs(value) < 1e15 else repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_show(v) for v in value) + "]"
    return str(value)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


_MISSING = object()


class _Checker:
    def __init__(self, lines: _LineMap) -> None:
        self.lines = lines
        self.problems: list[Problem] = []
        self.symbols: dict[str, bool] = {}  # every [[asset]] symbol that is itself valid -> whether it is the quote
        self.borrowable: set[str] = set()  # the [[asset]]s with `borrow = true`

    def fail(self, line: int, message: str) -> None:
        self.problems.append(Problem(line, message))

    def unknown_keys(self, table: Mapping[str, object], allowed: Sequence[str], path: _KeyPath, where: str) -> None:
        for key in table:
            if key in allowed:
                continue
            close = difflib.get_close_matches(key, allowed, n=1)
            hint = f"did you mean `{close[0]}`?" if close else "allowed: " + ", ".join(allowed)
            self.fail(self.lines.of(*path, key), f"{where}: unknown key `{key}`; {hint}")

    def get(self, table: Mapping[str, object], key: str, path: _KeyPath, where: str, required: bool = True) -> object:
        if key in table:
            return table[key]
        if required:
            self.fail(self.lines.of(*path), f"{where}: missing required key `{key}`")
        return _MISSING

    def wrong(self, path: _KeyPath, key: str, where: str, expected: str, value: object) -> None:
        self.fail(self.lines.of(*path, key), f"{where}: `{key}` must be {expected}, not {_toml_type(value)}")

    def integer(self, table: Mapping[str, object], key: str, path: _KeyPath, where: str, minimum: int) -> int | None:
        value = self.get(table, key, path, where)
        if value is _MISSING:
            return None
        if not _is_int(value):
            self.wrong(path, key, where, "an integer", value)
            return None
        number = cast(int, value)
        if number < minimum:
            self.fail(self.lines.of(*path, key), f"{where}: `{key}` = {number} must be >= {minimum}")
            return None
        return number

    def symbol_key(self, key: str, symbols: Mapping[str, bool], path: _KeyPath, where: str, holds: str) -> bool:
        """Whether `key` is an [[asset]] symbol; a problem naming the known ones when it is not."""
        if key in symbols:
            return True
        self.fail(
            self.lines.of(*path, key), f"{where}: unknown key `{key}`: {holds} [[asset]] symbols ({_known(symbols)})"
        )
        return False

    def positive(self, value: object, path: _KeyPath, key: str, where: str, what: str) -> float | None:
        """A finite number > 0."""
        if not _is_number(value):
            self.wrong(path, key, where, f"a number ({what})", value)
            return None
        number = float(cast(float, value))
        if not math.isfinite(number) or number <= 0:
            self.fail(self.lines.of(*path, key), f"{where}: `{key}` = {_show(value)} must be > 0 ({what})")
            return None
        return number

    def string(self, table: Mapping[str, object], key: str, path: _KeyPath, where: str) -> str | None:
        value = self.get(table, key, path, where)
        if value is _MISSING:
            return None
        if not isinstance(value, str):
            self.wrong(path, key, where, "a string", value)
            return None
        return value

    def tables(self, data: Mapping[str, object], key: str, required: bool) -> list[Mapping[str, object]]:
        """The tables of an array of tables (`[[key]]`); problems for anything else."""
        value = data.get(key, _MISSING)
        if value is _MISSING:
            if required:
                self.fail(self.lines.last, f"no [[{key}]] table; a scenario needs at least one")
            return []
        if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
            self.wrong((), key, "top level", f"an array of tables, written [[{key}]]", value)
            return []
        if required and not value:
            self.fail(self.lines.of(key), f"`{key}` is empty; a scenario needs at least one [[{key}]]")
        return cast(list[Mapping[str, object]], value)

    # --- sections

    def scenario(self, data: Mapping[str, object], source: str) -> Scenario | None:
        self.unknown_keys(data, TOP_KEYS, (), "top level")
        name = self.string(data, "name", (), "top level")
        if name is not None and not NAME_PATTERN.fullmatch(name):
            self.fail(
                self.lines.of("name"),
                f"top level: `name` = {_show(name)} must be letters, digits, '.', '_' or '-' (it names the report "
                "folder), starting with a letter or digit",
            )
        description = self.string(data, "description", (), "top level")
        seed = self.integer(data, "seed", (), "top level", minimum=0)
        block_time_s = self.integer(data, "block_time_s", (), "top level", minimum=1)
        assets = self.assets(data)
        accounts = self.accounts(data, self.symbols)
        steps = self.steps(data, self.symbols)
        faults = self.faults(data, self.symbols)
        margin = self.margin(data, self.symbols)
        if (
            self.problems
            or name is None
            or description is None
            or seed is None
            or block_time_s is None
            or accounts is None
        ):
            return None
        return Scenario(
            name=name,
            description=description,
            seed=seed,
            block_time_s=block_time_s,
            accounts=accounts,
            assets=tuple(assets),
            steps=tuple(steps),
            faults=tuple(faults),
            source=source,
            margin=margin,
        )

    def margin(self, data: Mapping[str, object], symbols: Mapping[str, bool]) -> Margin | None:
        if "margin" not in data:
            return None
        raw = data["margin"]
        path: _KeyPath = ("margin",)
        where = "[margin]"
        if not isinstance(raw, dict):
            self.wrong((), "margin", "top level", "a table, written [margin]", raw)
            return None
        self.unknown_keys(raw, MARGIN_KEYS, path, where)
        ok = True
        scale = 1.0
        if "initial_scale" in raw:
            value = self.positive(raw["initial_scale"], path, "initial_scale", where, "the initial margin's scale")
            if value is None:
                ok = False
            elif value > 1:
                self.fail(self.lines.of(*path, "initial_scale"), f"{where}: `initial_scale` = {value:g} must be <= 1")
                ok = False
            else:
                scale = value
        tables = raw.get("scenario")
        if not isinstance(tables, list) or not tables or not all(isinstance(t, dict) for t in tables):
            self.fail(
                self.lines.of(*path),
                f"{where}: needs 1 to {MAX_GRID_SCENARIOS} scenarios, each a table of SYMBOL = multiplier written "
                "[[margin.scenario]]",
            )
            return None
        if len(tables) > MAX_GRID_SCENARIOS:
            self.fail(self.lines.of(*path), f"{where}: {len(tables)} scenarios; the engine takes at most 32")
            ok = False
        lo, hi = GRID_MOVE_RANGE
        scenarios = []
        for i, table in enumerate(cast(list[Mapping[str, object]], tables)):
            spath: _KeyPath = ("margin", "scenario", i)
            swhere = f"[[margin.scenario]] #{i + 1}"
            moves: dict[str, float] = {}
            for key, given in table.items():
                if not self.symbol_key(key, symbols, spath, swhere, "a scenario holds"):
                    ok = False
                    continue
                m = self.positive(given, spath, key, swhere, "price multiplier")
                if m is None or not lo <= m <= hi:
                    if m is not None:
                        self.fail(self.lines.of(*spath, key), f"{swhere}: `{key}` = {m:g} is outside [{lo:g}, {hi:g}]")
                    ok = False
                    continue
                moves[key] = m
            scenarios.append(MappingProxyType(moves))
        return Margin(tuple(scenarios), scale) if ok else None

    def assets(self, data: Mapping[str, object]) -> list[Asset]:
        found: list[Asset] = []
        first_quote: tuple[str, int] | None = None
        quote_unreadable = False  # a mistyped `quote` may be the missing one: do not also report "no quote"
        seen: dict[str, int] = {}
        tables = self.tables(data, "asset", required=True)
        for i, table in enumerate(tables):
            path: _KeyPath = ("asset", i)
            where = f"[[asset]] #{i + 1}"
            self.unknown_keys(table, ASSET_KEYS, path, where)
            symbol = self.string(table, "symbol", path, where)
            if symbol is not None and (symbol == "at" or not symbol):
                self.fail(
                    self.lines.of(*path, "symbol"),
                    f"{where}: `symbol` = {_show(symbol)} cannot be a symbol (steps use `at` for time)",
                )
                symbol = None
            if symbol is not None and symbol in seen:
                self.fail(
                    self.lines.of(*path, "symbol"),
                    f"{where}: `symbol` = {_show(symbol)} is already [[asset]] #{seen[symbol] + 1} "
                    f"(line {self.lines.of('asset', seen[symbol])})",
                )
                symbol = None
            price_value = self.get(table, "price", path, where)
            price = None if price_value is _MISSING else self.positive(price_value, path, "price", where, "USD price")
            quote_value = table.get("quote", False)
            if not isinstance(quote_value, bool):
                self.wrong(path, "quote", where, "true or false", quote_value)
                quote_value = False
                quote_unreadable = True
            if quote_value and symbol is not None:
                if first_quote is not None:
                    self.fail(
                        self.lines.of(*path, "quote"),
                        f"{where}: a second quote asset ({first_quote[0]} at line {first_quote[1]} already has "
                        "`quote = true`); exactly one asset is the debt asset",
                    )
                else:
                    first_quote = (symbol, self.lines.of(*path, "quote"))
            borrow_value = table.get("borrow", False)
            if not isinstance(borrow_value, bool):
                self.wrong(path, "borrow", where, "true or false", borrow_value)
                borrow_value = False
            if borrow_value and quote_value:
                self.fail(
                    self.lines.of(*path, "borrow"),
                    f"{where}: the quote asset is borrowed already; `borrow = true` makes a collateral a further "
                    "debt asset",
                )
                borrow_value = False
            if symbol is not None:
                seen[symbol] = i
                self.symbols[symbol] = quote_value
                if borrow_value:
                    self.borrowable.add(symbol)
                if price is not None:
                    found.append(Asset(symbol=symbol, price=price, quote=quote_value, borrow=borrow_value))
        if tables and first_quote is None and not quote_unreadable:
            self.fail(
                self.lines.of("asset", 0),
                "no [[asset]] has `quote = true`; exactly one asset must be the debt asset",
            )
        return found

    def accounts(self, data: Mapping[str, object], symbols: Mapping[str, bool]) -> Accounts | None:
        where, path = "[accounts]", ("accounts",)
        table = data.get("accounts", _MISSING)
        if table is _MISSING:
            self.fail(self.lines.of(), "missing required table [accounts]")
            return None
        if not isinstance(table, dict):
            self.wrong((), "accounts", "top level", "a table, written [accounts]", table)
            return None
        self.unknown_keys(table, ACCOUNTS_KEYS, path, where)
        count = self.integer(table, "count", path, where, minimum=1)
        health = self.health(table, path, where)
        books = self.books(table, symbols)
        assets: tuple[str, ...] | None = None
        if "book" in table and "assets" not in table:
            # with books, `assets` is optional: the collateral the books hold
            if books:
                assets = tuple(dict.fromkeys(s for b in books for s in b.long))
        else:
            assets = self.collateral(table, path, where, symbols)
        protected = 0.0
        value = table.get("protected", 0)
        if not _is_number(value):
            self.wrong(path, "protected", where, "a number (a fraction of the accounts)", value)
        elif not 0 <= cast(float, value) <= 1:
            self.fail(self.lines.of(*path, "protected"), f"{where}: `protected` = {_show(value)} must be in 0..1")
        else:
            protected = float(cast(float, value))
        if count is None or health is None or assets is None or books is None:
            return None
        return Accounts(count=count, health=health, assets=assets, protected=protected, books=tuple(books))

    def books(self, table: Mapping[str, object], symbols: Mapping[str, bool]) -> list[Book] | None:
        """`[[accounts.book]]`: each a name, a weight and its `long` (collateral) and `short` (debt) legs as shares
        of value by symbol; a short leg is the quote asset or an asset with `borrow = true`."""
        value = table.get("book", _MISSING)
        if value is _MISSING:
            return []
        if not isinstance(value, list) or not all(isinstance(t, dict) for t in value):
            self.wrong(("accounts",), "book", "[accounts]", "tables, written [[accounts.book]]", value)
            return None
        found: list[Book] = []
        ok = True
        for i, book in enumerate(cast(list[dict[str, object]], value)):
            path: _KeyPath = ("accounts", "book", i)
            where = f"[[accounts.book]] #{i + 1}"
            self.unknown_keys(book, BOOK_KEYS, path, where)
            name = self.string(book, "name", path, where)
            weight_value = self.get(book, "weight", path, where)
            weight = None if weight_value is _MISSING else self.positive(weight_value, path, "weight", where, "share")
            long = self.legs(book, "long", path, where, symbols, short=False)
            short = self.legs(book, "short", path, where, symbols, short=True)
            if name is None or weight is None or long is None or short is None:
                ok = False
                continue
            found.append(Book(name, weight, MappingProxyType(long), MappingProxyType(short)))
        return found if ok else None

    def legs(
        self, book: Mapping[str, object], key: str, path: _KeyPath, where: str, symbols: Mapping[str, bool], short: bool
    ) -> dict[str, float] | None:
        value = self.get(book, key, path, where)
        if value is _MISSING:
            return None
        if not isinstance(value, dict) or not value:
            self.wrong(path, key, where, "a non-empty table of asset symbol = share", value)
            return None
        legs: dict[str, float] = {}
        ok = True
        for symbol, share in value.items():
            leg_path = (*path, key)
            if not self.symbol_key(symbol, symbols, leg_path, f"{where} {key}", f"`{key}` holds"):
                ok = False
                continue
            if short and not (symbols[symbol] or symbol in self.borrowable):
                self.fail(
                    self.lines.of(*leg_path, symbol),
                    f"{where}: `short` names {symbol}, which is neither the quote asset nor an [[asset]] with "
                    "`borrow = true`",
                )
                ok = False
                continue
            if not short and symbols[symbol]:
                self.fail(
                    self.lines.of(*leg_path, symbol),
                    f"{where}: `long` names {symbol}, the quote (debt) asset; collateral must be another asset",
                )
                ok = False
                continue
            number = self.positive(share, leg_path, symbol, where, "share of the book's value")
            if number is None:
                ok = False
            else:
                legs[symbol] = number
        return legs if ok else None

    def health(self, table: Mapping[str, object], path: _KeyPath, where: str) -> tuple[float, float] | None:
        value = self.get(table, "health", path, where)
        if value is _MISSING:
            return None
        if not isinstance(value, list) or len(value) != 2 or not all(_is_number(v) for v in value):
            self.fail(
                self.lines.of(*path, "health"),
                f"{where}: `health` must be an array of two numbers [lo, hi], not {_show(value)}",
            )
            return None
        lo, hi = float(value[0]), float(value[1])
        if not (0 < lo <= hi and math.isfinite(hi)):
            self.fail(
                self.lines.of(*path, "health"),
                f"{where}: `health` = {_show(value)} must be [lo, hi] with 0 < lo <= hi",
            )
            return None
        return (lo, hi)

    def collateral(
        self, table: Mapping[str, object], path: _KeyPath, where: str, symbols: Mapping[str, bool]
    ) -> tuple[str, ...] | None:
        value = self.get(table, "assets", path, where)
        if value is _MISSING:
            return None
        line = self.lines.of(*path, "assets")
        if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
            self.fail(line, f"{where}: `assets` must be a non-empty array of asset symbols, not {_show(value)}")
            return None
        names = cast(list[str], value)
        ok = True
        for symbol in names:
            if symbol not in symbols:
                self.fail(line, f"{where}: `assets` names {symbol}, which is not an [[asset]] ({_known(symbols)})")
                ok = False
            elif symbols[symbol]:
                self.fail(
                    line, f"{where}: `assets` names {symbol}, the quote (debt) asset; collateral must be another asset"
                )
                ok = False
        duplicates = sorted({s for s in names if names.count(s) > 1})
        if duplicates:
            self.fail(line, f"{where}: `assets` lists {', '.join(duplicates)} more than once")
            ok = False
        return tuple(names) if ok else None

    def steps(self, data: Mapping[str, object], symbols: Mapping[str, bool]) -> list[Step]:
        found: list[Step] = []
        previous: tuple[int, int] | None = None  # (at, line) of the last step with a valid `at`
        for i, table in enumerate(self.tables(data, "step", required=True)):
            path: _KeyPath = ("step", i)
            where = f"[[step]] #{i + 1}"
            at = self.time(table, path, where)
            prices: dict[str, float] = {}
            ok = at is not None
            for key, value in table.items():
                if key == "at":
                    continue
                if not self.symbol_key(key, symbols, path, where, "a step holds `at` and"):
                    ok = False
                    continue
                price = self.positive(value, path, key, where, "USD price")
                if price is None:
                    ok = False
                else:
                    prices[key] = price
            if at is not None:
                line = self.lines.of(*path, "at")
                if previous is not None and at <= previous[0]:
                    self.fail(
                        line,
                        f"{where}: `at` = {at} must be greater than the previous step's `at` = {previous[0]} "
                        f"(line {previous[1]}); steps must be in time order",
                    )
                    ok = False
                previous = (at, line)
            if ok and at is not None:
                found.append(Step(at=at, prices=MappingProxyType(prices)))
        return found

    def time(self, table: Mapping[str, object], path: _KeyPath, where: str) -> int | None:
        value = self.get(table, "at", path, where)
        if value is _MISSING:
            return None
        if not _is_int(value):
            self.wrong(path, "at", where, "an integer (seconds after the start)", value)
            return None
        at = cast(int, value)
        if at < 0:
            self.fail(self.lines.of(*path, "at"), f"{where}: `at` = {at} is before the start; it must be >= 0")
            return None
        return at

    def faults(self, data: Mapping[str, object], symbols: Mapping[str, bool]) -> list[Fault]:
        found: list[tuple[Fault, int, int]] = []  # fault, its number (1-based), its line
        for i, table in enumerate(self.tables(data, "fault", required=False)):
            path: _KeyPath = ("fault", i)
            where = f"[[fault]] #{i + 1}"
            at = self.time(table, path, where)
            kind = self.string(table, "kind", path, where)
            if kind is None:
                self.unknown_keys(table, ("at", "kind", "asset", "duration", "gwei"), path, where)
                continue
            if kind not in FAULT_KINDS:
                close = difflib.get_close_matches(kind, FAULT_KINDS, n=1)
                hint = f"did you mean {_show(close[0])}?" if close else f"one of: {', '.join(FAULT_KINDS)}"
                self.fail(self.lines.of(*path, "kind"), f"{where}: `kind` = {_show(kind)} is not a fault kind; {hint}")
                continue
            fields = FAULT_FIELDS[kind]
            where = f"{where} ({kind})"
            for key in table:
                if key in ("at", "kind") or key in fields:
                    continue
                owners = [k for k, f in FAULT_FIELDS.items() if key in f]
                if owners:
                    self.fail(
                        self.lines.of(*path, key),
                        f"{where}: `{key}` does not apply to kind {_show(kind)} (it belongs to "
                        f"{', '.join(owners)}); {kind} takes {', '.join(fields)}",
                    )
                else:
                    self.unknown_keys({key: None}, ("at", "kind", *fields), path, where)
            asset: str | None = None
            gwei: float | None = None
            ok = at is not None
            if "asset" in fields:
                asset = self.string(table, "asset", path, where)
                if asset is not None and asset not in symbols:
                    self.fail(
                        self.lines.of(*path, "asset"),
                        f"{where}: `asset` = {_show(asset)} is not an [[asset]] ({_known(symbols)})",
                    )
                    asset = None
                ok = ok and asset is not None
            duration = self.integer(table, "duration", path, where, minimum=1)
            ok = ok and duration is not None
            if "gwei" in fields:
                value = self.get(table, "gwei", path, where)
                gwei = None if value is _MISSING else self.positive(value, path, "gwei", where, "base fee in gwei")
                ok = ok and gwei is not None
            if ok and at is not None and duration is not None:
                fault = Fault(at=at, kind=cast(FaultKind, kind), duration=duration, asset=asset, gwei=gwei)
                found.append((fault, i + 1, self.lines.of(*path, "at")))
        self.overlaps(found)
        return [fault for fault, _, _ in found]

    def overlaps(self, faults: Sequence[tuple[Fault, int, int]]) -> None:
        """Two faults on the same thing must not overlap in time: stale/zero/negative on one asset share its feed;
        each other kind is one switch of the drill."""
        for j, (fault, number, line) in enumerate(faults):
            for other, other_number, other_line in faults[:j]:
                same_target = (
                    fault.kind in FEED_FAULTS and other.kind in FEED_FAULTS and fault.asset == other.asset
                ) or (fault.kind not in FEED_FAULTS and fault.kind == other.kind)
                if same_target and fault.at < other.end and other.at < fault.end:
                    target = f"{fault.kind} on {fault.asset}" if fault.asset else fault.kind
                    self.fail(
                        line,
                        f"[[fault]] #{number}: {target} over [{fault.at}, {fault.end}) s overlaps [[fault]] "
                        f"#{other_number} ({other.kind}, line {other_line}) over [{other.at}, {other.end}) s",
                    )
                    break


def _known(symbols: Mapping[str, bool]) -> str:
    return "known: " + ", ".join(symbols) if symbols else "no valid [[asset]] yet"


def _decode_problem(exc: tomllib.TOMLDecodeError, text: str) -> Problem:
    message = str(exc)
    position = re.search(r"\s*\(at line (\d+), column (\d+)\)$", message)
    if position:
        return Problem(
            int(position.group(1)), f"not valid TOML: {message[: position.start()]} (column {position.group(2)})"
        )
    at_end = re.search(r"\s*\(at end of document\)$", message)
    if at_end:
        return Problem(_LineMap(text).last, f"not valid TOML: {message[: at_end.start()]} (at the end of the file)")
    return Problem(None, f"not valid TOML: {message}")


# --- loading


def parse_scenario(text: str, source: str = "<scenario>") -> Scenario:
    """The scenario in `text`; `source` names it in messages. Raises ScenarioError listing every problem."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(source, [_decode_problem(exc, text)]) from None
    checker = _Checker(_LineMap(text))
    scenario = checker.scenario(data, source)
    if scenario is None:
        raise ScenarioError(source, checker.problems)
    return scenario


def load_margin(path: Path, scenario: Scenario) -> Margin:
    """A `[margin]` grid from its own TOML file (`keeper drill --margin PATH`), checked against `scenario`'s assets
    as a scenario's own `[margin]` is. Raises ScenarioError listing every problem."""
    shown = str(path)
    if not path.is_file():
        raise ScenarioError(
            shown, [Problem(None, "no such file; give the path of a TOML file holding a [margin] grid")]
        )
    text = _read(path)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(shown, [_decode_problem(exc, text)]) from None
    checker = _Checker(_LineMap(text))
    checker.unknown_keys(data, ("margin",), (), "top level")
    if "margin" not in data:
        checker.fail(1, "top level: no [margin] table; a grid file holds [margin] and its [[margin.scenario]] tables")
    margin = checker.margin(data, {a.symbol: a.quote for a in scenario.assets})
    if checker.problems or margin is None:
        raise ScenarioError(shown, checker.problems)
    return margin


def _library() -> Traversable:
    return resources.files(LIBRARY_PACKAGE).joinpath(LIBRARY_FOLDER)


def _library_names() -> list[str]:
    return sorted(e.name[: -len(".toml")] for e in _library().iterdir() if e.name.endswith(".toml") and e.is_file())


def _read(path: Path) -> str:
    shown = str(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        names = ", ".join(_library_names())
        raise ScenarioError(
            shown, [Problem(None, f"file not found; give a path to a TOML file or a library scenario ({names})")]
        ) from None
    except IsADirectoryError:
        raise ScenarioError(shown, [Problem(None, "is a directory; give a scenario TOML file")]) from None
    except OSError as exc:
        raise ScenarioError(shown, [Problem(None, f"cannot read the file: {exc.strerror}")]) from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ScenarioError(shown, [Problem(line, "not UTF-8 text; save the file as UTF-8")]) from None


def load_scenario(name_or_path: str) -> Scenario:
    """A library scenario by name (`black-thursday`), or any TOML file by path. A value with a `/` or ending in
    `.toml` is always a path; a bare name is looked up in the library first, then as a file in the current folder."""
    looks_like_path = "/" in name_or_path or "\\" in name_or_path or name_or_path.endswith(".toml")
    if not looks_like_path and NAME_PATTERN.fullmatch(name_or_path):
        entry = _library().joinpath(f"{name_or_path}.toml")
        if entry.is_file():
            return parse_scenario(entry.read_text(encoding="utf-8"), str(entry))
        if not Path(name_or_path).is_file():
            names = ", ".join(_library_names())
            raise ScenarioError(
                name_or_path,
                [Problem(None, f"no library scenario of that name (the library has: {names}); or give a file path")],
            )
    path = Path(name_or_path).expanduser()
    return parse_scenario(_read(path), str(path))


def list_library() -> list[tuple[str, str]]:
    """(name, description) of every library scenario, by name. Each one is loaded and checked."""
    return [(name, load_scenario(name).description) for name in _library_names()]
