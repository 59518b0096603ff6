"""`make bench`: runs every tests/bench/bench_*.py in its own process (so that memory figures are
its own); each prints its figures and ratios. Arguments select benchmarks by part of their name."""

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main(selected):
    scripts = sorted(HERE.glob("bench_*.py"))
    if selected:
        scripts = [script for script in scripts if any(name in script.stem for name in selected)]
    failed = []
    for script in scripts:
        print(f"== {script.stem}", flush=True)
        if subprocess.run([sys.executable, str(script)]).returncode != 0:
            failed.append(script.stem)
        print(flush=True)
    if failed:
        sys.exit(f"failed: {', '.join(failed)}")


if __name__ == "__main__":
    main(sys.argv[1:])
