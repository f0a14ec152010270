"""The benchmarks of ``crossrec bench`` that need the batch side (``serve`` is the client's own,
in ``clients/bench.py``): ``retrieval`` (:mod:`apps.bench.retrieval`), ``index``
(:mod:`apps.bench.index`) and ``all`` (:mod:`apps.bench.all`, every benchmark and the tables of
BENCHMARKS.md)."""
