"""The ranker: training rows, training, calibration, the model format and ranking metrics of a
multi-objective LightGBM ranker (one head per objective along the click -> cart -> purchase
funnel).

======================  ==========================================================================
module                  what is decided there
======================  ==========================================================================
``ranker.rows``         the training-row contract, its schema hash, the in-memory layout
``ranker.row_files``    rows on disk: a folder of Parquet parts written as made, or one file
``ranker.split``        train / valid / test decisions by time
``ranker.heads``        which rows each head learns from; LightGBM fitting and early stopping
``ranker.calibration``  isotonic calibration (pool adjacent violators)
``ranker.metrics``      NDCG@k, Recall@k, AUC, calibration tables, feature gain
``ranker.train``        the training run (``TrainConfig`` in ``ranker.config``)
``ranker.model``        the model version format, loading, checking and scoring
``ranker.plot``         the reliability plot (optional matplotlib)
``ranker.report``       the held-out figures as text
``ranker.errors``       ``RankerError`` and its reasons
======================  ==========================================================================

Data flows one way: ``ranker`` imports neither ``engine`` nor ``apps``. The engine writes training
rows with :class:`ranker.row_files.RowWriter` and scores with :class:`ranker.model.RankerModel`.
This module imports nothing heavy: LightGBM loads with ``ranker.model`` or ``ranker.train``.
"""

from __future__ import annotations

from crossrec.vocabulary import OBJECTIVES
from ranker.errors import RankerError

__all__ = ["OBJECTIVES", "RankerError"]
