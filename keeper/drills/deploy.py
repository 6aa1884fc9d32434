"""The embedded drill's deployment: find the checkout, write a deploy config for the scenario from the local
template, and run `ape run deploy` against the drill's Anvil."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path
from types import SimpleNamespace

from keeper.drills.record import DrillError
from keeper.drills.scenario import Scenario


def find_project(start: Path | None = None) -> Path:
    """The collateral-keeper checkout (it holds ape-config.yaml and contracts/): from `start`, the current folder,
    or the folder this package was installed from in editable mode."""
    here = Path(__file__).resolve().parent
    for base in [p for p in (start, Path.cwd(), here) if p is not None]:
        for candidate in [base, *base.parents]:
            if (candidate / "ape-config.yaml").is_file() and (candidate / "contracts").is_dir():
                return candidate
    raise DrillError(
        "the embedded drill deploys the contracts with `ape run deploy`, which needs the collateral-keeper checkout: "
        "run it from the checkout, or drill a node that already has a deployment with --rpc-url"
    )


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    return repr(value)


def deploy_config(scenario: Scenario, template: Path, risk: dict[str, tuple[float, float]] | None = None) -> str:
    """The deploy config for the embedded drill, as TOML text: the template's parameters for the scenario's assets
    (only those), at the scenario's initial prices, with a mock sequencer feed if a fault needs one; `risk` replaces
    the template's (ltv, lt) of the assets it names."""
    risk = risk or {}
    unknown = sorted(set(risk) - {a.symbol for a in scenario.assets if not a.quote})
    if unknown:
        raise DrillError(
            f"--risk names {', '.join(unknown)}, which scenario {scenario.name!r} does not use as collateral"
        )
    raw = tomllib.loads(template.read_text(encoding="utf-8"))
    quote = scenario.quote
    if raw["debt"]["symbol"] != quote.symbol:
        raise DrillError(
            f"scenario {scenario.name!r} borrows {quote.symbol} but {template} deploys {raw['debt']['symbol']} as "
            f"the debt asset: make {raw['debt']['symbol']} the quote asset of the scenario"
        )
    raw["debt"]["price"] = quote.price
    by_symbol = {a["symbol"]: a for a in raw["asset"]}
    assets = []
    for a in scenario.assets:
        if a.quote:
            continue
        if a.symbol not in by_symbol:
            raise DrillError(
                f"scenario {scenario.name!r} uses {a.symbol}, which {template} does not list: the embedded drill "
                f"deploys the assets of that config ({', '.join(by_symbol)}); add {a.symbol} there or use those"
            )
        spec = dict(by_symbol[a.symbol])
        spec["price"] = a.price
        if a.symbol in risk:
            spec["ltv"], spec["lt"] = risk[a.symbol]
        assets.append(spec)
    raw["asset"] = assets
    native = raw.get("native") or {}
    if native.get("asset") and native["asset"] not in {a["symbol"] for a in assets}:
        # The template prices gas through an asset this scenario does not deploy: the drill's keeper then runs with
        # gas unpriced (a local chain), unless --set native_price names another source.
        del raw["native"]
    if any(f.kind == "sequencer_down" for f in scenario.faults):
        raw.setdefault("sequencer", {})["feed"] = "mock"
    # The scenario's further debt assets, with the template's [[borrow]] terms where it has them.
    given = {b["symbol"]: b for b in raw.pop("borrow", [])}
    borrow = [given.get(a.symbol, {"symbol": a.symbol}) for a in scenario.assets if a.borrow]
    lines = [f"# made by keeper drill for scenario {scenario.name!r} from {template.name}"]
    for section, table in raw.items():
        if section == "asset":
            continue
        lines.append(f"\n[{section}]")
        lines += [f"{k} = {_toml_value(v)}" for k, v in table.items()]
    for spec in assets:
        lines.append("\n[[asset]]")
        lines += [f"{k} = {_toml_value(v)}" for k, v in spec.items()]
    for entry in borrow:
        lines.append("\n[[borrow]]")
        lines += [f"{k} = {_toml_value(v)}" for k, v in entry.items() if k != "vault"]
        if "vault" in entry:
            lines.append("[borrow.vault]")
            lines += [f"{k} = {_toml_value(v)}" for k, v in entry["vault"].items()]
    return "\n".join(lines) + "\n"


def seeding_params(config: Path) -> SimpleNamespace:
    """What `plan_seeding` reads of a deployment (token decimals, ltv and lt by symbol), taken from a deploy config
    such as the one the embedded drill deploys, so seeding can be planned without a node."""
    raw = tomllib.loads(config.read_text(encoding="utf-8"))
    return SimpleNamespace(
        decimals={a["symbol"]: a["decimals"] for a in [raw["debt"], *raw["asset"]]},
        lt={a["symbol"]: a["lt"] for a in raw["asset"]},
        ltv={a["symbol"]: a["ltv"] for a in raw["asset"]},
    )


def local_template(project: Path, scenario: Scenario) -> Path:
    """The local deploy config the embedded drill starts from: deployments/configs/local-<debt>.toml for the
    scenario's debt asset when there is one (local-weth.toml lends WETH), local-multi.toml for a USDC scenario with
    further debt assets (`borrow = true`), else local.toml (USDC)."""
    configs = project / "deployments" / "configs"
    if scenario.quote.symbol == "USDC" and any(a.borrow for a in scenario.assets):
        return configs / "local-multi.toml"
    specific = configs / f"local-{scenario.quote.symbol.lower()}.toml"
    return specific if specific.is_file() else configs / "local.toml"


def deploy_embedded(
    scenario: Scenario, url: str, out: Path, project: Path, risk: dict[str, tuple[float, float]] | None = None
) -> Path:
    """Deploy with `ape run deploy` to the node at `url`; the record goes to out/<chainId>.json."""
    out = out.resolve()  # `ape run deploy` runs in the project folder: a relative path would point there
    config = out / "deploy-config.toml"
    template = local_template(project, scenario)
    config.write_text(deploy_config(scenario, template, risk), encoding="utf-8")
    ape = Path(sys.prefix) / "bin" / "ape"
    cmd = [str(ape), "run", "deploy", "--network", url, "--config", str(config), "--out-dir", str(out), "--fresh"]
    with open(out / "deploy.log", "wb") as sink:
        done = subprocess.run(cmd, cwd=project, stdout=sink, stderr=subprocess.STDOUT, check=False)
    if done.returncode != 0:
        raise DrillError(f"deploying to the drill's Anvil failed (exit {done.returncode}); see {out / 'deploy.log'}")
    return out / "31337.json"
