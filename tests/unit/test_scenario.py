"""Drill scenario files: the library, every validation rule with its line number, loading by name or path, and the
derived price paths and durations. Pure tests, no chain."""

from __future__ import annotations

import itertools
import tomllib
from pathlib import Path

import pytest

from keeper.core.errors import KeeperError
from keeper.drills.scenario import (
    FAULT_KINDS,
    Fault,
    Problem,
    Scenario,
    ScenarioError,
    list_library,
    load_margin,
    load_scenario,
    parse_scenario,
)

ROOT = Path(__file__).resolve().parents[2]
LOCAL_CONFIG = ROOT / "deployments" / "configs" / "local.toml"
LIBRARY = (
    "black-thursday",
    "may-19-2021",
    "ftx-collapse",
    "october-10-2025",
    "stale-feed-crash",
    "pinned-lower-bound",
    "stablecoin-spike",
    "rpc-outage-crash",
    "slide-then-gap",
    "grinding-bear-gaps",
)

# A valid scenario; the tests below change single lines by number, so these numbers are part of the fixture.
BASE_LINES = [
    'name = "t"',  # 1
    'description = "test"',  # 2
    "seed = 1",  # 3
    "block_time_s = 2",  # 4
    "",  # 5
    "[accounts]",  # 6
    "count = 10",  # 7
    "health = [1.1, 1.5]",  # 8
    'assets = ["WETH", "WBTC"]',  # 9
    "",  # 10 (inside [accounts])
    "[[asset]]",  # 11
    'symbol = "WETH"',  # 12
    "price = 2000.0",  # 13
    "[[asset]]",  # 14
    'symbol = "WBTC"',  # 15
    "price = 60000.0",  # 16
    "[[asset]]",  # 17
    'symbol = "USDC"',  # 18
    "price = 1.0",  # 19
    "quote = true",  # 20
    "",  # 21 (inside [[asset]] #3)
    "[[step]]",  # 22
    "at = 600",  # 23
    "WETH = 1800.0",  # 24
    "[[step]]",  # 25
    "at = 1200",  # 26
    "WETH = 1500.0",  # 27
    "WBTC = 50000.0",  # 28
    "",  # 29 (inside [[step]] #2)
    "[[fault]]",  # 30
    "at = 900",  # 31
    'kind = "stale"',  # 32
    'asset = "WETH"',  # 33
    "duration = 600",  # 34
]


def variant(replace: dict[int, str] | None = None, append: str = "") -> str:
    """BASE with lines replaced by number (1-based) and text appended after line 34."""
    lines = list(BASE_LINES)
    for number, text in (replace or {}).items():
        lines[number - 1] = text
    return "\n".join(lines) + "\n" + append


def write(folder: Path, text: str, name: str = "s.toml") -> Path:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def problems_of(folder: Path, text: str) -> tuple[Problem, ...]:
    path = write(folder, text)
    with pytest.raises(ScenarioError) as info:
        load_scenario(str(path))
    assert info.value.source == str(path)
    return info.value.problems


def expect_one(folder: Path, text: str, line: int, fragment: str) -> str:
    """Exactly one problem, at `line`, whose message contains `fragment`; returns the error's text."""
    path = write(folder, text)
    with pytest.raises(ScenarioError) as info:
        load_scenario(str(path))
    found = [(p.line, p.message) for p in info.value.problems]
    assert len(found) == 1, found
    assert found[0][0] == line, found
    assert fragment in found[0][1], found
    assert str(info.value) == f"{path}:{line}: {found[0][1]}"
    return str(info.value)


# --- the library


def test_library_lists_every_scenario_with_its_description() -> None:
    listed = dict(list_library())
    assert set(LIBRARY) <= set(listed)
    assert list(listed) == sorted(listed)
    for name in LIBRARY:
        assert listed[name] == load_scenario(name).description


@pytest.mark.parametrize("name", LIBRARY)
def test_library_scenario_loads_and_fits_the_local_deployment(name: str) -> None:
    scenario = load_scenario(name)
    config = tomllib.loads(LOCAL_CONFIG.read_text())
    feeds = {a["symbol"]: a for a in config["asset"]} | {config["debt"]["symbol"]: config["debt"]}

    assert scenario.name == name
    assert Path(scenario.source).name == f"{name}.toml"
    assert any(ch.isdigit() for ch in scenario.description)
    assert len(scenario.description) > 200
    assert "approximate" in scenario.description or "Synthetic" in scenario.description
    assert {a.symbol for a in scenario.assets} <= set(feeds)
    assert scenario.quote.symbol == config["debt"]["symbol"]
    assert 2 <= scenario.block_time_s <= 12
    assert 1 <= scenario.accounts.count <= 500
    assert 0 < scenario.duration_s <= 2 * 3600
    # Every feed is refreshed at each step; steps closer than the shortest heartbeat keep prices fresh, so only a
    # stale fault makes a price stale.
    heartbeat = min(f["max_staleness"] for f in feeds.values())
    times = [0] + [s.at for s in scenario.steps]
    assert max(b - a for a, b in itertools.pairwise(times)) < heartbeat
    # Initial prices lie strictly inside the router bounds.
    for asset in scenario.assets:
        assert feeds[asset.symbol]["min_price"] < asset.price < feeds[asset.symbol]["max_price"]
    # Every account starts healthy. (Healths below lt/ltv, past the initial margin, are reached too: the drill
    # borrows at prices raised for the seeding only; docs/drills.md.)
    assert scenario.accounts.health[0] > 1.0


def test_library_faults_and_bounds_match_their_descriptions() -> None:
    config = tomllib.loads(LOCAL_CONFIG.read_text())
    link = next(a for a in config["asset"] if a["symbol"] == "LINK")
    weth = next(a for a in config["asset"] if a["symbol"] == "WETH")

    pinned = load_scenario("pinned-lower-bound")
    link_path = pinned.price_path("LINK")
    assert link_path[-1][1] < link["min_price"]  # ends below the bound
    assert sum(1 for _, p in link_path if p == link["min_price"]) >= 2  # and sits pinned at it before

    stale = load_scenario("stale-feed-crash")
    (fault,) = stale.faults
    last_update = max(s.at for s in stale.steps if s.at <= fault.at)
    assert (fault.kind, fault.asset) == ("stale", "WETH")
    assert fault.end > last_update + weth["max_staleness"]  # the frozen price is refused before the fault ends

    spike = load_scenario("stablecoin-spike")
    top = [t for t, p in spike.price_path("USDC") if p >= 1.28]
    assert top[-1] - top[0] >= 3000
    assert max(p for _, p in spike.price_path("USDC")) == 1.30
    assert max(p for _, p in spike.price_path("USDC")) < config["debt"]["max_price"]

    thursday = load_scenario("black-thursday")
    assert [f.kind for f in thursday.faults] == ["base_fee", "base_fee"]
    assert thursday.price_path("WETH")[-1][1] / thursday.price_path("WETH")[0][1] == pytest.approx(0.57, abs=0.01)

    outage = load_scenario("rpc-outage-crash")
    assert [(f.kind, f.at, f.end) for f in outage.faults] == [("rpc_outage", 720, 1620)]


# --- loading by name or path


def test_library_name_and_path_load_the_same_scenario(tmp_path: Path) -> None:
    by_name = load_scenario("black-thursday")
    copy = write(tmp_path, Path(by_name.source).read_text(encoding="utf-8"), "copy.toml")
    by_path = load_scenario(str(copy))
    assert by_path.source == str(copy)
    assert by_path.steps == by_name.steps
    assert by_path.faults == by_name.faults
    assert by_path.accounts == by_name.accounts


def test_bare_name_outside_the_library_is_a_file_in_the_current_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path, variant(), "mycrash")
    monkeypatch.chdir(tmp_path)
    assert load_scenario("mycrash").name == "t"


def test_unknown_library_name_lists_the_library(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ScenarioError) as info:
        load_scenario("black-friday")
    assert isinstance(info.value, KeeperError)
    assert info.value.exit_code == 2
    text = str(info.value)
    assert text.startswith("black-friday: no library scenario of that name")
    assert all(name in text for name in LIBRARY)


def test_missing_file_directory_and_non_utf8(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match=r"nope\.toml: file not found"):
        load_scenario(str(tmp_path / "nope.toml"))
    with pytest.raises(ScenarioError, match="is a directory"):
        load_scenario(str(tmp_path) + "/")
    bad = tmp_path / "latin1.toml"
    bad.write_bytes(b'name = "t"\ndescription = "caf\xe9"\n')
    with pytest.raises(ScenarioError) as info:
        load_scenario(str(bad))
    assert info.value.problems == (Problem(2, "not UTF-8 text; save the file as UTF-8"),)


# --- the scenario model


def test_valid_file_gives_the_full_model(tmp_path: Path) -> None:
    s = load_scenario(str(write(tmp_path, variant())))
    assert (s.name, s.description, s.seed, s.block_time_s) == ("t", "test", 1, 2)
    assert (s.accounts.count, s.accounts.health, s.accounts.assets, s.accounts.protected) == (
        10,
        (1.1, 1.5),
        ("WETH", "WBTC"),
        0.0,
    )
    assert [(a.symbol, a.price, a.quote) for a in s.assets] == [
        ("WETH", 2000.0, False),
        ("WBTC", 60000.0, False),
        ("USDC", 1.0, True),
    ]
    assert s.quote.symbol == "USDC"
    assert [(st.at, dict(st.prices)) for st in s.steps] == [
        (600, {"WETH": 1800.0}),
        (1200, {"WETH": 1500.0, "WBTC": 50000.0}),
    ]
    assert s.faults == (Fault(at=900, kind="stale", duration=600, asset="WETH"),)
    assert s.faults[0].end == 1500


def test_price_path_per_asset() -> None:
    s = parse_scenario(variant())
    assert s.price_path("WETH") == [(0, 2000.0), (600, 1800.0), (1200, 1500.0)]
    assert s.price_path("WBTC") == [(0, 60000.0), (1200, 50000.0)]
    assert s.price_path("USDC") == [(0, 1.0)]
    with pytest.raises(ValueError, match="'LINK' is not an asset of scenario 't'"):
        s.price_path("LINK")
    # a step at 0 replaces the initial price instead of adding a second point at 0
    at_zero = parse_scenario(variant({23: "at = 0"}))
    assert at_zero.price_path("WETH") == [(0, 1800.0), (1200, 1500.0)]


def test_duration_is_the_last_step_or_fault_end() -> None:
    assert parse_scenario(variant()).duration_s == 1500  # fault 900 + 600 outlasts the last step at 1200
    assert parse_scenario(variant({34: "duration = 100"})).duration_s == 1200
    assert parse_scenario("\n".join(BASE_LINES[:29])).duration_s == 1200  # no faults


def test_protected_fraction_is_accepted_for_later(tmp_path: Path) -> None:
    assert parse_scenario(variant({10: "protected = 0.25"})).accounts.protected == 0.25
    assert parse_scenario(variant({10: "protected = 1"})).accounts.protected == 1.0
    expect_one(tmp_path, variant({10: "protected = 1.5"}), 10, "[accounts]: `protected` = 1.5 must be in 0..1")


def test_every_fault_kind_is_accepted_with_its_fields() -> None:
    faults = {
        "stale": 'asset = "WETH"\nduration = 60',
        "zero": 'asset = "WBTC"\nduration = 60',
        "negative": 'asset = "USDC"\nduration = 60',
        "sequencer_down": "duration = 60",
        "base_fee": "gwei = 500\nduration = 60",
        "rpc_outage": "duration = 60",
    }
    assert set(faults) == set(FAULT_KINDS)
    text = "\n".join(BASE_LINES[:29]) + "".join(
        f'\n[[fault]]\nat = 100\nkind = "{kind}"\n{fields}\n' for kind, fields in faults.items()
    )
    s = parse_scenario(text)
    assert [(f.kind, f.asset, f.gwei) for f in s.faults] == [
        ("stale", "WETH", None),
        ("zero", "WBTC", None),
        ("negative", "USDC", None),
        ("sequencer_down", None, None),
        ("base_fee", None, 500.0),
        ("rpc_outage", None, None),
    ]


# --- unknown keys


def test_unknown_top_level_key(tmp_path: Path) -> None:
    expect_one(tmp_path, variant({5: 'colour = "red"'}), 5, "top level: unknown key `colour`; allowed: name,")


def test_unknown_key_suggests_the_close_one(tmp_path: Path) -> None:
    expect_one(tmp_path, variant({10: "cont = 3"}), 10, "[accounts]: unknown key `cont`; did you mean `count`?")


def test_unknown_key_in_an_asset(tmp_path: Path) -> None:
    expect_one(tmp_path, variant({21: "decimals = 6"}), 21, "[[asset]] #3: unknown key `decimals`")


def test_unknown_symbol_in_a_step(tmp_path: Path) -> None:
    expect_one(
        tmp_path,
        variant({29: "ETH = 1.0"}),
        29,
        "[[step]] #2: unknown key `ETH`: a step holds `at` and [[asset]] symbols (known: WETH, WBTC, USDC)",
    )


def test_unknown_key_in_a_fault(tmp_path: Path) -> None:
    expect_one(tmp_path, variant(append="severity = 3\n"), 35, "[[fault]] #1 (stale): unknown key `severity`")


def test_unknown_table(tmp_path: Path) -> None:
    expect_one(tmp_path, variant(append="\n[extras]\nx = 1\n"), 36, "top level: unknown key `extras`")


# --- missing keys


def test_missing_top_level_key_points_at_line_1(tmp_path: Path) -> None:
    expect_one(tmp_path, variant({3: ""}), 1, "top level: missing required key `seed`")


def test_missing_key_points_at_its_table_header(tmp_path: Path) -> None:
    expect_one(tmp_path, variant({7: ""}), 6, "[accounts]: missing required key `count`")
    expect_one(tmp_path, variant({16: ""}), 14, "[[asset]] #2: missing required key `price`")
    expect_one(tmp_path, variant({26: ""}), 25, "[[step]] #2: missing required key `at`")


def test_missing_accounts_table(tmp_path: Path) -> None:
    expect_one(tmp_path, variant({6: "", 7: "", 8: "", 9: ""}), 1, "missing required table [accounts]")


def test_no_steps(tmp_path: Path) -> None:
    text = "\n".join(BASE_LINES[:21]) + "\n"
    expect_one(tmp_path, text, 21, "no [[step]] table; a scenario needs at least one")


# --- wrong types


@pytest.mark.parametrize(
    ("line", "text", "fragment"),
    [
        (1, "name = 5", "top level: `name` must be a string, not an integer"),
        (3, 'seed = "1"', "top level: `seed` must be an integer, not a string"),
        (4, "block_time_s = true", "top level: `block_time_s` must be an integer, not a boolean"),
        (8, 'health = "wide"', '[accounts]: `health` must be an array of two numbers [lo, hi], not "wide"'),
        (8, "health = [1.1]", "`health` must be an array of two numbers [lo, hi], not [1.1]"),
        (9, 'assets = "WETH"', '[accounts]: `assets` must be a non-empty array of asset symbols, not "WETH"'),
        (9, "assets = []", "`assets` must be a non-empty array of asset symbols, not []"),
        (13, 'price = "2000"', "[[asset]] #1: `price` must be a number (USD price), not a string"),
        (20, 'quote = "yes"', "[[asset]] #3: `quote` must be true or false, not a string"),
        (23, "at = 600.5", "[[step]] #1: `at` must be an integer (seconds after the start), not a float"),
        (24, 'WETH = "cheap"', "[[step]] #1: `WETH` must be a number (USD price), not a string"),
        (32, "kind = 3", "[[fault]] #1: `kind` must be a string, not an integer"),
        (34, "duration = 1.5", "[[fault]] #1 (stale): `duration` must be an integer, not a float"),
    ],
)
def test_wrong_type(tmp_path: Path, line: int, text: str, fragment: str) -> None:
    expect_one(tmp_path, variant({line: text}), line, fragment)


def test_asset_written_as_a_single_table(tmp_path: Path) -> None:
    text = "\n".join([*BASE_LINES[:10], "[asset]", 'symbol = "USDC"', "price = 1.0", "quote = true"]) + "\n"
    problems = problems_of(tmp_path, text)
    assert Problem(11, "top level: `asset` must be an array of tables, written [[asset]], not a table") in problems


# --- times, order and prices


def test_steps_out_of_order(tmp_path: Path) -> None:
    expect_one(
        tmp_path,
        variant({26: "at = 300"}),
        26,
        "[[step]] #2: `at` = 300 must be greater than the previous step's `at` = 600 (line 23); steps must be in "
        "time order",
    )


def test_steps_at_the_same_time(tmp_path: Path) -> None:
    expect_one(tmp_path, variant({26: "at = 600"}), 26, "`at` = 600 must be greater than the previous step's")


def test_step_at_a_negative_time(tmp_path: Path) -> None:
    expect_one(tmp_path, variant({23: "at = -5"}), 23, "[[step]] #1: `at` = -5 is before the start; it must be >= 0")


def test_fault_at_a_negative_time(tmp_path: Path) -> None:
    expect_one(tmp_path, variant({31: "at = -1"}), 31, "[[fault]] #1: `at` = -1 is before the start")


@pytest.mark.parametrize(
    ("line", "text", "fragment"),
    [
        (24, "WETH = 0.0", "[[step]] #1: `WETH` = 0 must be > 0 (USD price)"),
        (28, "WBTC = -50000", "[[step]] #2: `WBTC` = -50000 must be > 0 (USD price)"),
        (13, "price = -1.5", "[[asset]] #1: `price` = -1.5 must be > 0 (USD price)"),
        (19, "price = nan", "[[asset]] #3: `price` = nan must be > 0 (USD price)"),
    ],
)
def test_price_must_be_positive(tmp_path: Path, line: int, text: str, fragment: str) -> None:
    expect_one(tmp_path, variant({line: text}), line, fragment)


def test_fault_duration_and_gwei_must_be_positive(tmp_path: Path) -> None:
    expect_one(tmp_path, variant({34: "duration = 0"}), 34, "[[fault]] #1 (stale): `duration` = 0 must be >= 1")
    base_fee = variant({32: 'kind = "base_fee"', 33: "gwei = 0"})
    expect_one(tmp_path, base_fee, 33, "[[fault]] #1 (base_fee): `gwei` = 0 must be > 0 (base fee in gwei)")


def test_seed_and_block_time_bounds(tmp_path: Path) -> None:
    expect_one(tmp_path, variant({3: "seed = -1"}), 3, "top level: `seed` = -1 must be >= 0")
    expect_one(tmp_path, variant({4: "block_time_s = 0"}), 4, "top level: `block_time_s` = 0 must be >= 1")


def test_name_must_be_usable_as_a_folder_name(tmp_path: Path) -> None:
    expect_one(tmp_path, variant({1: 'name = "../crash"'}), 1, 'top level: `name` = "../crash" must be letters,')


# --- assets and accounts


def test_collateral_not_in_the_asset_list(tmp_path: Path) -> None:
    expect_one(
        tmp_path,
        variant({9: 'assets = ["WETH", "LINK"]'}),
        9,
        "[accounts]: `assets` names LINK, which is not an [[asset]] (known: WETH, WBTC, USDC)",
    )


def test_fault_asset_not_in_the_asset_list(tmp_path: Path) -> None:
    expect_one(
        tmp_path, variant({33: 'asset = "LINK"'}), 33, '[[fault]] #1 (stale): `asset` = "LINK" is not an [[asset]]'
    )


def test_quote_asset_used_as_collateral(tmp_path: Path) -> None:
    expect_one(
        tmp_path,
        variant({9: 'assets = ["WETH", "USDC"]'}),
        9,
        "[accounts]: `assets` names USDC, the quote (debt) asset; collateral must be another asset",
    )


def test_collateral_listed_twice(tmp_path: Path) -> None:
    expect_one(tmp_path, variant({9: 'assets = ["WETH", "WETH"]'}), 9, "`assets` lists WETH more than once")


@pytest.mark.parametrize("health", ["[1.5, 1.2]", "[0, 1.5]", "[-1.0, 2.0]", "[1.2, inf]"])
def test_health_range(tmp_path: Path, health: str) -> None:
    expect_one(tmp_path, variant({8: f"health = {health}"}), 8, "must be [lo, hi] with 0 < lo <= hi")


def test_health_range_of_one_value_is_allowed() -> None:
    assert parse_scenario(variant({8: "health = [1.3, 1.3]"})).accounts.health == (1.3, 1.3)


def test_count_at_least_one(tmp_path: Path) -> None:
    expect_one(tmp_path, variant({7: "count = 0"}), 7, "[accounts]: `count` = 0 must be >= 1")


def test_no_quote_asset(tmp_path: Path) -> None:
    expect_one(
        tmp_path, variant({20: "quote = false"}), 11, "no [[asset]] has `quote = true`; exactly one asset must be"
    )


def test_two_quote_assets(tmp_path: Path) -> None:
    # asset #1 gains a `quote` line (line 13), which moves asset #3's `quote` from line 20 to 21
    text = variant({9: 'assets = ["WBTC"]', 12: 'symbol = "WETH"\nquote = true'})
    expect_one(
        tmp_path,
        text,
        21,
        "[[asset]] #3: a second quote asset (WETH at line 13 already has `quote = true`); exactly one asset is the "
        "debt asset",
    )


def test_reserved_symbol(tmp_path: Path) -> None:
    problems = problems_of(tmp_path, variant({15: 'symbol = "at"'}))
    assert Problem(15, '[[asset]] #2: `symbol` = "at" cannot be a symbol (steps use `at` for time)') in problems


def test_duplicate_symbol(tmp_path: Path) -> None:
    problems = problems_of(tmp_path, variant({15: 'symbol = "WETH"'}))
    assert Problem(15, '[[asset]] #2: `symbol` = "WETH" is already [[asset]] #1 (line 11)') in problems


# --- faults


def test_unknown_fault_kind(tmp_path: Path) -> None:
    expect_one(
        tmp_path,
        variant({32: 'kind = "meltdown"'}),
        32,
        '[[fault]] #1: `kind` = "meltdown" is not a fault kind; one of: stale, zero, negative, sequencer_down, '
        "base_fee, rpc_outage",
    )
    expect_one(
        tmp_path,
        variant({32: 'kind = "outage"'}),
        32,
        '`kind` = "outage" is not a fault kind; did you mean "rpc_outage"?',
    )


def test_fault_missing_a_field_of_its_kind(tmp_path: Path) -> None:
    expect_one(tmp_path, variant({33: ""}), 30, "[[fault]] #1 (stale): missing required key `asset`")
    expect_one(
        tmp_path, variant({32: 'kind = "base_fee"', 33: ""}), 30, "[[fault]] #1 (base_fee): missing required key `gwei`"
    )


def test_fault_field_of_another_kind(tmp_path: Path) -> None:
    expect_one(
        tmp_path,
        variant({32: 'kind = "sequencer_down"'}),
        33,
        '[[fault]] #1 (sequencer_down): `asset` does not apply to kind "sequencer_down" (it belongs to stale, zero, '
        "negative); sequencer_down takes duration",
    )
    expect_one(
        tmp_path,
        variant(append="gwei = 100\n"),
        35,
        '[[fault]] #1 (stale): `gwei` does not apply to kind "stale" (it belongs to base_fee); stale takes asset, '
        "duration",
    )


def second_fault(at: int, kind: str, fields: str) -> str:
    """A [[fault]] appended after BASE: its header is line 36 and its `at` line 37."""
    return f'\n[[fault]]\nat = {at}\nkind = "{kind}"\n{fields}\n'


def test_overlapping_faults_of_the_same_kind_on_the_same_asset(tmp_path: Path) -> None:
    expect_one(
        tmp_path,
        variant(append=second_fault(1200, "stale", 'asset = "WETH"\nduration = 60')),
        37,
        "[[fault]] #2: stale on WETH over [1200, 1260) s overlaps [[fault]] #1 (stale, line 31) over [900, 1500) s",
    )


def test_feed_faults_of_different_kinds_on_one_asset_overlap_too(tmp_path: Path) -> None:
    expect_one(
        tmp_path,
        variant(append=second_fault(1000, "zero", 'asset = "WETH"\nduration = 60')),
        37,
        "[[fault]] #2: zero on WETH over [1000, 1060) s overlaps [[fault]] #1 (stale, line 31)",
    )


def test_overlapping_switch_faults(tmp_path: Path) -> None:
    text = variant({32: 'kind = "rpc_outage"', 33: ""}, append=second_fault(1400, "rpc_outage", "duration = 10"))
    expect_one(tmp_path, text, 37, "[[fault]] #2: rpc_outage over [1400, 1410) s overlaps [[fault]] #1 (rpc_outage")


def test_faults_that_do_not_overlap() -> None:
    back_to_back = parse_scenario(variant(append=second_fault(1500, "stale", 'asset = "WETH"\nduration = 60')))
    other_asset = parse_scenario(variant(append=second_fault(1000, "stale", 'asset = "WBTC"\nduration = 60')))
    other_kind = parse_scenario(variant(append=second_fault(1000, "base_fee", "gwei = 9\nduration = 60")))
    assert [len(s.faults) for s in (back_to_back, other_asset, other_kind)] == [2, 2, 2]


# --- reporting


def test_every_problem_is_reported_in_line_order(tmp_path: Path) -> None:
    path = write(tmp_path, variant({26: "at = 100", 7: "count = 0", 33: 'asset = "DOGE"', 5: "extra = 1"}))
    with pytest.raises(ScenarioError) as info:
        load_scenario(str(path))
    assert [p.line for p in info.value.problems] == [5, 7, 26, 33]
    lines = str(info.value).split("\n")
    assert lines[0] == f"{path}: 4 problems in this scenario; fix them and run again"
    assert lines[1] == f"  {path}:5: top level: unknown key `extra`; allowed: " + ", ".join(
        ("name", "description", "seed", "block_time_s", "accounts", "asset", "step", "fault", "margin")
    )
    assert lines[3].startswith(f"  {path}:26: [[step]] #2: `at` = 100")


def test_invalid_toml_gives_the_parser_line(tmp_path: Path) -> None:
    expect_one(tmp_path, variant({24: "WETH = "}), 24, "not valid TOML: Invalid value (column 8)")
    expect_one(tmp_path, variant({3: "seed = 1", 4: "seed = 2"}), 4, "not valid TOML: Cannot overwrite a value")


# --- the line scanner


def test_lines_survive_multiline_strings_and_arrays(tmp_path: Path) -> None:
    tricky = variant(
        {
            2: 'description = """\nnot a table:\n[[step]]\nat = -1\n"""',  # lines 2-6: shifts the rest by 4
            9: 'assets = [\n  "WETH",  # [comment with brackets]\n  "LINK",\n]',  # lines 13-16: shifts by 3 more
        }
    )
    # `assets` starts at line 9 + 4 = 13; the second [[step]]'s `at` (line 26) is now at 26 + 7 = 33
    problems = problems_of(tmp_path, tricky.replace("at = 1200", "at = 10"))
    assert [p.line for p in problems] == [13, 33]
    assert "names LINK" in problems[0].message
    assert "previous step's `at` = 600 (line 30)" in problems[1].message


def test_lines_of_quoted_keys_and_inline_tables(tmp_path: Path) -> None:
    quoted = variant({24: '"WETH" = 0.0'})
    expect_one(tmp_path, quoted, 24, "[[step]] #1: `WETH` = 0 must be > 0")
    inline = variant({6: 'accounts = { count = 0, health = [1.1, 1.5], assets = ["WETH"] }', 7: "", 8: "", 9: ""})
    expect_one(tmp_path, inline, 6, "[accounts]: `count` = 0 must be >= 1")
    dotted = variant(
        {6: "", 7: "accounts.count = 0", 8: "accounts.health = [1.1, 1.5]", 9: 'accounts.assets = ["WETH"]'}
    )
    expect_one(tmp_path, dotted, 7, "[accounts]: `count` = 0 must be >= 1")


def test_scenario_error_is_a_keeper_error() -> None:
    error = ScenarioError("x.toml", [Problem(3, "bad")])
    assert isinstance(error, KeeperError)
    assert error.exit_code == 2
    assert str(error) == "x.toml:3: bad"


def test_parse_scenario_names_its_source() -> None:
    with pytest.raises(ScenarioError, match=r"^crash\.toml:7: \[accounts\]: `count` = 0"):
        parse_scenario(variant({7: "count = 0"}), "crash.toml")
    assert isinstance(parse_scenario(variant()), Scenario)


# --- the [margin] grid


MARGIN = (
    "\n[margin]\ninitial_scale = 0.9\n[[margin.scenario]]\nWETH = 0.7\nWBTC = 0.8\n[[margin.scenario]]\nUSDC = 1.2\n"
)


def test_margin_grid_is_read(tmp_path: Path) -> None:
    scenario = load_scenario(str(write(tmp_path, variant(append=MARGIN))))
    assert scenario.margin is not None
    assert scenario.margin.initial_scale == 0.9
    assert [dict(s) for s in scenario.margin.scenarios] == [{"WETH": 0.7, "WBTC": 0.8}, {"USDC": 1.2}]
    assert load_scenario(str(write(tmp_path, variant(), "plain.toml"))).margin is None


@pytest.mark.parametrize(
    ("text", "line", "fragment"),
    [
        ("\n[margin]\n[[margin.scenario]]\nETH = 0.7\n", 38, "unknown key `ETH`: a scenario holds [[asset]] symbols"),
        ("\n[margin]\n[[margin.scenario]]\nWETH = 0.00001\n", 38, "`WETH` = 1e-05 is outside [0.0001, 100]"),
        ("\n[margin]\n[[margin.scenario]]\nWETH = -1\n", 38, "`WETH` = -1 must be > 0"),
        (
            "\n[margin]\ninitial_scale = 1.5\n[[margin.scenario]]\nWETH = 0.7\n",
            37,
            "`initial_scale` = 1.5 must be <= 1",
        ),
        ("\n[margin]\ninitial_scale = 0.9\n", 36, "[margin]: needs 1 to 32 scenarios"),
        (
            "\n[margin]\nscale = 0.9\n[[margin.scenario]]\nWETH = 0.7\n",
            37,
            "unknown key `scale`; allowed: initial_scale",
        ),
    ],
)
def test_margin_grid_problems_name_their_line(tmp_path: Path, text: str, line: int, fragment: str) -> None:
    expect_one(tmp_path, variant(append=text), line, fragment)


def test_margin_grid_of_more_than_32_scenarios(tmp_path: Path) -> None:
    text = "\n[margin]\n" + "[[margin.scenario]]\nWETH = 0.7\n" * 33
    assert any("at most 32" in p.message for p in problems_of(tmp_path, variant(append=text)))


def test_steth_depeg_drills_a_weth_debt_market() -> None:
    """The hedged-book scenario lends WETH (deployments/configs/local-weth.toml) and carries its grid; its prices
    lie inside that config's bounds, and stETH trades at 0.93-0.97 ETH throughout."""
    scenario = load_scenario("steth-depeg-june-2022")
    config = tomllib.loads((LOCAL_CONFIG.parent / "local-weth.toml").read_text())
    assert scenario.quote.symbol == config["debt"]["symbol"] == "WETH"
    assert {a.symbol for a in scenario.assets} == {"WETH", *(a["symbol"] for a in config["asset"])}
    assert scenario.margin is not None
    eth, steth = dict(scenario.price_path("WETH")), dict(scenario.price_path("STETH"))
    ratios = [steth[t] / eth[t] for t in eth]
    assert min(ratios) >= 0.93
    assert max(ratios) <= 0.971


def test_a_margin_file_is_checked_against_the_scenario(tmp_path: Path) -> None:
    """`keeper drill --margin PATH`: the shipped local-USDC grid fits the USDC library scenarios; a file naming an
    asset the scenario lacks, without [margin], or missing, is refused with its line."""
    shipped = ROOT / "deployments" / "grids" / "local-usdc.toml"
    margin = load_margin(shipped, load_scenario("october-10-2025"))
    assert len(margin.scenarios) == 7
    assert margin.initial_scale == 0.95
    scenario = load_scenario("steth-depeg-june-2022")  # no WBTC or LINK here
    with pytest.raises(ScenarioError) as info:
        load_margin(shipped, scenario)
    assert any("unknown key `WBTC`" in p.message for p in info.value.problems)
    with pytest.raises(ScenarioError, match="no \\[margin\\] table"):
        load_margin(write(tmp_path, "x = 1\n", "g.toml"), scenario)
    with pytest.raises(ScenarioError, match="no such file"):
        load_margin(tmp_path / "missing.toml", scenario)


# --- books and further debt assets


BOOKS = """name = "b"
description = "books"
seed = 1
block_time_s = 2

[accounts]
count = 4
health = [1.05, 1.2]

[[accounts.book]]
name = "eth-vs-btc"
weight = 2
long = { WETH = 1 }
short = { WBTC = 1 }

[[accounts.book]]
name = "eth"
weight = 1
long = { WETH = 0.5, LINK = 0.5 }
short = { USDC = 1 }

[[asset]]
symbol = "WETH"
price = 2000.0
[[asset]]
symbol = "WBTC"
price = 60000.0
borrow = true
[[asset]]
symbol = "LINK"
price = 15.0
[[asset]]
symbol = "USDC"
price = 1.0
quote = true

[[step]]
at = 60
WBTC = 66000.0
"""


def test_books_and_borrowed_assets_load() -> None:
    s = parse_scenario(BOOKS)
    assert [b.name for b in s.accounts.books] == ["eth-vs-btc", "eth"]
    assert dict(s.accounts.books[0].short) == {"WBTC": 1.0}
    assert dict(s.accounts.books[1].long) == {"WETH": 0.5, "LINK": 0.5}
    assert s.accounts.assets == ("WETH", "LINK")  # the collateral the books hold
    assert [a.symbol for a in s.assets if a.borrow] == ["WBTC"]


def test_a_short_leg_must_be_borrowable(tmp_path: Path) -> None:
    text = BOOKS.replace("short = { WBTC = 1 }", "short = { LINK = 1 }")
    expect_one(tmp_path, text, 14, "`short` names LINK, which is neither the quote asset nor an [[asset]] with")


def test_a_long_leg_cannot_be_the_quote(tmp_path: Path) -> None:
    text = BOOKS.replace("long = { WETH = 1 }", "long = { USDC = 1 }")
    expect_one(tmp_path, text, 13, "`long` names USDC, the quote (debt) asset")


def test_the_quote_is_not_borrow(tmp_path: Path) -> None:
    text = BOOKS.replace("quote = true", "quote = true\nborrow = true")
    expect_one(tmp_path, text, 36, "the quote asset is borrowed already")


def test_a_book_share_must_be_positive(tmp_path: Path) -> None:
    text = BOOKS.replace("long = { WETH = 0.5, LINK = 0.5 }", "long = { WETH = 0.5, LINK = 0 }")
    expect_one(tmp_path, text, 19, "`LINK` = 0 must be > 0")
