"""psr command line: `python main.py run experiments/quickstart.yaml` (see `python main.py --help`)."""

from psr.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
