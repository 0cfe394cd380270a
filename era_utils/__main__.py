"""`python -m era_utils ...` is `era-utils ...` (what `torchrun -m era_utils` launches on every rank)."""
import sys

from era_utils.cli import main

if __name__ == "__main__":  # importing the module (a test walking the package) runs nothing
    sys.exit(main())
