"""Training settings: one frozen dataclass, recorded whole in every model's manifest."""

from __future__ import annotations

from dataclasses import asdict, dataclass

HEAD_MODES = ("chained", "independent")


@dataclass(frozen=True)
class TrainConfig:
    """How :func:`ranker.train.train_model` fits a model.

    LightGBM (per head): ``num_leaves``, ``learning_rate``, ``min_data_in_leaf``,
    ``feature_fraction``, ``bagging_fraction`` with ``bagging_freq`` (0: no bagging), ``max_bin``.
    Up to ``max_rounds`` trees, stopping after ``early_stopping_rounds`` without a better
    ``valid`` log-loss; a head whose ``valid`` subset has fewer than ``min_valid_positives``
    positives (or no negative) cannot stop early and gets ``fallback_rounds`` trees instead.

    ``heads``: ``"chained"`` (click, cart | click, purchase | cart; probabilities multiply along
    the funnel) or ``"independent"`` (one head per objective on all rows). ``threads`` and ``seed``
    fix the result: two trainings with the same rows and config give the same model.
    ``drop_features``: features of the rows the model leaves out. ``validation_share``: see
    :mod:`ranker.split`. ``version``: the model version's name (default: the UTC time).
    ``progress``: a progress bar per head.

    ``negative_share``: the share of the negative *train* rows kept (a seeded draw; every positive
    stays) by heads over every candidate: replayed candidates are ~99.8% negatives, and a fifth of
    them teach the trees about as much at a fifth of the cost. The conditional heads of the chain
    (few rows, many positives) keep all theirs. The valid and test parts keep every row, so early
    stopping, calibration and the reported figures see the true rates (calibration undoes the
    shift the draw puts in the raw scores).

    ``base_feature``: a feature (the engine's retrieval-only ``blend``) whose one-variable
    logistic fit is the starting margin of every head over every candidate: the trees learn
    corrections to the order retrieval already has, and a head with too little data to correct it
    (early stopping after a few trees) keeps that order instead of a worse one of its own. None, or
    a feature the rows lack: trees from a constant, as usual.

    ``first_objective``: the LightGBM objective of the heads over every candidate: ``lambdarank``
    (each decision's NDCG@10: an order, made a probability by the calibration that follows; the
    default: on the 50k shop it ranked better in ``crossrec eval``, BENCHMARKS.md) or ``binary``
    (log-loss). The conditional heads of the chain are always binary.
    """

    num_leaves: int = 31
    learning_rate: float = 0.1
    max_rounds: int = 200
    early_stopping_rounds: int = 30
    min_data_in_leaf: int = 50
    feature_fraction: float = 0.9
    bagging_fraction: float = 1.0
    bagging_freq: int = 0
    max_bin: int = 255
    min_valid_positives: int = 5
    fallback_rounds: int = 50
    threads: int = 2
    seed: int = 0
    heads: str = "chained"
    drop_features: tuple[str, ...] = ()
    validation_share: float = 0.4
    version: str | None = None
    progress: bool = True
    negative_share: float = 0.2
    base_feature: str | None = "blend"
    first_objective: str = "lambdarank"

    def __post_init__(self) -> None:
        if self.heads not in HEAD_MODES:
            raise ValueError(f"heads must be one of {HEAD_MODES}, got {self.heads!r}")
        for name in ("num_leaves", "max_rounds", "early_stopping_rounds", "fallback_rounds"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not 0 < self.validation_share < 1:
            raise ValueError(f"validation_share must be in (0, 1), got {self.validation_share}")
        if self.first_objective not in ("binary", "lambdarank"):
            raise ValueError(
                f"first_objective must be binary or lambdarank, got {self.first_objective!r}"
            )
        if not 0 < self.negative_share <= 1:
            raise ValueError(f"negative_share must be in (0, 1], got {self.negative_share}")
        if self.threads < 1:
            raise ValueError(f"threads must be at least 1, got {self.threads}")

    def lightgbm_params(self) -> dict:
        """The LightGBM parameters of every head (binary log-loss, deterministic)."""
        return {
            "objective": "binary",
            "metric": "binary_logloss",
            "num_leaves": self.num_leaves,
            "learning_rate": self.learning_rate,
            "min_data_in_leaf": self.min_data_in_leaf,
            "feature_fraction": self.feature_fraction,
            "bagging_fraction": self.bagging_fraction,
            "bagging_freq": self.bagging_freq,
            "max_bin": self.max_bin,
            "num_threads": self.threads,
            "seed": self.seed,
            "deterministic": True,
            "force_row_wise": True,
            "verbosity": -1,
        }

    def to_manifest(self) -> dict:
        return {**asdict(self), "drop_features": list(self.drop_features)}
