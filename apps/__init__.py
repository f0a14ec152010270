"""Jobs that orchestrate the other packages: evaluation, the demo, the complement check.

``apps`` sits at the top of the dependency graph: it may import ``indexer``, ``engine``, ``ranker``
and ``clients``; nothing imports ``apps``.
"""
