"""``python -m benchmarks.implicit_quality`` or ``python benchmarks/implicit_quality`` (the folder as a script)."""
import sys
from pathlib import Path

if not __package__:
    # run as a folder: this folder's config.py / task.py ... would shadow top-level modules; import the package
    here = Path(__file__).resolve().parent
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != here]
    sys.path.insert(0, str(here.parents[1]))

from benchmarks.implicit_quality.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
