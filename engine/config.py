"""Engine configuration: a TOML file into a frozen dataclass, with environment overrides.

Every field can be set in the TOML file (top-level keys, same names) or by an environment variable
``CROSSREC_<FIELD>`` (upper case), which wins. Example::

    artifact = "/srv/crossrec/index"
    port = 50051
    store = "/var/lib/crossrec/events.sqlite"
    pseudonym_key_file = "/etc/crossrec/pseudonym.key"
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path

from engine.recommend import RecommenderSettings

# Retrieval defaults live in RecommenderSettings (one place); the flat fields below mirror them so
# that a TOML file or CROSSREC_* variable can set each one.
_R = RecommenderSettings()
_BLEND = dict(_R.blend)


@dataclass(frozen=True)
class EngineConfig:
    artifact: str = ""
    #: Ranker model version folder, or a root whose LATEST names one (``crossrec train`` writes
    #: them); empty: the retrieval-only blend orders the candidates. The model must have been
    #: trained for the served index version (it names it), or loading refuses the pair.
    model: str = ""
    #: Default blend of the model's calibrated objective probabilities (normalised to sum 1); a
    #: request's ``objective_weights`` replace it.
    objective_click: float = 1.0
    objective_cart: float = 0.0
    objective_purchase: float = 0.0
    #: Threads inside one model prediction (requests already run in parallel on the workers).
    ranker_threads: int = 1
    #: A/B split: a second index version (and its model) answering ``arm_b_share`` of users, by a
    #: keyed hash of the user's pseudonym and ``arm_salt`` (a user stays in one arm; change the salt
    #: to redraw). Empty: one arm, "a", answers everyone.
    arm_b_artifact: str = ""
    arm_b_model: str = ""
    arm_b_share: float = 0.5
    arm_salt: str = ""
    #: Impression log (engine/impressions.py): SQLite file (default: next to the store, suffix
    #: ``.impressions.sqlite``); share of responses logged (0 = off); days kept; queue bound.
    impression_log: str = ""
    impression_sample_rate: float = 1.0
    impression_retention_days: float = 90.0
    impression_queue: int = 10_000
    #: Cap on the impression log's size in MB (0: none); past it the oldest lists are dropped
    #: first (counted as ``dropped_for_size``). A log that cannot be opened (damaged, unwritable,
    #: a full disk) is reported and the engine serves without it.
    impression_log_max_mb: float = 0.0
    #: Live attribution (engine/outcomes.py): events quoting a recommendation_id count within this
    #: many hours of the list; lists kept in memory for it.
    attribution_window_hours: float = 24.0
    attribution_lists: int = 50_000
    host: str = "127.0.0.1"
    port: int = 50051
    #: SQLite event store (WAL). Created if missing.
    store: str = "crossrec-events.sqlite"
    #: Cap on the store's size in MB (0: none, the disk is the limit). A full store or disk
    #: refuses IngestEvents with RESOURCE_EXHAUSTED, storing nothing of that call; queries go on.
    store_max_mb: float = 0.0
    #: Secret for the keyed hash that pseudonymises user ids, at least 32 bytes. Given inline
    #: (``pseudonym_key``) or in a file; when neither is set, a random key is created once next to
    #: the store (mode 0600) - only while the store holds no events (engine/pseudonym.py).
    pseudonym_key: str = field(default="", repr=False)
    pseudonym_key_file: str = ""
    #: Access control (engine/auth.py): bearer tokens with roles query / ingest / admin, inline
    #: as "role:token,role:token" (e.g. CROSSREC_AUTH_TOKENS) and/or in a file of "role token"
    #: lines; none configured: no access control. Health and reflection stay open unless
    #: ``auth_protect_health``.
    auth_tokens: str = field(default="", repr=False)
    auth_tokens_file: str = ""
    auth_protect_health: bool = False
    #: TLS: the server's certificate chain and key (PEM); with ``tls_client_ca_file``, clients
    #: must present a certificate that CA signed. Empty: plaintext.
    tls_cert_file: str = ""
    tls_key_file: str = ""
    tls_client_ca_file: str = ""
    #: Events older than this many days are removed (hourly, and at start) and never count
    #: toward profiles; 0 keeps them for ever. The impression log has its own retention below.
    event_retention_days: float = 0.0
    #: Seconds between maintenance passes (retention of events and impressions).
    maintenance_interval_s: float = 3600.0
    #: Seconds between checks of the configured index and model roots' ``LATEST``; when either
    #: names a new version the arm swaps to it (verified first; a pair that fails is not retried
    #: until LATEST moves again). 0: swap only through the SwapVersion RPC.
    watch_latest_s: float = 0.0
    #: Prometheus metrics port; 0 = no metrics endpoint.
    metrics_port: int = 0
    #: Threads for FAISS searches and store I/O (the event loop never blocks on them).
    workers: int = 4
    #: Calls that may wait for a worker; past workers + max_queued in flight, a call gets
    #: RESOURCE_EXHAUSTED at once.
    max_queued: int = 32
    #: Threads inside one faiss search or numpy BLAS call. 1 by default: per-request shard searches
    #: are small, and requests already run in parallel on the workers; fan-out there only adds
    #: overhead.
    faiss_threads: int = 1
    #: Shard search on Ray Serve (engine/ray_shards.py): the shards in this many groups, each a
    #: Serve application of ``shard_group_replicas`` replicas with ``shard_group_cpus`` CPUs each;
    #: 0 = every shard searched in this process (the default). ``ray_address``: the cluster to
    #: join ("" : a local Ray started by the engine; "auto", "ray://host:10001", ...).
    shard_groups: int = 0
    shard_group_replicas: int = 1
    shard_group_cpus: float = 1.0
    #: A group's answer is awaited at most this long, and never beyond half of what the request
    #: has left; late groups' shards are named in Coverage.late_shards ("partial") or the request
    #: fails with DEADLINE_EXCEEDED ("fail").
    shard_group_timeout_s: float = 0.1
    shard_group_on_late: str = "partial"
    ray_address: str = ""
    #: Limits on requests; larger ones get INVALID_ARGUMENT.
    max_k: int = 200
    max_recent_events: int = 200
    max_ingest_events: int = 5_000
    max_batch_requests: int = 100
    #: Items a RecommendBatch may ask for in all (its requests' k summed): at ~500 bytes an item
    #: with explanations, the response stays under max_message_bytes.
    max_batch_items: int = 5_000
    #: Entries in any one list field of a Recommend request (filters.exclude_item_ids,
    #: filters.brands, include_categories, exclude_categories, category_quotas).
    max_list_items: int = 1_000
    max_message_bytes: int = 4 * 1024 * 1024
    #: Deadline applied when a client sets none (seconds), and the longest a call may run whatever
    #: deadline its client sets: with every list field capped (``max_list_items`` entries of at
    #: most 256 characters), this bounds the work one call can cost.
    default_deadline_s: float = 2.0
    max_deadline_s: float = 10.0
    #: Profiles: at most this many interest vectors, built from the user's newest ``history_events``
    #: events; weights halve every ``half_life_days``.
    max_interests: int = 4
    history_events: int = 500
    half_life_days: float = 14.0
    #: Retrieval: categories each slot group searches (best affinity first), of which the shard
    #: search covers the first ``search_categories``; candidates per (interest, shard).
    target_categories: int = _R.target_categories
    search_categories: int = _R.search_categories
    candidates_per_shard: int = _R.candidates_per_shard
    #: Cross-category shard search: scan the adapted versions' behaviour block and re-rank this many
    #: candidates per query with the full vectors (0 = search the faiss shards directly).
    behaviour_rerank: int = _R.behaviour_rerank
    #: Candidate sources: the popular source's items per target category, the behaviour-neighbour
    #: source's seed items (the user's heaviest), and each source's cap on candidates.
    popular_per_category: int = _R.popular_per_category
    neighbour_seeds: int = _R.neighbour_seeds
    source_limit: int = _R.source_limit
    #: The search source also scans the categories the user touched (costly at scale; see
    #: engine/sources.py).
    search_touched: bool = _R.search_touched
    #: Never recommend items the user already engaged with (false: only purchases are excluded).
    exclude_seen: bool = _R.exclude_seen
    #: Diversity: at most ceil(share x k) items of one category / one brand while other candidates
    #: can fill the list (1 = no cap; engine/diversify.py).
    max_category_share: float = _R.max_category_share
    max_brand_share: float = _R.max_brand_share
    #: Share of k from categories the user never engaged with, when the request does not say;
    #: ``none`` (the default) lets the ranking alone decide. Ask for 1.0 per request (or set it
    #: here) for a purely cross-category list. BENCHMARKS.md, "Item-level quality", has both
    #: figures.
    default_cross_category_share: float | None = None
    #: Smoothing of P(target | source) toward the target's overall session share, and the weight of
    #: transitions against the user's own category weights in category affinity.
    transition_smoothing: float = _R.smoothing
    #: Category affinity = user's weight + transition_weight x transition score + category_prior x
    #: the category's session share (the prior covers interests that appear out of nowhere).
    transition_weight: float = _R.transition_weight
    category_prior: float = _R.category_prior
    #: Retrieval-only blend: weight of each source's per-request max-normalised score (chosen with
    #: ``crossrec eval`` on the synthetic shop; BENCHMARKS.md, "Item-level quality").
    blend_neighbours: float = _BLEND["neighbours"]
    blend_popular: float = _BLEND["popular"]
    blend_search: float = _BLEND["search"]
    blend_ease: float = _BLEND["ease"]
    blend_factors: float = _BLEND["factors"]

    def __post_init__(self) -> None:
        from engine.settings_check import check

        check(self)

    def impression_log_path(self) -> Path:
        return (
            Path(self.impression_log)
            if self.impression_log
            else Path(self.store).with_suffix(".impressions.sqlite")
        )

    def objective_weights(self) -> dict[str, float]:
        return {
            "click": self.objective_click,
            "cart": self.objective_cart,
            "purchase": self.objective_purchase,
        }

    def recommender_settings(self) -> RecommenderSettings:
        return RecommenderSettings(
            smoothing=self.transition_smoothing,
            transition_weight=self.transition_weight,
            category_prior=self.category_prior,
            target_categories=self.target_categories,
            search_categories=self.search_categories,
            candidates_per_shard=self.candidates_per_shard,
            behaviour_rerank=self.behaviour_rerank,
            popular_per_category=self.popular_per_category,
            neighbour_seeds=self.neighbour_seeds,
            source_limit=self.source_limit,
            exclude_seen=self.exclude_seen,
            search_touched=self.search_touched,
            max_category_share=self.max_category_share,
            max_brand_share=self.max_brand_share,
            blend=(
                ("neighbours", self.blend_neighbours),
                ("popular", self.blend_popular),
                ("search", self.blend_search),
                ("ease", self.blend_ease),
                ("factors", self.blend_factors),
            ),
        )

    @classmethod
    def load(cls, path: str | Path | None = None, **overrides) -> EngineConfig:
        """Defaults < TOML file < ``CROSSREC_*`` environment < keyword ``overrides``."""
        values: dict = {}
        if path is not None:
            with open(path, "rb") as fh:
                data = tomllib.load(fh)
            unknown = set(data) - {f.name for f in fields(cls)}
            if unknown:
                raise ValueError(f"{path}: unknown settings {sorted(unknown)}")
            values.update(data)
        for f in fields(cls):
            env = os.environ.get(f"CROSSREC_{f.name.upper()}")
            if env is not None:
                values[f.name] = _parse(env, f.type)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return dataclasses.replace(cls(), **values)

    def key_path(self) -> Path:
        """Where the pseudonym key file is (``pseudonym_key_file``, default next to the store)."""
        if self.pseudonym_key_file:
            return Path(self.pseudonym_key_file)
        return Path(self.store).with_suffix(".key")

    def key(self, store_has_events: bool = False) -> bytes:
        """The pseudonym key (see the field docs and :func:`engine.pseudonym.load_key`)."""
        from engine.pseudonym import load_key

        return load_key(self.pseudonym_key, self.key_path(), store_has_events)


def _parse(text: str, type_name: str):
    if type_name.endswith("| None") and text.strip().lower() in ("", "none"):
        return None
    type_name = type_name.removesuffix(" | None")
    if type_name == "int":
        return int(text)
    if type_name == "float":
        return float(text)
    if type_name == "bool":
        if text.strip().lower() not in ("1", "0", "true", "false", "yes", "no"):
            raise ValueError(f"expected true or false, got {text!r}")
        return text.strip().lower() in ("1", "true", "yes")
    return text
