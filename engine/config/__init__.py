"""Engine configuration: one frozen dataclass per TOML table, each handed to the component it
configures (docs/configuration.md has the full list)::

    [arms]
    artifact = "/srv/crossrec/index"

    [store]
    path = "/var/lib/crossrec/events.sqlite"

    [retrieval.blend]
    ease = 0.8

An environment variable ``CROSSREC_<SECTION>__<FIELD>`` (``CROSSREC_RETRIEVAL__BLEND__EASE``)
overrides the file. Reading a file, the environment and refusing old flat keys is
:mod:`engine.config.file`; the range checks are :mod:`engine.config.check`. This module imports
nothing from the request path it configures.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

#: The learned item-item sources' default blend weights, judged on all three shop families at once
#: (BENCHMARKS.md, "Three shop families" and "A low-rank item-item source"): factors at 0.3 gain
#: 25% on the item-item family and cost no family more than 0.5%; 1.0 cost the baskets family 9%.
EASE_BLEND = 1.0
FACTORS_BLEND = 0.3


@dataclass(frozen=True)
class ServerConfig:
    """``[server]``: the gRPC endpoint and its worker pool (engine/api/server.py,
    engine/api/service.py)."""

    host: str = "127.0.0.1"
    port: int = 50051
    #: Threads for FAISS searches and store I/O (the event loop never blocks on them).
    workers: int = 4
    #: Calls that may wait for a worker; past workers + max_queued in flight, a call gets
    #: RESOURCE_EXHAUSTED at once.
    max_queued: int = 32
    #: Threads inside one faiss search or numpy BLAS call. 1 by default: per-request shard searches
    #: are small, and requests already run in parallel on the workers.
    faiss_threads: int = 1
    #: Prometheus metrics port; 0 = no metrics endpoint.
    metrics_port: int = 0
    #: Seconds between maintenance passes (retention of events and impressions).
    maintenance_interval_s: float = 3600.0
    #: Engine processes serving the one port (SO_REUSEPORT; engine/api/processes.py): past one
    #: process's share of the CPUs (the GIL), more processes add throughput. Each maps the same
    #: index files and shares the store; process i serves metrics on ``metrics_port + i``.
    processes: int = 1


@dataclass(frozen=True)
class LimitsConfig:
    """``[limits]``: what one call may ask (engine/api/validation.py); more gets
    INVALID_ARGUMENT."""

    max_k: int = 200
    max_recent_events: int = 200
    max_ingest_events: int = 5_000
    max_batch_requests: int = 100
    #: Items a RecommendBatch may ask for in all (its requests' k summed): at ~500 bytes an item
    #: with explanations, the response stays under max_message_bytes.
    max_batch_items: int = 5_000
    #: Items a RecommendBatch may ask explanations for (k summed over its requests with
    #: ``explain``): with a ranker an explained item costs ~100 predictions, and 5,000 of them took
    #: 2.4-2.8 s, past the default deadline.
    max_batch_explained_items: int = 1_000
    #: Entries in any one list field of a Recommend request (filters.exclude_item_ids,
    #: filters.brands, include_categories, exclude_categories, category_quotas).
    max_list_items: int = 1_000
    max_message_bytes: int = 4 * 1024 * 1024
    #: Largest body of a Recommend, GetStatus, DeleteUser or SwapVersion call (one request needs
    #: far less than a batch); only RecommendBatch and IngestEvents may use ``max_message_bytes``
    #: (the smaller of the two applies).
    max_request_bytes: int = 1024 * 1024
    #: Deadline applied when a client sets none (seconds), and the longest a call may run whatever
    #: deadline its client sets: with every list field capped (``max_list_items`` entries of at
    #: most 256 characters), this bounds the work one call can cost.
    default_deadline_s: float = 2.0
    max_deadline_s: float = 10.0


@dataclass(frozen=True)
class StoreConfig:
    """``[store]``: the event store and the key that pseudonymises user ids (engine/state/store.py,
    engine/state/pseudonym.py)."""

    #: SQLite event store (WAL). Created if missing.
    path: str = "crossrec-events.sqlite"
    #: Cap on the store's size in MB (0: none, the disk is the limit). A full store or disk
    #: refuses IngestEvents with RESOURCE_EXHAUSTED, storing nothing of that call; queries go on.
    max_mb: float = 0.0
    #: Events older than this many days are removed (every maintenance pass, and at start) and
    #: never count toward profiles; 0 keeps them for ever.
    event_retention_days: float = 0.0
    #: Secret for the keyed hash that pseudonymises user ids, at least 32 bytes. Given inline
    #: (``pseudonym_key``) or in a file; when neither is set, a random key is created once next to
    #: the store (mode 0600) - only while the store holds no events.
    pseudonym_key: str = field(default="", repr=False, metadata={"secret": True})
    pseudonym_key_file: str = ""

    def key_path(self) -> Path:
        """Where the pseudonym key file is (``pseudonym_key_file``, default next to the store)."""
        if self.pseudonym_key_file:
            return Path(self.pseudonym_key_file)
        return Path(self.path).with_suffix(".key")

    @property
    def shared(self) -> bool:
        """Whether ``path`` names a database several engines share (``postgresql://``)."""
        return self.path.startswith(("postgresql://", "postgres://"))

    def key(self, store_has_events: bool = False) -> bytes:
        """The pseudonym key (see the field docs and :func:`engine.state.pseudonym.load_key`)."""
        from engine.state.pseudonym import PseudonymKeyError, load_key

        if self.shared and not (
            self.pseudonym_key or (self.pseudonym_key_file and self.key_path().exists())
        ):
            raise PseudonymKeyError(
                "a shared store (store.path is a postgresql:// URL) needs store.pseudonym_key or "
                "an existing store.pseudonym_key_file, the same for every engine: a key made by "
                "one replica would pseudonymise users differently from the others"
            )
        return load_key(self.pseudonym_key, self.key_path(), store_has_events)


@dataclass(frozen=True)
class AuthConfig:
    """``[auth]``: bearer tokens with roles query / ingest / admin (engine/api/auth.py), inline as
    "role:token,role:token" and/or in a file of "role token" lines; none configured: no access
    control. Health and reflection stay open unless ``protect_health``."""

    tokens: str = field(default="", repr=False, metadata={"secret": True})
    tokens_file: str = ""
    protect_health: bool = False


@dataclass(frozen=True)
class TlsConfig:
    """``[tls]``: the server's certificate chain and key (PEM); with ``client_ca_file``, clients
    must present a certificate that CA signed. Empty: plaintext."""

    cert_file: str = ""
    key_file: str = ""
    client_ca_file: str = ""


@dataclass(frozen=True)
class ArmsConfig:
    """``[arms]``: the index and ranker versions served (engine/arms.py). Arm "a" answers everyone
    unless ``b_artifact`` is set; then ``b_share`` of users, by a keyed hash of the user's
    pseudonym and ``salt`` (a user stays in one arm; change the salt to redraw), get arm "b"."""

    #: Index version folder, or a root whose LATEST names one.
    artifact: str = ""
    #: Ranker model version folder, or a root whose LATEST names one (``crossrec train`` writes
    #: them); empty: the retrieval-only blend orders the candidates. The model must have been
    #: trained for the served index version (it names it), or loading refuses the pair.
    model: str = ""
    b_artifact: str = ""
    b_model: str = ""
    b_share: float = 0.5
    salt: str = ""
    #: Seconds between checks of the configured index and model roots' ``LATEST``; when either
    #: names a new version the arm swaps to it (verified first; a pair that fails is not retried
    #: until LATEST moves again). 0: swap only through the SwapVersion RPC.
    watch_latest_s: float = 0.0
    #: Where the pairs a SwapVersion pinned are kept across restarts (engine/pins.py); default
    #: next to a SQLite store, and none with a PostgreSQL store unless set here.
    pins_file: str = ""


@dataclass(frozen=True)
class RankerConfig:
    """``[ranker]``: how a served ranker model is used (ranker/model.py)."""

    #: Default blend of the model's calibrated objective probabilities (normalised to sum 1); a
    #: request's ``objective_weights`` replace it.
    objective_click: float = 1.0
    objective_cart: float = 0.0
    objective_purchase: float = 0.0
    #: Threads inside one model prediction (requests already run in parallel on the workers).
    threads: int = 1

    def objective_weights(self) -> dict[str, float]:
        return {
            "click": self.objective_click,
            "cart": self.objective_cart,
            "purchase": self.objective_purchase,
        }


@dataclass(frozen=True)
class FeedbackConfig:
    """``[feedback]``: the impression log (engine/feedback/impressions.py) and live attribution
    (engine/feedback/outcomes.py)."""

    #: SQLite file (default: next to the store, suffix ``.impressions.sqlite``).
    impression_log: str = ""
    #: Share of responses logged (0 = off); days kept; queue bound.
    impression_sample_rate: float = 1.0
    impression_retention_days: float = 90.0
    impression_queue: int = 10_000
    #: Cap on the impression log's size in MB (0: none); past it the oldest lists are dropped
    #: first (counted as ``dropped_for_size``). A log that cannot be opened (damaged, unwritable,
    #: a full disk) is reported and the engine serves without it.
    impression_log_max_mb: float = 0.0
    #: Events quoting a recommendation_id count within this many hours of the list; lists kept
    #: in memory for it.
    attribution_window_hours: float = 24.0
    attribution_lists: int = 50_000


@dataclass(frozen=True)
class RayConfig:
    """``[ray]``: shard search on Ray Serve (engine/retrieval/ray_shards.py): the shards in
    ``shard_groups`` groups, each a Serve application of ``group_replicas`` replicas with
    ``group_cpus`` CPUs each; 0 groups = every shard searched in this process (the default)."""

    shard_groups: int = 0
    group_replicas: int = 1
    group_cpus: float = 1.0
    #: A group's answer is awaited at most this long, and never beyond half of what the request
    #: has left; late groups' shards are named in Coverage.late_shards ("partial") or the request
    #: fails with DEADLINE_EXCEEDED ("fail").
    group_timeout_s: float = 0.1
    on_late: str = "partial"
    #: The cluster to join ("": a local Ray started by the engine; "auto", "ray://host:10001").
    address: str = ""


@dataclass(frozen=True)
class GpuConfig:
    """``[gpu]``: ``shards = true`` moves Flat and IVF shards (and the behaviour scans) onto the
    GPU, refused where faiss sees none; its searches are batched (engine/retrieval/batching.py),
    as ``batch_searches = true`` does on CPU shards. docs/configuration.md has every field."""

    shards: bool = False
    batch_searches: bool = False
    batch_window_ms: float = 0.0
    batch_max_calls: int = 1024

    @property
    def batched(self) -> bool:
        return self.shards or self.batch_searches


@dataclass(frozen=True)
class ProfileConfig:
    """``[profile]``: at most ``max_interests`` interest vectors, built from the user's newest
    ``history_events`` events; weights halve every ``half_life_days`` (engine/state/profile.py)."""

    max_interests: int = 4
    history_events: int = 500
    half_life_days: float = 14.0


@dataclass(frozen=True)
class Blend:
    """``[retrieval.blend]``: the retrieval-only order's weight of each source's per-request
    max-normalised score (engine/retrieval/ranking.py); ``crossrec tune`` fits them to a shop."""

    neighbours: float = 0.2
    popular: float = 1.0
    search: float = 0.02
    ease: float = EASE_BLEND
    factors: float = FACTORS_BLEND

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


@dataclass(frozen=True)
class RetrievalConfig:
    """``[retrieval]``: what the request path does with one profile
    (engine/retrieval/recommend.py)."""

    #: Smoothing of P(target | source) toward the target's overall session share (pseudo-sessions).
    transition_smoothing: float = 5.0
    #: Category affinity = user's weight + transition_weight x transition score + category_prior x
    #: the category's session share (the prior covers interests that appear out of nowhere).
    transition_weight: float = 0.5
    category_prior: float = 0.5
    #: Categories each slot group searches (best affinity first), of which the shard search covers
    #: the first ``search_categories``; candidates per (interest, shard).
    target_categories: int = 8
    search_categories: int = 6
    candidates_per_shard: int = 50
    #: Cross-category shard search: scan the adapted versions' behaviour block and re-rank this many
    #: candidates per query with the full vectors (0 = search the faiss shards directly).
    behaviour_rerank: int = 200
    #: The popular source's items per target category, the neighbour sources' seed items (the
    #: user's heaviest), and each source's cap on candidates.
    popular_per_category: int = 50
    neighbour_seeds: int = 50
    source_limit: int = 300
    #: Never recommend items the user already engaged with (false: only purchases are excluded).
    exclude_seen: bool = True
    #: The search source also scans the categories the user touched (costly at scale).
    search_touched: bool = False
    #: Diversity: at most ceil(share x k) items of one category / one brand while other candidates
    #: can fill the list (1 = no cap; engine/retrieval/diversify.py).
    max_category_share: float = 0.7
    max_brand_share: float = 0.7
    #: Share of k from categories the user never engaged with, when the request does not say;
    #: ``none`` (the default, or an empty environment value) lets the ranking alone decide. Ask
    #: for 1.0 per request (or here) for a purely cross-category list.
    default_cross_category_share: float | None = None
    blend: Blend = field(default_factory=Blend)


@dataclass(frozen=True)
class ExplorationConfig:
    """``[exploration]``: a share of lists shown slightly off the engine's order, each shown item
    logged with its probability (engine/retrieval/explore.py). Off by default. ``swap_share``:
    lists with one adjacent pair of the top ``swap_depth`` positions swapped (position-bias
    estimation). ``slot_share``: lists with one position from ``slot_from`` on given to one of the
    ``slot_pool`` best candidates below the list from categories it does not show. ``arms``: the
    A/B arms that explore, comma-separated."""

    swap_share: float = 0.0
    swap_depth: int = 4
    slot_share: float = 0.0
    slot_from: int = 2
    slot_pool: int = 20
    arms: str = "a,b"

    @property
    def active(self) -> bool:
        return self.swap_share > 0 or self.slot_share > 0

    @property
    def arm_names(self) -> tuple[str, ...]:
        return tuple(a.strip() for a in self.arms.split(",") if a.strip())


@dataclass(frozen=True)
class EngineConfig:
    """The whole configuration; each component gets its own section."""

    server: ServerConfig = field(default_factory=ServerConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)
    tls: TlsConfig = field(default_factory=TlsConfig)
    arms: ArmsConfig = field(default_factory=ArmsConfig)
    ranker: RankerConfig = field(default_factory=RankerConfig)
    feedback: FeedbackConfig = field(default_factory=FeedbackConfig)
    ray: RayConfig = field(default_factory=RayConfig)
    profile: ProfileConfig = field(default_factory=ProfileConfig)
    retrieval: RetrievalConfig = field(default_factory=RetrievalConfig)
    exploration: ExplorationConfig = field(default_factory=ExplorationConfig)
    gpu: GpuConfig = field(default_factory=GpuConfig)

    def __post_init__(self) -> None:
        from engine.config.check import check

        check(self)

    def pins_path(self) -> Path | None:
        """Where the pairs SwapVersion pinned are kept (engine/pins.py): next to a SQLite store;
        with a PostgreSQL store, ``pins_file`` only (None: pins are not kept across restarts)."""
        if self.arms.pins_file:
            return Path(self.arms.pins_file)
        if self.store.shared:
            return None
        return Path(self.store.path).with_suffix(".pins.json")

    def impression_log_path(self) -> str:
        """The impression log: ``feedback.impression_log``; by default a file next to a SQLite
        store, or the store's own database when it is PostgreSQL."""
        if self.feedback.impression_log:
            return self.feedback.impression_log
        if self.store.shared:
            return self.store.path
        return str(Path(self.store.path).with_suffix(".impressions.sqlite"))

    def with_changes(self, **sections: dict) -> EngineConfig:
        """A copy with some fields of some sections changed, checked like any configuration:
        ``config.with_changes(server={"port": 0}, store={"path": "/tmp/e.sqlite"})``."""
        unknown = set(sections) - {f.name for f in fields(self)}
        if unknown:
            raise ValueError(f"unknown configuration sections {sorted(unknown)}")
        return replace(
            self,
            **{name: replace(getattr(self, name), **values) for name, values in sections.items()},
        )

    @classmethod
    def load(cls, path: str | Path | None = None, overrides: dict | None = None) -> EngineConfig:
        """Defaults < TOML file < ``CROSSREC_<SECTION>__<FIELD>`` environment < ``overrides``
        (``{"server": {"port": 50052}}``; None values are skipped); :mod:`engine.config.file`."""
        from engine.config.file import load

        return load(cls, path, overrides)
