"""Off-policy estimators: what a candidate policy's lists would have earned on logged traffic, from
the lists the engine showed, the probability with which it showed each item at each position
(the logged propensity, engine/retrieval/explore.py) and what shoppers did.

Item-position model (Li et al., 2018): the reward at a position depends on the item there and the
position, not on the rest of the list. For logged list ``n`` with item ``a_np`` at position ``p``,
propensity ``pi_np``, reward ``r_np``, and the candidate's list ``e_n`` for the same shopper at the
same moment, ``w_np = [e_n(p) = a_np] / pi_np``. Every figure is per impression (one item at one
position), summed over lists and divided by the candidate's impressions ``K = sum_n k_n``:

=========  ===========================================================================
estimate   formula
=========  ===========================================================================
``naive``  ``sum r [match] / sum [match]``: the logged rate where the lists agree,
           propensities ignored (what a log read at face value says)
``ips``    ``sum w r / K``: unbiased when every item-position the candidate shows
           could have been logged (``pi > 0``)
``snips``  ``sum w r / sum w``: self-normalised, biased a little, far less variance
``dm``     ``sum_n Rhat(e_n) / K``: a reward model's value of the candidate's lists
``dr``     ``(sum_n Rhat(e_n) + sum w (r - rhat)) / K``: the model, corrected where the
           log can see (unbiased when either the model or the propensities are right)
=========  ===========================================================================

``support = sum w / K`` estimates the share of the candidate's item-positions the logging policy
could have shown: ``ips`` misses the rest, ``snips`` assumes it behaves like the seen part, and
below ``min_support`` no propensity-based figure is trusted (the log cannot support the
candidate: no overlap). Intervals: percentile bootstrap over lists.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

ESTIMATES = ("naive", "ips", "snips", "dm", "dr")


@dataclass(frozen=True)
class Logged:
    """One reward of logged lists against one candidate. Per logged item-position (m,): ``list``
    (its list's index, 0..n-1), ``reward``, ``propensity``, ``match`` (the candidate shows this
    item here) and ``model`` (the reward model at this item-position; None: no model). Per list
    (n,): ``slots`` (the candidate's list length) and ``model_candidate`` (the model's summed
    reward of the candidate's list; None: no model)."""

    list: np.ndarray
    reward: np.ndarray
    propensity: np.ndarray
    match: np.ndarray
    slots: np.ndarray
    model: np.ndarray | None = None
    model_candidate: np.ndarray | None = None


#: The per-list sums every estimate is made of (columns of :func:`list_sums`).
COLUMNS = ("wr", "w", "r_match", "match", "model_candidate", "correction", "slots")


def list_sums(logged: Logged) -> np.ndarray:
    """(n, len(COLUMNS)) per list: ``sum w r``, ``sum w``, ``sum r [match]``, ``sum [match]``,
    ``Rhat(e_n)``, ``sum w (r - rhat)`` (both 0 without a model) and the candidate's slots."""
    n = len(logged.slots)
    if (logged.propensity <= 0).any():
        raise ValueError("a logged propensity is 0 or less: the log is damaged")
    w = logged.match / logged.propensity
    matched = logged.match.astype(np.float64)
    has_model = logged.model is not None and logged.model_candidate is not None
    model = logged.model if logged.model is not None else np.zeros(len(w))

    def per_list(values: np.ndarray) -> np.ndarray:
        return np.bincount(logged.list, weights=values, minlength=n)

    return np.column_stack(
        [
            per_list(w * logged.reward),
            per_list(w),
            per_list(matched * logged.reward),
            per_list(matched),
            logged.model_candidate if has_model else np.zeros(n),
            per_list(w * (logged.reward - model)) if has_model else np.zeros(n),
            logged.slots.astype(np.float64),
        ]
    )


def estimates(total: np.ndarray, has_model: bool) -> dict[str, float]:
    """Every estimate of the module docstring and ``support``, from the column sums of
    :func:`list_sums` over the lists evaluated."""
    wr, w, r_match, match, model_candidate, correction, slots = total
    out = {
        "naive": r_match / match if match else float("nan"),
        "ips": wr / slots,
        "snips": wr / w if w else float("nan"),
        "support": w / slots,
    }
    if has_model:
        out["dm"] = model_candidate / slots
        out["dr"] = (model_candidate + correction) / slots
    return out


@dataclass(frozen=True)
class Estimate:
    value: float
    low: float
    high: float

    def as_dict(self) -> dict[str, float]:
        return {"value": self.value, "low": self.low, "high": self.high}


def evaluate(logged: Logged, resamples: int = 1_000, seed: int = 0) -> dict[str, Estimate]:
    """Every estimate with its 95% percentile-bootstrap interval (lists resampled with
    replacement); ``resamples=0`` gives the point as both ends."""
    sums = list_sums(logged)
    has_model = logged.model is not None and logged.model_candidate is not None
    point = estimates(sums.sum(axis=0), has_model)
    rng = np.random.default_rng(seed)
    n = len(sums)
    draws = [
        estimates(np.bincount(rng.integers(n, size=n), minlength=n) @ sums, has_model)
        for _ in range(resamples)
    ]
    out = {}
    for name, value in point.items():
        values = np.array([d[name] for d in draws], dtype=np.float64)
        if not draws or not np.isfinite(values).any():
            out[name] = Estimate(float(value), float(value), float(value))
            continue
        low, high = np.nanpercentile(values, [2.5, 97.5])
        out[name] = Estimate(float(value), float(low), float(high))
    return out
