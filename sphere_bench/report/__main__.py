"""``python -m sphere_bench.report``: see :mod:`sphere_bench.report`."""

from sphere_bench.report.build import main

raise SystemExit(main())
