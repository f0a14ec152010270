"""Off-policy evaluation: candidates judged on the logged traffic (``crossrec ope``)."""
