"""``python -m benchmarks.fusion_quality`` or ``python benchmarks/fusion_quality`` (the folder as a script)."""
import sys
from pathlib import Path

if not __package__:
    # run as a folder: Python put this folder first on sys.path, where config.py, data.py, evaluate.py ... would
    # shadow same-named top-level modules of other packages; import the package from the checkout instead
    here = Path(__file__).resolve().parent
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != here]
    sys.path.insert(0, str(here.parents[1]))

from benchmarks.fusion_quality.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
