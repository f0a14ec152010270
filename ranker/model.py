"""Ranker model versions on disk, and the model the engine scores with.

Layout of a model version (written like an index version, see :mod:`crossrec.versions`)::

    manifest.json       format crossrec-ranker, version, features + schema hash, heads,
                        calibration knots, metrics, training record, ``trained_on``
    head-click.txt      one LightGBM text model per head (``Booster.save_model``)
    head-cart.txt
    head-purchase.txt
    reliability.png     predicted vs observed per decile (when matplotlib is installed)

Scoring (:meth:`RankerModel.predict`), for the candidates of one request in one batch::

    raw_o        = head_o(x)                        (chained: times raw of the head's condition)
    p_o          = calibration_o(raw_o)              (:mod:`ranker.calibration`)
    p_o          = min(p_o, p_previous objective)    the funnel holds after calibration too

The isotonic maps are fitted one objective at a time, so noise could let a calibrated deeper
stage pass the one before; the cap keeps ``P(purchase) <= P(cart) <= P(click)``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import lightgbm as lgb
import numpy as np

from crossrec import versions
from crossrec.vocabulary import OBJECTIVES
from ranker.calibration import Calibration
from ranker.errors import RankerError
from ranker.heads import base_margin
from ranker.rows import schema_hash

log = logging.getLogger(__name__)

FORMAT = "crossrec-ranker"
FORMAT_VERSION = 1
MODEL_FORMAT = versions.VersionFormat(
    name=FORMAT,
    version=FORMAT_VERSION,
    supported=(1,),
    noun="ranker model",
    error=RankerError,
)
PLOT = "reliability.png"


def head_file(name: str) -> str:
    return f"head-{name}.txt"


class RankerModel:
    """Calibrated objective probabilities from the heads of one model version.

    Build it with :meth:`load`; training builds it in memory from its boosters. ``manifest`` must
    hold ``version``, ``features``, ``schema_hash`` and ``heads`` (name -> ``{"given": ...}``);
    ``calibration``: objective -> map (identity where missing). ``num_threads``: LightGBM threads
    per call (default 1: the engine scores several requests at once).
    """

    def __init__(
        self,
        manifest: dict,
        boosters: Mapping[str, lgb.Booster],
        calibration: Mapping[str, Calibration] | None = None,
        path: Path | None = None,
        num_threads: int = 1,
    ) -> None:
        self.manifest = manifest
        self.path = path
        self.num_threads = num_threads
        self._boosters = dict(boosters)
        self._given = {name: manifest["heads"][name].get("given") for name in OBJECTIVES}
        self.calibration = {
            o: (calibration or {}).get(o) or Calibration.identity_map("not calibrated")
            for o in OBJECTIVES
        }

    @classmethod
    def load(cls, path: str | Path, verify: bool = True, num_threads: int = 1) -> RankerModel:
        """Open and check a model version (a version folder, or a root whose ``LATEST`` names
        one): format and version, every head file present with its recorded size and (``verify``)
        sha256, the feature list against its schema hash, each head's feature count and names
        against the list, the calibration knots. Raises :class:`RankerError` with a ``reason``
        (``missing``, ``incomplete``, ``format``, ``manifest``, ``checksum``, ``schema``)."""
        folder, manifest = versions.read_manifest(path, MODEL_FORMAT)
        manifest_path = folder / versions.MANIFEST
        for key in ("version", "features", "schema_hash", "heads", "calibration", "objectives"):
            if key not in manifest:
                raise RankerError(f"manifest records no {key!r}", manifest_path, "manifest")
        shapes = {"features": list, "heads": dict, "calibration": dict, "objectives": list}
        for key, kind in shapes.items():
            if not isinstance(manifest[key], kind):
                raise RankerError(
                    f"manifest's {key!r} is not a {kind.__name__}", manifest_path, "manifest"
                )
        if not all(isinstance(f, str) for f in manifest["features"]):
            raise RankerError("feature names must be strings", manifest_path, "manifest")
        if list(manifest["objectives"]) != list(OBJECTIVES):
            raise RankerError(
                f"model objectives {manifest['objectives']} are not this crossrec's "
                f"{list(OBJECTIVES)}",
                manifest_path,
                "schema",
            )
        features = list(manifest["features"])
        if schema_hash(features) != manifest["schema_hash"]:
            raise RankerError(
                f"feature list hashes to {schema_hash(features)}, manifest says "
                f"{manifest['schema_hash']}",
                manifest_path,
                "schema",
            )
        boosters = {}
        for name in OBJECTIVES:
            entry = manifest["heads"].get(name)
            if not isinstance(entry, dict) or "file" not in entry or "given" not in entry:
                raise RankerError(f"manifest lists no head {name!r}", manifest_path, "manifest")
            earlier = OBJECTIVES[: OBJECTIVES.index(name)]
            if entry["given"] is not None and entry["given"] not in earlier:
                raise RankerError(
                    f"head {name!r} is conditioned on {entry['given']!r}, not an earlier objective",
                    manifest_path,
                    "manifest",
                )
            file = versions.check_file(folder, entry, verify, MODEL_FORMAT)
            boosters[name] = _read_booster(file, features)
        calibration = {}
        for objective in OBJECTIVES:
            try:
                calibration[objective] = Calibration.from_manifest(
                    manifest["calibration"][objective]
                )
            except (KeyError, TypeError, ValueError) as exc:
                raise RankerError(
                    f"calibration of {objective!r}: {exc!r}", manifest_path, "manifest"
                ) from exc
        log.info("loaded ranker model %s from %s", manifest["version"], folder)
        return cls(manifest, boosters, calibration, folder, num_threads)

    @property
    def version(self) -> str:
        return self.manifest["version"]

    @property
    def features(self) -> tuple[str, ...]:
        """The feature names, in the column order :meth:`predict` expects."""
        return tuple(self.manifest["features"])

    @property
    def schema_hash(self) -> str:
        return self.manifest["schema_hash"]

    @property
    def objectives(self) -> tuple[str, ...]:
        return OBJECTIVES

    @property
    def boosters(self) -> dict[str, lgb.Booster]:
        """Head name -> its LightGBM booster (to read, not to change)."""
        return dict(self._boosters)

    @property
    def trained_on(self) -> dict:
        """What the trainer was told about the data (index version, data window, ...)."""
        return dict(self.manifest.get("trained_on", {}))

    @property
    def index_version(self) -> str | None:
        """The index version the model was trained for (its features came from it); None when
        the trainer was not told."""
        return self.trained_on.get("index_version")

    def predict(
        self, features: np.ndarray, objectives: Iterable[str] | None = None
    ) -> dict[str, np.ndarray]:
        """Objective -> (n,) float64 calibrated probability, for an (n, F) feature matrix in the
        order of :attr:`features` (converted to float32, NaN meaning missing). Deterministic.
        ``objectives``: compute only these and the ones before them along the funnel (each head
        costs a pass over every tree; a click-only blend needs one head). Raises
        :class:`RankerError` (reason ``schema``) for a matrix of another width."""
        wanted = OBJECTIVES if objectives is None else _funnel_prefix(objectives)
        raw = self.uncalibrated(features, wanted)
        out: dict[str, np.ndarray] = {}
        previous = None
        for objective in wanted:
            p = self.calibration[objective].apply(raw[objective])
            out[objective] = p if previous is None else np.minimum(p, previous)
            previous = out[objective]
        return out

    def uncalibrated(
        self, features: np.ndarray, objectives: tuple[str, ...] = OBJECTIVES
    ) -> dict[str, np.ndarray]:
        """Objective -> (n,) float64 probability before calibration (chained heads multiplied),
        for ``objectives`` (a prefix of the funnel)."""
        x = self._matrix(features)
        out: dict[str, np.ndarray] = {}
        for objective in objectives:
            p = self._head(objective, x, contributions=False)
            given = self._given[objective]
            out[objective] = p if given is None else p * out[given]
        return out

    def contributions(self, features: np.ndarray, objective: str) -> np.ndarray:
        """(n, F + 1) per-feature contributions (the last column: the bias) to ``objective``.

        LightGBM's exact tree contributions (``pred_contrib``) of each head behind the objective,
        each in its own log-odds space, summed: *additive log-odds contributions along the funnel*.
        For ``click`` (or any independent head) a row's sum is the head's log-odds exactly. For a
        chained ``purchase`` it is ``logit P(click) + logit P(cart | click) + logit P(purchase |
        cart)``, which orders and explains like the chain but is not ``logit P(purchase)``, and
        ignores calibration. About 100 times slower than :meth:`predict`: for the final top items.
        """
        if objective not in OBJECTIVES:
            raise ValueError(f"unknown objective {objective!r}; objectives are {list(OBJECTIVES)}")
        x = self._matrix(features)
        total = np.zeros((len(x), len(self.features) + 1))
        head: str | None = objective
        while head is not None:
            total += self._head(head, x, contributions=True)
            head = self._given[head]
        return total

    def _matrix(self, features: np.ndarray) -> np.ndarray:
        x = np.asarray(features)
        if x.ndim != 2 or x.shape[1] != len(self.features):
            raise RankerError(
                f"feature matrix of shape {x.shape}; model {self.version} needs "
                f"(n, {len(self.features)}) in the order {list(self.features)}",
                self.path or "",
                "schema",
            )
        return np.ascontiguousarray(x, dtype=np.float32)

    def _head(self, name: str, x: np.ndarray, contributions: bool) -> np.ndarray:
        if len(x) == 0:
            return np.zeros((0, len(self.features) + 1)) if contributions else np.zeros(0)
        record = self.manifest["heads"][name]
        base = record.get("base")
        if base is None and record.get("objective") != "lambdarank":
            out = self._boosters[name].predict(
                x, num_threads=self.num_threads, pred_contrib=contributions
            )
            return np.asarray(out, dtype=np.float64)
        # The head's trees give a margin: a ranking head's score, or a binary head's trees on top
        # of a base margin (ranker.heads.base_margin). The base feature's share of a row's
        # log-odds is that feature's contribution, its intercept the bias's.
        raw = self._boosters[name].predict(
            x, num_threads=self.num_threads, raw_score=True, pred_contrib=contributions
        )
        raw = np.asarray(raw, dtype=np.float64)
        margin = base_margin(base, x, list(self.features))
        if not contributions:
            return 1.0 / (1.0 + np.exp(-(raw if margin is None else raw + margin)))
        if margin is not None:
            raw[:, self.features.index(base["feature"])] += margin - base["intercept"]
            raw[:, -1] += base["intercept"]
        return raw


def _funnel_prefix(objectives: Iterable[str]) -> tuple[str, ...]:
    """The objectives up to the deepest of ``objectives``, in funnel order."""
    positions = [OBJECTIVES.index(o) for o in objectives]  # ValueError for unknown names
    return OBJECTIVES[: max(positions) + 1] if positions else ()


def write_model(
    out_root: str | Path,
    version: str | None,
    boosters: Mapping[str, lgb.Booster],
    manifest: dict,
    plot: Callable[[Path], bool] | None = None,
) -> tuple[Path, dict]:
    """Write a model version atomically: the heads' text models, then (``plot(path)``, optional)
    the reliability plot, then the manifest (``manifest`` plus each head's file, size and sha256).
    Returns the version folder and the full manifest."""
    writer = versions.VersionWriter(MODEL_FORMAT, out_root, version)
    try:
        heads = {}
        for name, booster in boosters.items():
            booster.save_model(writer.path(head_file(name)))
            heads[name] = {**writer.entry(head_file(name)), **manifest["heads"].get(name, {})}
        files = {}
        if plot is not None and plot(writer.path(PLOT)):
            files["reliability_plot"] = writer.entry(PLOT)
        path = writer.commit({**manifest, "heads": heads, "files": files})
    except BaseException:
        writer.abort()
        raise
    log.info("wrote ranker model %s to %s", writer.version, path)
    return path, writer.manifest


def _read_booster(file: Path, features: list[str]) -> lgb.Booster:
    try:
        booster = lgb.Booster(model_file=str(file))
    except lgb.basic.LightGBMError as exc:
        raise RankerError(f"not a LightGBM model: {exc}", file, "format") from exc
    if booster.num_feature() != len(features):
        raise RankerError(
            f"head has {booster.num_feature()} features, the feature list {len(features)}",
            file,
            "schema",
        )
    if booster.feature_name() != features:
        raise RankerError(
            f"head's features {booster.feature_name()} differ from the feature list {features}",
            file,
            "schema",
        )
    return booster
