"""Runs the whole benchmark suite and writes ``benchmarks/results``.

    TGNN_DATA_MIRROR=../shared/data python benchmarks/run_all.py [--device cuda]

Each part is a script of its own (``bench_sparse.py``, ``bench_dense.py``,
``bench_long.py``, ``bench_e2e.py``) and can be run alone."""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--only", nargs="+",
                        choices=["sparse", "dense", "long", "e2e"],
                        default=["sparse", "dense", "long", "e2e"])
    args = parser.parse_args()
    for part in args.only:
        cmd = [sys.executable, str(HERE / f"bench_{part}.py")]
        if part != "e2e":
            cmd += ["--device", args.device]
        print("==>", " ".join(cmd), flush=True)
        subprocess.run(cmd, check=True, cwd=HERE)
    subprocess.run([sys.executable, str(HERE / "summarize.py")], check=True,
                   cwd=HERE)


if __name__ == "__main__":
    main()
