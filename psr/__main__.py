"""`python -m psr ...` is `python main.py ...` (the sweep starts its parallel runs this way)."""

from psr.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
