"""``python -m benchmarks [--only NAME] [--out DIR]``: run every ``benchmarks/bench_*.py``."""

from __future__ import annotations

import argparse
import importlib
import platform
import sys
import time
from pathlib import Path

import torch

from castlib.io import write_json_atomic


def machine() -> dict:
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks")
    parser.add_argument("--out", default="results/benchmarks")
    parser.add_argument("--only", action="append", default=[], help="bench module name, e.g. bench_data")
    args = parser.parse_args(argv)
    names = sorted(p.stem for p in Path(__file__).parent.glob("bench_*.py"))
    failed = []
    for name in names:
        if args.only and name not in args.only:
            continue
        print(f"== {name}", flush=True)
        result = importlib.import_module(f"benchmarks.{name}").run()
        result["machine"] = machine()
        write_json_atomic(Path(args.out) / f"{name}.json", result)
        for key, value in result.items():
            if isinstance(value, float):
                print(f"  {key}: {value:.3g}")
        for check in result.get("checks", []):
            status = "ok" if check["passed"] else "FAILED"
            print(f"  [{status}] {check['name']}: {check['value']:.3g} (target {check['target']})")
            if not check["passed"]:
                failed.append(f"{name}: {check['name']}")
    if failed:
        print("failed targets:\n  " + "\n  ".join(failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
