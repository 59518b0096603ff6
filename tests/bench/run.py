"""`make bench`: runs every tests/bench/bench_*.py in turn; each prints its own figures and ratios."""

import runpy
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main(selected):
    scripts = sorted(HERE.glob("bench_*.py"))
    if selected:
        scripts = [script for script in scripts if any(name in script.stem for name in selected)]
    for script in scripts:
        print(f"== {script.stem}", flush=True)
        runpy.run_path(str(script), run_name="__main__")
        print(flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
