"""An index version's manifest as typed values: what readers outside :mod:`indexer.artifact` use
instead of the JSON's string keys.

``IndexManifest.from_json`` reads what the build writes (``manifest.json``; format and version
checked by :mod:`crossrec.versions` when a folder is opened) and keeps every key it does not know in
``extra``, so ``to_json`` gives back the same document. The stage reports (adaptation,
co-engagement neighbours, EASE, factors, encode timing, build stages) stay free-form records: they
are read by people and by :meth:`IndexManifest.describe`, never by the request path.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from indexer.errors import ArtifactError

FORMAT = "crossrec-index"
FORMAT_VERSION = 1
SUPPORTED_FORMAT_VERSIONS = (1,)
_ENTRY = ("file", "bytes", "sha256")


def _rest(data: dict, known: tuple[str, ...]) -> dict[str, Any]:
    return {k: v for k, v in data.items() if k not in known}


@dataclass(frozen=True)
class FileEntry:
    """One file of the version and its checksum; ``extra``: rows, shape, dtype, items, links."""

    file: str
    bytes: int
    sha256: str
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: dict) -> FileEntry:
        return cls(data["file"], int(data["bytes"]), data["sha256"], _rest(data, _ENTRY))

    def to_json(self) -> dict:
        return {"file": self.file, "bytes": self.bytes, "sha256": self.sha256, **self.extra}


_SHARD = (*_ENTRY, "id", "category", "part", "count", "factory", "search_params")
_SHARD_OPTIONAL = ("recall_at_10", "build_seconds", "note")


@dataclass(frozen=True)
class ShardEntry:
    """One faiss shard: its file, the category (and part of it) it holds, how it was built."""

    file: str
    bytes: int
    sha256: str
    id: str
    category: str
    part: int
    count: int
    factory: str
    search_params: dict[str, Any]
    recall_at_10: float | None = None
    build_seconds: float | None = None
    #: Why an approximate index was replaced by an exact one ("" when it was not).
    note: str = ""

    @property
    def kind(self) -> str:
        """The index type, e.g. ``Flat``, ``HNSW``, ``IVF`` (the factory without its numbers)."""
        return self.factory.split(",")[0].rstrip("0123456789") or self.factory

    @classmethod
    def from_json(cls, data: dict) -> ShardEntry:
        return cls(
            data["file"],
            int(data["bytes"]),
            data["sha256"],
            data["id"],
            data["category"],
            int(data.get("part", 0)),
            int(data["count"]),
            data["factory"],
            dict(data.get("search_params", {})),
            data.get("recall_at_10"),
            data.get("build_seconds"),
            data.get("note", ""),
        )

    def to_json(self) -> dict:
        out = {
            "file": self.file,
            "bytes": self.bytes,
            "sha256": self.sha256,
            "id": self.id,
            "category": self.category,
            "part": self.part,
            "count": self.count,
            "factory": self.factory,
            "search_params": self.search_params,
            "recall_at_10": self.recall_at_10,
            "build_seconds": self.build_seconds,
        }
        return {**out, "note": self.note} if self.note else out


@dataclass(frozen=True)
class EventsWindow:
    """The events a version's statistics saw: how many, the first and last time (ISO 8601)."""

    events: int
    first: str
    last: str

    @property
    def last_us(self) -> int:
        """The newest event's time in microseconds since the epoch."""
        return int(datetime.fromisoformat(self.last).timestamp() * 1_000_000)


@dataclass(frozen=True)
class Sources:
    """The files a version was built from."""

    catalog: str
    events: str | None = None
    events_window: EventsWindow | None = None

    @classmethod
    def from_json(cls, data: dict | None) -> Sources | None:
        if data is None:
            return None
        w = data.get("events_window")
        window = (
            None if not w else EventsWindow(int(w.get("events", 0)), w.get("first", ""), w["last"])
        )
        return cls(data.get("catalog", ""), data.get("events"), window)

    def to_json(self) -> dict:
        w = self.events_window
        return {
            "catalog": self.catalog,
            "events": self.events,
            "events_window": None
            if w is None
            else {"events": w.events, "first": w.first, "last": w.last},
        }


# Top-level keys with a typed field (the rest go to ``extra``, in order).
_TOP = (
    "format",
    "format_version",
    "version",
    "files",
    "shards",
    "category_shards",
    "items",
    "dim",
    "encoders",
    "fusion",
    "sources",
    "encode_timing",
    "build",
)


@dataclass(frozen=True)
class IndexManifest:
    """The manifest of one index version."""

    version: str
    items: int
    dim: int
    files: dict[str, FileEntry] = field(default_factory=dict)
    shards: tuple[ShardEntry, ...] = ()
    #: Category -> its shard ids.
    category_shards: dict[str, tuple[str, ...]] = field(default_factory=dict)
    #: One record per content encoder (name, kind, model, dim, ...).
    encoders: tuple[dict[str, Any], ...] = ()
    #: How the content parts were fused (:meth:`indexer.fusion.Fusion.from_manifest`).
    fusion: dict[str, Any] = field(default_factory=dict)
    sources: Sources | None = None
    #: Encoder name -> its timing record.
    encode_timing: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: ``stages`` (name -> seconds, peak memory) and ``seconds_before_write``.
    build: dict[str, Any] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION
    #: Every other key as read: created_at, crossrec_version, metric, adaptation, neighbours,
    #: ease, factors, shard_policy (stage reports and settings).
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: dict) -> IndexManifest:
        """The typed manifest of ``data``; :class:`ArtifactError` for another format or an
        unsupported format version, or a document without version, items or dim."""
        if data.get("format", FORMAT) != FORMAT:
            raise ArtifactError(f"not an index manifest: {data['format']!r}", "manifest", "format")
        version = data.get("format_version", FORMAT_VERSION)
        if version not in SUPPORTED_FORMAT_VERSIONS:
            raise ArtifactError(
                f"index format version {version} is not supported", "manifest", "format"
            )
        try:
            return cls(
                version=data["version"],
                items=int(data["items"]),
                dim=int(data["dim"]),
                files={k: FileEntry.from_json(v) for k, v in data.get("files", {}).items()},
                shards=tuple(ShardEntry.from_json(s) for s in data.get("shards", ())),
                category_shards={k: tuple(v) for k, v in data.get("category_shards", {}).items()},
                encoders=tuple(data.get("encoders", ())),
                fusion=dict(data.get("fusion", {})),
                sources=Sources.from_json(data.get("sources")),
                encode_timing=dict(data.get("encode_timing", {})),
                build=dict(data.get("build", {})),
                format_version=version,
                extra=_rest(data, _TOP),
            )
        except (KeyError, TypeError, ValueError) as exc:
            message = f"malformed index manifest: {exc!r}"
            raise ArtifactError(message, "manifest", "manifest") from exc

    def to_json(self) -> dict:
        return {
            "format": FORMAT,
            "format_version": self.format_version,
            "version": self.version,
            "files": {k: v.to_json() for k, v in self.files.items()},
            "shards": [s.to_json() for s in self.shards],
            "category_shards": {k: list(v) for k, v in self.category_shards.items()},
            "items": self.items,
            "dim": self.dim,
            "encoders": list(self.encoders),
            "fusion": self.fusion,
            "sources": None if self.sources is None else self.sources.to_json(),
            "encode_timing": self.encode_timing,
            "build": self.build,
            **self.extra,
        }

    def report(self, stage: str) -> dict[str, Any] | None:
        """A build stage's report (``adaptation``, ``neighbours``, ``ease``, ``factors``), None
        when the stage did not run."""
        return self.extra.get(stage)

    def describe(self, stages: dict | None = None) -> list[str]:
        """A person's summary: items, encoders, shards by type, recall, the behaviour stages, time
        (``crossrec index inspect``); ``stages``: the build's stage timings (default: those the
        manifest recorded)."""
        lines = [
            f"version {self.version} (format {self.format_version}): {self.items:,} items, "
            f"dim {self.dim}, {len(self.category_shards)} categories in {len(self.shards)} shards",
            "encoders: "
            + ", ".join(
                f"{e['name']} ({e.get('model', e['kind'])}, {e['dim']}-d)" for e in self.encoders
            ),
            "fusion: "
            + ", ".join(f"{p['name']} x{p['weight']}" for p in self.fusion.get("parts", [])),
        ]
        by_type: dict[str, list[ShardEntry]] = {}
        for s in self.shards:
            by_type.setdefault(s.kind, []).append(s)
        for kind, group in sorted(by_type.items()):
            recalls = [s.recall_at_10 for s in group if s.recall_at_10 is not None]
            params = sorted({json.dumps(s.search_params) for s in group})
            lines.append(
                f"  {kind}: {len(group)} shards, {sum(s.count for s in group):,} items, "
                f"{sum(s.bytes for s in group) / 2**20:.1f} MB, "
                f"recall@10 min {min(recalls):.3f}, params {', '.join(params)}"
            )
        fallbacks = [s for s in self.shards if s.note]
        if fallbacks:
            lines.append(
                f"  {len(fallbacks)} shards built exact: "
                "their approximate index missed the recall target on "
                "cross-category queries (see 'note' in the manifest)"
            )
        lines += self._describe_behaviour()
        for name, t in self.encode_timing.items():
            lines.append(
                f"encode {name}: {t['items_per_s']:,.0f} items/s, "
                f"{t['outside_model_share']:.1%} of its time outside the model"
            )
        stages = self.build.get("stages", {}) if stages is None else stages
        if stages:
            lines.append(
                "stages: " + ", ".join(f"{k} {v['seconds']:.1f}s" for k, v in stages.items())
            )
            peak = max((v.get("peak_rss_mb", 0) for v in stages.values()), default=0)
            lines.append(f"peak memory {peak:,.0f} MB")
        return lines

    def _describe_behaviour(self) -> list[str]:
        lines = []
        adaptation = self.report("adaptation")
        if adaptation:
            r = adaptation["report"]
            hit = r["heldout_category_hit_at_10"]
            lines.append(
                f"adaptation: {r['pairs']:,} co-engagement pairs, "
                f"{r['items_with_behaviour']:,} items with behaviour; "
                f"held-out complement category hit@10 {hit['content']:.3f} (content) "
                f"-> {hit['adapted']:.3f} (adapted)"
            )
        elif self.report("privacy"):
            lines.append("adaptation: none (a private build): vectors are content only")
        else:
            lines.append("adaptation: none (no events given): vectors are content only")
        neighbours = self.report("neighbours")
        if neighbours:
            lines.append(
                f"neighbours: {neighbours['items_with_neighbours']:,} items "
                "with co-engagement neighbours "
                f"({neighbours['mean_neighbours_per_item_with_neighbours']:.1f} each on average), "
                f"{neighbours['other_category_share']:.0%} in another category"
            )
        ease = self.report("ease")
        if ease and ease.get("lambda") is not None:
            lines.append(
                f"learned item-item (EASE): {ease['items']:,} items, lambda {ease['lambda']:g}, "
                f"{ease['links']:,} neighbour links"
            )
        factors = self.report("factors")
        if factors and factors.get("links") is not None:
            lines.append(
                f"low-rank item-item (ALS fold-in): {factors['items']:,} items, "
                f"{factors['config']['factors']} factors, {factors['links']:,} neighbour links"
            )
        return lines + self._describe_privacy()

    def _describe_privacy(self) -> list[str]:
        p = self.report("privacy")
        if not p:
            return []
        bounds = ", ".join(f"{k} {v}" for k, v in p["bounds"].items())
        claim = (
            f"({p['epsilon']:g}, {p['delta']:g})-differentially private per shopper"
            if p["differentially_private"]
            else f"NOT differentially private: {', '.join(p['not_covered'])} not covered"
        )
        lines = [f"privacy: {claim}; noise {p['noise']}; bounds: {bounds}"]
        for r in p["statistics"]:
            cut = "" if r["threshold"] is None else f", published from {r['threshold']}"
            spent = f"  {r['name']}: rho {r['rho']:.4g} (epsilon {r['epsilon_alone']:.3g} alone), "
            if r.get("mechanism") == "exponential":
                lines.append(
                    f"{spent}a choice by the exponential mechanism (score sensitivity "
                    f"{r['sensitivity']:.3g}, Gumbel scale {r['scale']:.3g})"
                )
                continue
            lines.append(
                f"{spent}L2 sensitivity {r['sensitivity']:.3g}, noise sd {r['scale']:.3g}{cut}"
            )
        return lines
