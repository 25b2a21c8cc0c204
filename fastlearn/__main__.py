"""`python -m fastlearn ...`: the same as the `fastlearn` command."""
from .cli import main

__all__: list[str] = []

if __name__ == '__main__':
    raise SystemExit(main())
