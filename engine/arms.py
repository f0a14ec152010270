"""What each A/B arm serves: loading and verifying (index version, ranker) pairs, swapping them
live, following the configured roots, and which arm answers which user.

An arm serves one :class:`Served` pair. Arm ``a`` answers everyone unless arm ``b`` is configured;
then a user's arm is a keyed hash of their pseudonym (sticky across restarts). A swap replaces an
arm's pair atomically: requests in flight finish on the pair they started with. A swap that names
a version pins the arm to it, across ``LATEST`` moves and restarts (:mod:`engine.pins`).
"""

from __future__ import annotations

import logging
import random
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from engine.config import ArmsConfig, GpuConfig, RankerConfig, RayConfig, RetrievalConfig
from engine.config.check import ConfigError
from engine.errors import FieldViolation, InvalidRequest, ModelMismatch, NotServing, SwapRefused
from engine.pins import Pin, Pins
from engine.retrieval.ranking import RETRIEVAL_ONLY, ModelRanker
from engine.retrieval.recommend import Recommender
from engine.state.pseudonym import hash_fraction
from indexer.artifact import IndexVersion, open_index

log = logging.getLogger(__name__)

#: The arm that answers everyone without an A/B split, and the second arm's name.
ARM_A, ARM_B = "a", "b"


@dataclass(frozen=True)
class Served:
    """One index version and its ranker, swapped as a unit."""

    version: IndexVersion
    recommender: Recommender
    loaded_at: float
    #: The model version folder it was loaded from ("" : retrieval only).
    model_path: str = ""

    @property
    def model_version(self) -> str:
        return self.recommender.model_version


class Arms:
    """The pairs the arms serve; thread-safe (swaps replace the whole table at once)."""

    def __init__(
        self,
        config: ArmsConfig,
        ranker: RankerConfig = RankerConfig(),
        retrieval: RetrievalConfig = RetrievalConfig(),
        ray: RayConfig = RayConfig(),
        pins: Pins | None = None,
        gpu: GpuConfig = GpuConfig(),
    ) -> None:
        """``config``: what each arm serves; ``ranker``: how its model is used; ``retrieval``: its
        request path's settings; ``ray``: where its shards are searched; ``pins``: the pairs
        swaps pinned (default: none, kept in memory); ``gpu``: Flat and IVF shards onto the GPU
        (refused when faiss sees none) and the batching of local searches."""
        if gpu.shards:
            from indexer import gpu as gpu_support

            if not gpu_support.available():
                raise ConfigError(
                    "[gpu] shards = true, but faiss sees no GPU here (faiss-cpu installed, or no "
                    "device): install crossrec[gpu] on a machine with one, or set shards = false"
                )
        self.gpu = gpu
        self.config = config
        self.pins = pins or Pins(None)
        self.ranker_config = ranker
        self.retrieval = retrieval
        self.ray = ray
        self._arms: dict[str, Served] = {}
        #: Arm -> the (index, model) targets that last failed to load (not retried until moved).
        self._refused: dict[str, tuple[str, str]] = {}
        self._swap_lock = threading.Lock()
        self._ray_started = False

    def load(self, path: str, model: str | None = None, arm: str = ARM_A) -> Served:
        """Open and verify an index version and its ranker model (``model``; default: the
        configured one for ``arm``, none when empty), then swap the pair in for ``arm``. A version
        or model that fails verification, or a model trained for another index version or feature
        list, raises and leaves the arm's current pair serving."""
        if arm not in (ARM_A, ARM_B):
            raise ValueError(f"arm must be {ARM_A!r} or {ARM_B!r}, got {arm!r}")
        remote = self.ray.shard_groups > 0
        # With remote shard groups this process loads no faiss shard: the groups search them.
        version = open_index(path, verify=True, gpu=self.gpu.shards, shards=() if remote else None)
        model_path = self.configured(arm)[1] if model is None else model
        folder = str(resolve_model(model_path)) if model_path else ""
        ranker = load_ranker(folder, version, self.ranker_config) if folder else None
        searcher = self._remote_shards(version) if remote else self._local_shards(version)
        recommender = Recommender(version, self.retrieval, ranker, searcher)
        served = Served(version, recommender, time.time(), folder)
        self.swap_in(served, arm)
        log.info(
            "arm %s: serving index %s (%d items) with ranker %s",
            arm,
            version.version,
            version.items.height,
            served.model_version,
        )
        return served

    def _local_shards(self, version: IndexVersion):
        """None (the recommender searches its own shards) unless searches are batched: always
        on GPU shards, which must not be searched from two threads at once
        (engine/retrieval/batching.py)."""
        gpu = self.gpu
        if not gpu.batched:
            return None
        from engine.retrieval.batching import BatchingShards
        from engine.retrieval.shard_search import LocalShards

        shard_of = version.items["shard"].to_numpy()
        device = exclusive = None
        if gpu.shards:  # the behaviour scans on the device too, where torch sees CUDA
            from indexer import gpu as gpu_support
            from indexer.adapt import training_device

            exclusive = gpu_support.lock
            device = "cuda" if training_device("auto").type == "cuda" else None
        local = LocalShards(version, shard_of, self.retrieval.behaviour_rerank, device=device)
        window_s = gpu.batch_window_ms / 1000
        return BatchingShards(local, window_s, gpu.batch_max_calls, exclusive)

    def _remote_shards(self, version: IndexVersion):
        """``version``'s shard groups deployed on Ray Serve and ready
        (engine/retrieval/ray_shards.py)."""
        from engine.retrieval.ray_shards import RayShards, connect

        ray = self.ray
        self._ray_started = connect(ray.address) or self._ray_started
        return RayShards.deploy(
            version,
            ray.shard_groups,
            ray.group_replicas,
            ray.group_cpus,
            self.retrieval.behaviour_rerank,
            ray.group_timeout_s,
            ray.on_late,
        )

    def swap_in(self, served: Served, arm: str = ARM_A) -> None:
        """Make ``served`` (already verified) answer ``arm``'s requests from now on; requests in
        flight finish on the pair they started with."""
        with self._swap_lock:
            self._arms = {**self._arms, arm: served}

    def swap(
        self, arm: str = ARM_A, artifact: str = "", model: str | None = None
    ) -> tuple[Served, bool]:
        """Load and serve a pair for ``arm`` while serving (the admin RPC). ``artifact`` empty:
        the arm's configured one; ``model`` None: the arm's configured model, "" : none. Returns
        the pair and whether it differs from the one it replaced. A pair that fails to load or
        verify raises :class:`SwapRefused` and the arm keeps its pair. Naming an artifact or a
        model pins the arm to the pair loaded (kept across restarts; the watcher leaves it);
        naming neither unpins it."""
        if arm not in self._arms:
            raise InvalidRequest(
                [FieldViolation("arm", f"no arm {arm!r} is served (arms: {sorted(self._arms)})")]
            )
        before = self._arms[arm]
        try:
            configured_index, configured_model = self.configured(arm)
            if artifact:
                confine(artifact, configured_index, "index")
            if model:
                confine(model, configured_model, "model")
            served = self.load(artifact or configured_index, model, arm)
            try:
                pinned = bool(artifact) or model is not None
                pin = Pin(str(served.version.path), served.model_path) if pinned else None
                # Written on every swap, so that the engine's other processes look again (a swap
                # to the configured roots may mean a LATEST that moved).
                self.pins.set(arm, pin, announce=True)
            except OSError as exc:
                self.swap_in(before, arm)
                raise OSError(f"the swap could not be kept for restarts ({exc})") from exc
        except Exception as exc:  # any failure to open, verify or pair: the old pair stays
            raise SwapRefused(
                f"arm {arm} keeps index {before.version.version} with {before.model_version}: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        changed = (served.version.version, served.model_version) != (
            before.version.version,
            before.model_version,
        )
        return served, changed

    def configured(self, arm: str) -> tuple[str, str]:
        """The arm's configured (artifact, model) paths."""
        c = self.config
        return (c.artifact, c.model) if arm == ARM_A else (c.b_artifact, c.b_model)

    def configured_targets(self, arm: str) -> tuple[str, str]:
        """(index version name, model version name or "") the arm's configured paths name now
        (a root's ``LATEST`` read afresh)."""
        index, model = self._configured_pair(arm)
        return index.name, Path(model).name if model else ""

    def refresh(self) -> list[str]:
        """Serve what each arm's configured roots name now (``LATEST`` moved: a new index version
        and/or model was published). A pair that fails is logged and not retried until the roots
        name another; returns the arms that changed."""
        changed = []
        for arm, served in self.current().items():
            if self.pins.get(arm) is not None:
                continue  # pinned by a SwapVersion: it serves that pair until unpinned
            try:
                targets = self.configured_targets(arm)
            except Exception as exc:
                log.warning("arm %s: cannot resolve the configured versions: %s", arm, exc)
                continue
            model = "" if served.model_version == RETRIEVAL_ONLY else served.model_version
            if targets == (served.version.version, model) or targets == self._refused.get(arm):
                continue
            try:
                self.swap(arm)
                changed.append(arm)
            except SwapRefused as exc:
                self._refused[arm] = targets
                log.error("arm %s: new versions %s not served: %s", arm, targets, exc)
        return changed

    def follow_pins(self) -> list[str]:
        """Serve what the pins file says now, when another process of this engine changed it (a
        SwapVersion that process answered): a pinned arm loads its pair, an unpinned one returns
        to its configured roots. Returns the arms that changed; a pair that fails is logged."""
        if not self.pins.reload():
            return []
        changed = []
        for arm, served in self.current().items():
            pin = self.pins.get(arm)
            try:
                if pin is None:
                    if (served.version.path.resolve(), served.model_path) == self._configured_pair(
                        arm
                    ):
                        continue
                    self.load(self.configured(arm)[0], arm=arm)
                elif (str(served.version.path), served.model_path) != (pin.index, pin.model):
                    self.load(pin.index, pin.model, arm)
                else:
                    continue
                changed.append(arm)
            except Exception as exc:
                log.error(
                    "arm %s: the pair another process swapped in cannot be served: %s", arm, exc
                )
        return changed

    def _configured_pair(self, arm: str) -> tuple[Path, str]:
        """The (index folder, model folder or "") the arm's configured paths name now."""
        from indexer.artifact import resolve_version

        artifact, model = self.configured(arm)
        return resolve_version(artifact).resolve(), str(resolve_model(model)) if model else ""

    def load_configured(self) -> None:
        """Load arm a from ``artifact``/``model`` and, when configured, arm b from
        ``b_artifact``/``b_model`` - or an arm's pinned pair, when a swap pinned one."""
        self._load_start(ARM_A)
        if self.config.b_artifact:  # b_share within [0, 1]: engine/config/check.py
            self._load_start(ARM_B)

    def _load_start(self, arm: str) -> None:
        pin = self.pins.get(arm)
        if pin is not None:
            index, model = self.configured(arm)
            try:
                confine(pin.index, index, "index")
                if pin.model:
                    confine(pin.model, model, "model")
                self.load(pin.index, pin.model, arm)
                log.warning(
                    "arm %s: serving the pair a SwapVersion pinned (%s, model %s); a SwapVersion "
                    "without paths returns it to the configured roots",
                    arm,
                    pin.index,
                    pin.model or "none",
                )
                return
            except Exception as exc:
                log.error(
                    "arm %s: the pinned pair (%s, model %s) cannot be served (%s); serving the "
                    "configured versions and dropping the pin",
                    arm,
                    pin.index,
                    pin.model or "none",
                    exc,
                )
                self.pins.set(arm, None)
        self.load(self.configured(arm)[0], arm=arm)

    def current(self) -> dict[str, Served]:
        """Arm -> its pair, as served now."""
        return dict(self._arms)

    def first(self) -> Served | None:
        """Arm a's pair (the only one without an A/B split), None before any load."""
        return self._arms.get(ARM_A)

    def share(self, arm: str) -> float:
        """The share of users ``arm`` answers."""
        if ARM_B not in self._arms:
            return 1.0 if arm == ARM_A else 0.0
        b = self.config.b_share
        return b if arm == ARM_B else 1.0 - b

    def arm_of(self, user_key: str) -> str:
        """The arm of a user (sticky: a keyed hash of the pseudonym and ``salt``); an
        anonymous request (empty key) draws one at random."""
        if ARM_B not in self._arms:
            return ARM_A
        u = hash_fraction(f"{self.config.salt}:{user_key}") if user_key else random.random()
        return ARM_B if u < self.config.b_share else ARM_A

    def for_key(self, user_key: str) -> tuple[str, Served]:
        """The arm answering the pseudonym ``user_key`` ("" anonymous) and its pair."""
        arms = self._arms
        if ARM_A not in arms:
            raise NotServing("no index version loaded")
        arm = self.arm_of(user_key)
        return arm, arms.get(arm, arms[ARM_A])

    def close(self) -> None:
        """Release what the pairs hold outside this process (remote shard groups), and stop a
        local Ray these arms started."""
        for served in self._arms.values():
            served.recommender.search.searcher.close()
        if self._ray_started:
            from engine.retrieval.ray_shards import disconnect

            disconnect()


def confine(path: str, configured: str, what: str) -> None:
    """Refuse (ValueError) a path a swap names outside the arm's configured root: the root itself
    when ``configured`` is one (it has ``LATEST``), else the folder holding the configured version.
    Links are resolved first, so none leads out."""
    if not configured:
        raise ValueError(
            f"no {what} root is configured for this arm: swap to configured paths only"
        )
    base = Path(configured).resolve()
    root = (
        base if (base / "LATEST").exists() or not (base / "manifest.json").exists() else base.parent
    )
    if not Path(path).resolve().is_relative_to(root):
        raise ValueError(f"the {what} {path} is not under the configured root {root}")


def resolve_model(path: str) -> Path:
    """A model version folder, or a root whose ``LATEST`` names one."""
    from crossrec import versions
    from ranker.model import MODEL_FORMAT

    return versions.resolve_version(path, MODEL_FORMAT)


def load_ranker(path: str, version: IndexVersion, config: RankerConfig) -> ModelRanker:
    """Load and verify the ranker model at ``path`` for ``version``; :class:`ModelMismatch` when it
    was trained for another index version or on other features."""
    from ranker.model import RankerModel

    model = RankerModel.load(path, num_threads=config.threads)
    paired = model.index_version
    if paired != version.version:
        raise ModelMismatch(
            f"ranker model {model.version} was trained for index version {paired!r}, "
            f"not {version.version!r}: train one for this index (crossrec train --index ...)"
        )
    try:
        return ModelRanker(model, config.objective_weights())
    except ValueError as exc:
        raise ModelMismatch(str(exc)) from exc
