"""``python -m simulator``: write a landing-zone drop and its ground truth."""

from simulator.cli import main

raise SystemExit(main())
