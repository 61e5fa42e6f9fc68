"""``python -m benchmarks.report``: see :mod:`benchmarks.report`."""

from benchmarks.report.runner import main

raise SystemExit(main())
