"""`python -m aloe`: the `aloe` command (`aloe.operations.cli`)."""

from aloe.operations.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
