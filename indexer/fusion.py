"""Fusion: one item vector from its content parts (text, image, attributes, precomputed).

Method ``weighted-concat`` (version 1): each part's L2-normalised vector is scaled by
``sqrt(weight)``, parts are concatenated (an absent part contributes zeros), and the result is
L2-normalised. For two items that have every part, the inner product of their fused vectors is
``sum(w_m * cos_m) / sum(w_m)``: a weighted mean of the per-part cosines, so the weights read as
"how much each modality counts". An item missing a part is compared on the parts it has.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

METHOD = "weighted-concat"
VERSION = 1


@dataclass(frozen=True)
class FusionPart:
    name: str
    dim: int
    weight: float


@dataclass(frozen=True)
class Fusion:
    parts: tuple[FusionPart, ...]

    @property
    def dim(self) -> int:
        return sum(p.dim for p in self.parts)

    def fuse(self, blocks: dict[str, tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
        """``blocks[name] = (vectors (n, dim), present (n,))`` -> ``(n, self.dim)`` float32, unit
        rows."""
        n = len(next(iter(blocks.values()))[0])
        out = np.zeros((n, self.dim), dtype=np.float32)
        col = 0
        for part in self.parts:
            vectors, present = blocks[part.name]
            if vectors.shape != (n, part.dim):
                raise ValueError(
                    f"part {part.name!r}: expected shape {(n, part.dim)}, got {vectors.shape}"
                )
            out[present, col : col + part.dim] = vectors[present] * np.float32(np.sqrt(part.weight))
            col += part.dim
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        if (norms == 0).any():
            raise ValueError(f"{int((norms == 0).sum())} items have no content part at all")
        out /= norms
        return out

    def to_manifest(self) -> dict:
        return {
            "method": METHOD,
            "version": VERSION,
            "parts": [{"name": p.name, "dim": p.dim, "weight": p.weight} for p in self.parts],
            "dim": self.dim,
        }

    @classmethod
    def from_manifest(cls, data: dict) -> Fusion:
        if data.get("method") != METHOD or data.get("version") != VERSION:
            raise ValueError(f"unknown fusion {data.get('method')!r} v{data.get('version')}")
        return cls(
            tuple(FusionPart(p["name"], int(p["dim"]), float(p["weight"])) for p in data["parts"])
        )
