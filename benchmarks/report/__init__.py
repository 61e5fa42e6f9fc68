"""The benchmark report (issue #19): Embeddix next to its peers, one command, one machine, one run.

::

    python -m benchmarks.report                       # realtext + synth768, every engine -> benchmarks/REPORT.md
    python -m benchmarks.report --quick               # realtext, 12,000 records, < 5 minutes -> results/report_quick/
    python -m benchmarks.report --sets tiny --engines embeddix,hnswlib --out /tmp/r   # what the test runs

Every engine runs in a child process of its own (:mod:`benchmarks.report.child`), on the same base rows,
held-out queries and exact ground truth (:mod:`benchmarks.report.data`), through a small adapter over its
own API (:mod:`benchmarks.report.engines`). The parent (:mod:`benchmarks.report.runner`) writes
``report_<set>.json`` per data set, the PNG plots (:mod:`benchmarks.report.plots`) and REPORT.md
(:mod:`benchmarks.report.markdown`): machine, versions, date and command line at the top, the headline
table, where Embeddix is behind a peer (with the figures), then each workload.

An engine whose library does not import (here, nor in ``benchmarks/.peers-venv``) gets a row saying so; an
engine that fails or times out gets a row with the error.
"""
