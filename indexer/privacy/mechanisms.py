"""The budget and the noise of a private build: the zero-concentrated budget (rho) each statistic
gets, the Gaussian scale that spends it at the statistic's sensitivity, and the noisy release.

Accounting (OpenDP's maps and conversion, not formulas of our own): a Gaussian release of a
vector whose L2 distance between neighbouring datasets is at most ``s`` with standard deviation
``sigma`` is ``rho = s^2 / (2 sigma^2)``-zCDP; zCDP budgets add up; the threshold release of the
pairs is (rho, delta)-approximate zCDP; the total converts to (epsilon, delta) with OpenDP's
``make_zCDP_to_approxDP``. :class:`Budget` inverts that conversion for the epsilon asked for and
splits rho by :data:`indexer.privacy.config.BUDGET_SHARES`.

Sampling: with no seed, OpenDP's mechanisms draw the noise (exact discrete Gaussian for counts,
from a cryptographically secure source; they cannot be seeded). With a seed, numpy's generator
draws Gaussian noise of the same scale (rounded for counts): the same build twice gives the same
bytes - for tests and audits, since floating-point samplers of that kind have known weaknesses.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass

import numpy as np

from indexer.privacy.config import BUDGET_SHARES, THRESHOLD_DELTA_SHARE, PrivacyConfig


def _opendp():
    try:
        import opendp.prelude as dp
    except ImportError as exc:
        raise RuntimeError(
            "a private build needs OpenDP for its noise and accounting: "
            "pip install 'crossrec[privacy]'"
        ) from exc

    dp.enable_features("contrib")
    return dp


def epsilon_of(rho: float, delta: float) -> float:
    """The epsilon of a rho-zCDP release at ``delta`` (OpenDP's conversion)."""
    dp = _opendp()
    real = dp.atom_domain(T=float, nan=False)
    unit = dp.m.make_gaussian(real, dp.absolute_distance(T=float), 1.0)
    # A unit-scale Gaussian at input distance sqrt(2 rho) is exactly rho-zCDP.
    profile = dp.c.make_zCDP_to_approxDP(unit).map(math.sqrt(2 * rho))
    return float(profile.epsilon(delta))


def rho_for(epsilon: float, delta: float) -> float:
    """The largest rho whose release is (``epsilon``, ``delta``)-DP (bisection on
    :func:`epsilon_of`, to a relative 1e-6)."""
    lo, hi = 0.0, max(epsilon, 1.0)
    while epsilon_of(hi, delta) < epsilon:
        hi *= 2
    while hi - lo > 1e-6 * hi:
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if epsilon_of(mid, delta) <= epsilon else (lo, mid)
    return lo


@dataclass(frozen=True)
class Release:
    """One noisy statistic as the manifest states it: its rho (and delta, for the threshold), the
    L2 sensitivity the bounds give it, the noise's standard deviation, the threshold below which
    keys are not published (pairs only) and the epsilon it would cost alone at the build's
    delta; ``mechanism``: "gaussian", "gaussian threshold" or "exponential" (a choice among
    candidates: ``sensitivity`` bounds its scores, ``scale`` is its Gumbel noise's)."""

    name: str
    rho: float
    delta: float
    sensitivity: float
    scale: float
    threshold: int | None
    epsilon_alone: float
    mechanism: str = "gaussian"

    def to_json(self) -> dict:
        fields = asdict(self).items()
        return {k: (float(f"{v:.6g}") if isinstance(v, float) else v) for k, v in fields}


class Budget:
    """The build's budget split over the statistics it releases (``released``, names of
    :data:`BUDGET_SHARES`)."""

    def __init__(self, config: PrivacyConfig, released: Iterable[str]) -> None:
        names = list(released)
        unknown = set(names) - set(BUDGET_SHARES)
        if unknown:
            raise ValueError(f"no budget share for {sorted(unknown)}")
        total = sum(BUDGET_SHARES[n] for n in names)
        self.config = config
        self.shares = {n: BUDGET_SHARES[n] / total for n in names}
        self.threshold_delta = config.delta * THRESHOLD_DELTA_SHARE if "pairs" in names else 0.0
        self.conversion_delta = config.delta - self.threshold_delta
        self.rho = rho_for(config.epsilon, self.conversion_delta)

    def of(self, name: str) -> float:
        return self.rho * self.shares[name]


class Noise:
    """Draws the noisy releases and keeps their :class:`Release` records (``releases``)."""

    def __init__(self, budget: Budget) -> None:
        self.budget = budget
        seed = budget.config.seed
        self.rng = None if seed is None else np.random.default_rng(seed)
        self.releases: list[Release] = []

    @property
    def sampler(self) -> str:
        return "opendp" if self.rng is None else "numpy-seeded"

    def gaussian(self, name: str, values: np.ndarray, sensitivity: float) -> np.ndarray:
        """``values`` (1-d; integer counts or floats) plus Gaussian noise spending ``name``'s rho at
        L2 ``sensitivity``. Integer input gets integer noise; the result may be negative (the
        callers clamp - post-processing)."""
        rho = self.budget.of(name)
        integer = np.issubdtype(values.dtype, np.integer)
        if integer:
            sensitivity = float(math.ceil(sensitivity))  # OpenDP's integer metric
        scale = sensitivity / math.sqrt(2 * rho)
        if self.rng is not None:
            noise = self.rng.normal(0.0, scale, len(values))
            noisy = values + (np.rint(noise).astype(np.int64) if integer else noise)
        else:
            noisy = self._opendp_gaussian(values, scale, sensitivity, rho, integer)
        self._record(name, rho, 0.0, sensitivity, scale, None)
        return noisy

    def _opendp_gaussian(self, values, scale, sensitivity, rho, integer) -> np.ndarray:
        dp = _opendp()
        kind = dp.i64 if integer else float
        atom = dp.atom_domain(T=kind) if integer else dp.atom_domain(T=float, nan=False)
        mechanism = dp.m.make_gaussian(dp.vector_domain(atom), dp.l2_distance(T=kind), scale)
        d_in = int(sensitivity) if integer else sensitivity
        if mechanism.map(d_in) > rho * (1 + 1e-9):  # a privacy promise: never an assert
            raise RuntimeError(f"OpenDP's map exceeds the planned rho {rho} at scale {scale}")
        out = mechanism(values.tolist())
        return np.asarray(out, dtype=np.int64 if integer else np.float64)

    def threshold(
        self, name: str, keys: np.ndarray, counts: np.ndarray, l0: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Counts over keys a shopper picks (each shopper adds 1 to at most ``l0`` keys): every
        count gets Gaussian noise and only keys whose noisy count reaches the threshold are
        published, the threshold chosen so that a key one shopper alone could have created is
        published with probability within the budget's delta. Returns (kept keys, their noisy
        counts), in key order."""
        rho, delta = self.budget.of(name), self.budget.threshold_delta
        scale = math.sqrt(l0 / (2 * rho))
        tau = self._threshold_for(scale, l0, rho, delta)
        if self.rng is not None:
            noisy = counts + np.rint(self.rng.normal(0.0, scale, len(counts))).astype(np.int64)
            keep = noisy >= tau
            kept_keys, kept = keys[keep], noisy[keep]
        else:
            released = self._threshold_mechanism(scale, tau)(
                dict(zip(keys.tolist(), counts.tolist(), strict=True))
            )
            kept_keys = np.array(sorted(released), dtype=np.int64)
            kept = np.array([released[k] for k in kept_keys.tolist()], dtype=np.int64)
        self._record(name, rho, delta, math.sqrt(l0), scale, tau, "gaussian threshold")
        return kept_keys, kept

    def _threshold_mechanism(self, scale: float, tau: int):
        dp = _opendp()
        domain = dp.map_domain(dp.atom_domain(T=dp.i64), dp.atom_domain(T=dp.i64))
        metric = dp.l02inf_distance(dp.absolute_distance(T=dp.i64))
        return dp.m.make_gaussian_threshold(domain, metric, scale, tau)

    def _threshold_for(self, scale: float, l0: int, rho: float, delta: float) -> int:
        """The least integer threshold whose OpenDP map stays within (rho, delta)."""
        d_in = (l0, math.ceil(math.sqrt(l0)), 1)

        def fits(tau: int) -> bool:
            spent_rho, spent_delta = self._threshold_mechanism(scale, tau).map(d_in)
            return spent_rho <= rho * (1 + 1e-9) and spent_delta <= delta

        hi = 2
        while not fits(hi):
            hi *= 2
        lo = hi // 2
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (lo, mid) if fits(mid) else (mid, hi)
        return hi

    def quantile(
        self, name: str, values: np.ndarray, candidates: list[float], alpha: float
    ) -> float:
        """The candidate nearest the ``alpha``-quantile of ``values`` (one per shopper), chosen by
        the exponential mechanism on OpenDP's quantile scores (how many values a candidate is off
        the quantile; one shopper moves a score by at most 1), spending ``name``'s rho: Gumbel
        noise of scale ``1 / sqrt(2 rho)`` on the scores (OpenDP's report-noisy-max map)."""
        dp = _opendp()
        rho = self.budget.of(name)
        space = dp.vector_domain(dp.atom_domain(T=float, nan=False)), dp.symmetric_distance()
        scores = dp.t.make_quantile_score_candidates(*space, candidates=candidates, alpha=alpha)
        sensitivity = float(scores.map(1))
        scale = sensitivity / math.sqrt(2 * rho)
        zcdp = dp.zero_concentrated_divergence()
        mechanism = scores >> dp.m.then_noisy_max(zcdp, scale=scale, negate=True)
        if mechanism.map(1) > rho * (1 + 1e-9):  # a privacy promise: never an assert
            raise RuntimeError(f"OpenDP's map exceeds the planned rho {rho} at scale {scale}")
        data = values.astype(np.float64).tolist()
        if self.rng is None:
            index = int(mechanism(data))
        else:
            scored = np.asarray(scores(data), dtype=np.float64)
            index = int(np.argmax(self.rng.gumbel(0.0, scale, len(scored)) - scored))
        self._record(name, rho, 0.0, sensitivity, scale, None, "exponential")
        return candidates[index]

    def _record(
        self, name, rho, delta, sensitivity, scale, threshold, mechanism="gaussian"
    ) -> None:
        alone = epsilon_of(rho, self.budget.config.delta - delta) if rho > 0 else 0.0
        self.releases.append(
            Release(name, rho, delta, sensitivity, scale, threshold, alone, mechanism)
        )

    def spent(self) -> tuple[float, float]:
        """(epsilon, delta) of everything released so far: the rhos add up, the threshold's delta
        adds to the conversion's."""
        rho = sum(r.rho for r in self.releases)
        threshold_delta = sum(r.delta for r in self.releases)
        conversion = self.budget.config.delta - threshold_delta
        return epsilon_of(rho, conversion), threshold_delta + conversion
