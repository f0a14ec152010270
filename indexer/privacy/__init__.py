"""User-level differential privacy for the behaviour statistics an index version publishes.

``crossrec index build --dp-epsilon E`` replaces every behaviour-derived file of the version with
one computed under (E, delta)-differential privacy *per shopper*: whatever any one shopper did,
adding or removing all of their events changes the probability of any artifact by at most a
factor ``exp(E)`` (plus ``delta``). Four steps:

1. **Contribution bounding** (:mod:`indexer.privacy.bounding`): each shopper keeps at most
   ``max_events_per_item`` events per item (the most recent) on at most ``max_items_per_user``
   items (the most recently touched), and at most ``max_transitions_per_user`` category
   transitions - what bounds one shopper's influence on every statistic (its *sensitivity*).
2. **Calibrated noise** (:mod:`indexer.privacy.mechanisms`): Gaussian noise from OpenDP on every
   released count vector, scaled to the sensitivity and to the statistic's share of the budget;
   the co-engagement pairs (an unknown, shopper-chosen set of keys) through OpenDP's Gaussian
   threshold mechanism, so a pair seen by few shoppers is not published.
3. **Accounting**: the statistics' zero-concentrated budgets add up (rho), the threshold adds its
   delta, and OpenDP converts the total to the (epsilon, delta) asked for.
4. **Everything else is derived from the noisy releases** (funnel rates, transition probabilities
   and lifts, neighbour scores): post-processing costs no privacy.

What is not covered is not built: the complement adaptation (item vectors trained on individual
histories), EASE and the factor model are dropped from a private build, and the manifest calls
the version differentially private only when nothing else in it derives from behaviour
(:mod:`indexer.privacy.release`).
"""
