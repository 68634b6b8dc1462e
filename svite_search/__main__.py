"""``python -m svite_search`` is the same as the ``svite-search`` command."""
from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
