"""Run slither over contracts/ through the solc-js wrapper (bin/solc) with a standard-JSON compilation.

`make lint` calls this. Findings excluded in slither.config.json are justified there; anything else at
medium or high impact fails the run.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from crytic_compile import CryticCompile
from crytic_compile.platform.solc_standard_json import SolcStandardJson
from slither import Slither
from slither.detectors import all_detectors
from slither.detectors.abstract_detector import AbstractDetector, DetectorClassification

ROOT = Path(__file__).resolve().parent.parent
FAIL_AT = {DetectorClassification.HIGH, DetectorClassification.MEDIUM}


def main() -> int:
    config = json.loads((ROOT / "slither.config.json").read_text())
    excluded = set(config["detectors_to_exclude"])
    sources = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "contracts").rglob("*.sol") if ".cache" not in p.parts)
    platform = SolcStandardJson()
    for source in sources:
        platform.add_source_file(source)
    platform.add_remapping("@openzeppelin/contracts/=node_modules/@openzeppelin/contracts/")
    compilation = CryticCompile(platform, solc=str(ROOT / "bin" / "solc"), solc_working_dir=str(ROOT))
    slither = Slither(compilation, filter_paths=config["filter_paths"].split("|"))
    detectors = [
        d
        for d in (getattr(all_detectors, name) for name in dir(all_detectors))
        if isinstance(d, type) and issubclass(d, AbstractDetector) and d.ARGUMENT not in excluded
    ]
    for detector in detectors:
        slither.register_detector(detector)
    failing = 0
    for results in slither.run_detectors():
        for finding in results:
            impact = finding["impact"]
            print(f"[{impact}] {finding['check']}: {finding['description'].strip()}")
            if impact in ("High", "Medium"):
                failing += 1
    print(f"slither: {len(sources)} files, {len(detectors)} detectors, {failing} high/medium findings")
    return 1 if failing else 0


if __name__ == "__main__":
    sys.exit(main())
