"""What was shown and what came of it: the Prometheus metrics (requests and online figures),
the impression log, live attribution, and the loop that feeds them from every answered list."""
