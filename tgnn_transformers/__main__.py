"""``python -m tgnn_transformers`` runs the ``tgnn`` command line (what
``torchrun ... -m tgnn_transformers train ...`` starts on every rank)."""
import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
