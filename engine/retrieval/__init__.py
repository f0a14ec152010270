"""The request path for one profile: targets, candidate sources, filters, features, ranking,
diversity, allocation and explanations (``recommend.py`` reads top to bottom), and where shard
searches run (in process or on Ray Serve)."""
