"""Real third-party contracts for the tests, compiled from their npm packages with their own solc-js version.

Sources are never copied into this tree: they are read from `node_modules` (pinned in package.json and the lock),
compiled through Node with the solc-js release the sources were written for (npm aliases such as
`solc-0.6.6` = `npm:solc@0.6.6`, standard JSON, as `bin/solc` does for 0.8.28), and the artifacts are cached under
`.build/thirdparty/` (git-ignored), keyed by a hash of every input: the compiler, the packages' versions, the
settings, the source names and the sources' text. A second run reads the cache and starts no Node process.

    from thirdparty import chainlink
    proxy_type = chainlink("AggregatorProxy")           # an ape ContractContainer
    proxy = admin.deploy(proxy_type, aggregator, ZERO)
    art = artifact("AggregatorProxy")                   # {"abi": [...], "bytecode": "0x..", "deployedBytecode": ..}

`python tests/thirdparty.py` compiles (or finds in the cache) every contract listed here and prints their sizes.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
NODE_MODULES = ROOT / "node_modules"
CACHE = ROOT / ".build" / "thirdparty"

# Chainlink compiled its feeds with the optimizer on and a million runs (its hardhat and foundry profiles).
OPTIMIZER = {"enabled": True, "runs": 1_000_000}


@dataclass(frozen=True)
class Source:
    """One contract: the npm package that ships it, its path inside the package, the solc-js alias (an npm
    package in package.json) whose version its pragma asks for, and whether its project compiles through the IR."""

    package: str
    path: str
    solc: str
    via_ir: bool = False


CHAINLINK = "@chainlink/contracts"
# @chainlink/contracts 0.8.0 is the last release that ships the aggregator proxy and the Flux aggregator beside the
# L2 sequencer-uptime feeds. No release ships the OCR2 price aggregator (it lives in libocr, not on npm).
CHAINLINK_SOURCES: dict[str, Source] = {
    # mainnet feeds' proxies are EACAggregatorProxy, an AggregatorProxy with read access control (off by default)
    "AggregatorProxy": Source(CHAINLINK, "src/v0.6/AggregatorProxy.sol", "solc-0.6.6"),
    "EACAggregatorProxy": Source(CHAINLINK, "src/v0.6/EACAggregatorProxy.sol", "solc-0.6.6"),
    "FluxAggregator": Source(CHAINLINK, "src/v0.6/FluxAggregator.sol", "solc-0.6.6"),
    "MockV3Aggregator": Source(CHAINLINK, "src/v0.6/tests/MockV3Aggregator.sol", "solc-0.6.6"),
    "OptimismSequencerUptimeFeed": Source(
        CHAINLINK, "src/v0.8/l2ep/dev/optimism/OptimismSequencerUptimeFeed.sol", "solc-0.8.19"
    ),
    "ArbitrumSequencerUptimeFeed": Source(
        CHAINLINK, "src/v0.8/l2ep/dev/arbitrum/ArbitrumSequencerUptimeFeed.sol", "solc-0.8.19"
    ),
    "Flags": Source(CHAINLINK, "src/v0.8/dev/Flags.sol", "solc-0.8.19"),
    "SimpleWriteAccessController": Source(
        CHAINLINK, "src/v0.8/shared/access/SimpleWriteAccessController.sol", "solc-0.8.19"
    ),
}

MORPHO = "@morpho-org/morpho-blue"
# Morpho Blue 1.0.0 as its repository builds it (foundry: via-ir, 999,999 optimizer runs, solc 0.8.19), with the
# interest-rate model, oracle and token mocks it ships for its own tests: for docs/gas.md's side-by-side.
MORPHO_SOURCES: dict[str, Source] = {
    "Morpho": Source(MORPHO, "src/Morpho.sol", "solc-0.8.19", via_ir=True),
    "IrmMock": Source(MORPHO, "src/mocks/IrmMock.sol", "solc-0.8.19", via_ir=True),
    "OracleMock": Source(MORPHO, "src/mocks/OracleMock.sol", "solc-0.8.19", via_ir=True),
    "ERC20Mock": Source(MORPHO, "src/mocks/ERC20Mock.sol", "solc-0.8.19", via_ir=True),
}
MORPHO_OPTIMIZER = {"enabled": True, "runs": 999_999}
SOURCES: dict[str, Source] = {**CHAINLINK_SOURCES, **MORPHO_SOURCES}

# Standard JSON through Node: reads {solc, input} on stdin, resolves imports from node_modules (the package's own
# nested node_modules first, for dependencies npm could not hoist), writes solc's output on stdout.
_NODE_COMPILE = r"""
const fs = require('fs');
const path = require('path');
const request = JSON.parse(fs.readFileSync(0, 'utf8'));
const root = request.node_modules;
const solc = require(path.join(root, request.solc));
function findImport(p) {
  const pkg = p.startsWith('@') ? p.split('/').slice(0, 2).join('/') : p.split('/')[0];
  const candidates = [path.join(root, p)];
  for (const owner of request.packages) candidates.push(path.join(root, owner, 'node_modules', p));
  for (const c of candidates) {
    if (fs.existsSync(c) && fs.statSync(c).isFile()) return { contents: fs.readFileSync(c, 'utf8') };
  }
  return { error: 'not found in node_modules: ' + p + ' (package ' + pkg + ')' };
}
let out = solc.compile(JSON.stringify(request.input), { import: findImport });
const start = out.indexOf('{');
if (start > 0) out = out.slice(start);
process.stdout.write(out);
"""


class ThirdPartyError(RuntimeError):
    """A third-party source could not be found or compiled."""


def _package_version(package: str) -> str:
    manifest = NODE_MODULES / package / "package.json"
    if not manifest.is_file():
        raise ThirdPartyError(f"{package} is not installed in {NODE_MODULES}: run `make setup`")
    return str(json.loads(manifest.read_text())["version"])


def _compile(solc: str, sources: list[Source], via_ir: bool = False) -> dict[str, Any]:
    """Compile `sources` with solc-js alias `solc` (cached); returns solc's `contracts` output."""
    packages = sorted({s.package for s in sources})
    names = sorted(f"{s.package}/{s.path}" for s in sources)
    settings: dict[str, Any] = {
        "optimizer": MORPHO_OPTIMIZER if via_ir else OPTIMIZER,
        "outputSelection": {"*": {"*": ["abi", "evm.bytecode.object", "evm.deployedBytecode.object"]}},
    }
    if via_ir:
        settings["viaIR"] = True
    input_json = {
        "language": "Solidity",
        "sources": {name: {"content": (NODE_MODULES / name).read_text()} for name in names},
        "settings": settings,
    }
    key_material = {
        "solc": [solc, _package_version(solc)],
        "packages": {p: _package_version(p) for p in packages},
        "input": input_json,
        "driver": _NODE_COMPILE,
    }
    key = hashlib.sha256(json.dumps(key_material, sort_keys=True).encode()).hexdigest()[:24]
    cached = CACHE / f"{solc}-{key}.json"
    if cached.is_file():
        result: dict[str, Any] = json.loads(cached.read_text())
        return result
    request = {"solc": solc, "packages": packages, "node_modules": str(NODE_MODULES), "input": input_json}
    proc = subprocess.run(
        ["node", "-e", _NODE_COMPILE], input=json.dumps(request), capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise ThirdPartyError(f"solc-js {solc} failed: {proc.stderr.strip()[:2000]}")
    output = json.loads(proc.stdout)
    errors = [e["formattedMessage"] for e in output.get("errors", []) if e.get("severity") == "error"]
    if errors:
        raise ThirdPartyError(f"solc-js {solc} could not compile {names}:\n" + "\n".join(errors))
    contracts: dict[str, Any] = output["contracts"]
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = cached.with_suffix(".tmp")
    tmp.write_text(json.dumps(contracts))
    tmp.replace(cached)  # atomic: a concurrent reader sees the whole file or none
    return contracts


@cache
def artifact(name: str) -> dict[str, Any]:
    """ABI, creation bytecode and runtime bytecode of third-party contract `name` (a key of SOURCES). Every
    contract sharing its compiler and settings is compiled in the same run, so the cache holds one file per
    compiler and settings."""
    if name not in SOURCES:
        raise ThirdPartyError(f"unknown third-party contract {name!r}; known: {', '.join(sorted(SOURCES))}")
    src = SOURCES[name]
    group = [s for s in SOURCES.values() if s.solc == src.solc and s.via_ir == src.via_ir]
    contracts = _compile(src.solc, group, src.via_ir)
    compiled = contracts[f"{src.package}/{src.path}"][name]
    return {
        "abi": compiled["abi"],
        "bytecode": "0x" + compiled["evm"]["bytecode"]["object"],
        "deployedBytecode": "0x" + compiled["evm"]["deployedBytecode"]["object"],
    }


@cache
def chainlink(name: str) -> Any:
    """An ape ContractContainer for third-party contract `name` (Chainlink's or Morpho's):
    `account.deploy(chainlink(name), *args)`."""
    from ape.contracts import ContractContainer
    from ethpm_types import ContractType

    art = artifact(name)
    contract_type = ContractType.model_validate(
        {
            "contractName": name,
            "abi": art["abi"],
            "deploymentBytecode": {"bytecode": art["bytecode"]},
            "runtimeBytecode": {"bytecode": art["deployedBytecode"]},
        }
    )
    return ContractContainer(contract_type)


def main() -> int:
    for name in sorted(SOURCES):
        art = artifact(name)
        runtime = (len(art["deployedBytecode"]) - 2) // 2
        print(f"{name:30} {SOURCES[name].solc:12} runtime {runtime:6,} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
