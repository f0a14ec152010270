"""Complement adaptation: move items that shoppers engage with together across categories close.

Content vectors put *substitutes* together (another tent). Cross-category recommendation wants
*complements* (a sleeping bag for the tent), and only behaviour knows them. From events we take
cross-category co-engagement pairs (items in one session, in different categories, at most
``window`` steps apart) and train a behaviour embedding

    e_i = normalise(W c_i + r_i)

with an in-batch contrastive (InfoNCE) loss so that co-engaged pairs score higher than the other
pairs of their batch. ``W`` (content dim -> ``dim``) is shared by all items, so an item with no
events still gets a behaviour embedding from its content (``r_i = 0``): cold items land near the
complements of items that look like them. ``r_i`` is a per-item correction, L2-regularised, that
only items with behaviour move. The final vector is

    v_i = [sqrt(1 - share) * c_i ; sqrt(share) * e_i]

so ``v_i . v_j = (1 - share) cos(c_i, c_j) + share cos(e_i, e_j)``: content still separates
substitutes within a category, behaviour decides what is near across categories.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import polars as pl

from indexer.transitions import category_codes

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AdaptConfig:
    """``share`` is the behaviour block's weight in the inner product; ``epochs`` x pairs / batch
    optimiser steps (capped by ``max_steps``); ``temperature`` of the contrastive softmax."""

    dim: int = 64
    share: float = 0.8
    epochs: int = 10
    max_steps: int = 20_000
    batch_size: int = 256
    lr: float = 0.01
    temperature: float = 0.2
    residual_l2: float = 0.1
    window: int = 3
    max_pairs: int = 5_000_000
    holdout: float = 0.1
    seed: int = 0
    #: Where torch trains: "auto" (a CUDA device when torch sees one, else the CPU), "cpu",
    #: "cuda" or "cuda:N" (refused when torch sees no such device).
    device: str = "auto"


@dataclass
class Adaptation:
    """What was learnt: the projection ``W`` (content_dim, dim), per-item residuals (n, dim),
    and a report (pairs, steps, losses, held-out category hit rates)."""

    config: AdaptConfig
    projection: np.ndarray
    residual: np.ndarray
    report: dict = field(default_factory=dict)

    def behaviour(self, content: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
        """Behaviour embeddings of ``content`` vectors (residuals added for catalogue ``rows``)."""
        e = content @ self.projection
        if rows is not None:
            e += self.residual[rows]
        return _normalise(e)

    def apply(
        self, content: np.ndarray, rows: np.ndarray | None = None, chunk: int = 65_536
    ) -> np.ndarray:
        """Final item vectors ``(n, content_dim + dim)``, unit rows; see the module docstring.
        Written block by block into one float32 array: at 1M x 512 the stacked temporaries were
        several GB."""
        share = self.config.share
        n, d = content.shape
        out = np.empty((n, d + self.config.dim), dtype=np.float32)
        for lo in range(0, n, chunk):
            hi = min(lo + chunk, n)
            out[lo:hi, :d] = np.sqrt(1 - share) * content[lo:hi]
            out[lo:hi, d:] = np.sqrt(share) * self.behaviour(
                content[lo:hi], None if rows is None else rows[lo:hi]
            )
        return out


def cooccurrence_pairs(
    sessions: pl.DataFrame, window: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cross-category co-engagement pairs as catalogue row indices ``(a, b)`` plus each pair's
    session start time (epoch seconds, for a time split), from the frame of
    :func:`indexer.transitions.sessionise` (sorted by session, ts). Repeated events on one item
    collapse to one step."""
    session = sessions["session"].to_numpy()
    row = sessions["row"].to_numpy()
    ts = sessions["ts"].dt.epoch("s").to_numpy()
    if len(session) == 0:
        empty = np.empty(0, dtype=np.int64)
        return empty, empty, empty
    new_session = np.r_[True, session[1:] != session[:-1]]
    # Each event's session start: the time of its session's first event (rows are sorted by ts).
    start = ts[np.maximum.accumulate(np.where(new_session, np.arange(len(session)), 0))]
    keep = new_session | np.r_[True, row[1:] != row[:-1]]
    session, row, start = session[keep], row[keep].astype(np.int64), start[keep]
    cat = sessions["category"].to_numpy()[keep]
    a, b, t = [], [], []
    for off in range(1, window + 1):
        ok = (
            (session[:-off] == session[off:])
            & (cat[:-off] != cat[off:])
            & (row[:-off] != row[off:])
        )
        a.append(row[:-off][ok])
        b.append(row[off:][ok])
        t.append(start[:-off][ok])
    return np.concatenate(a), np.concatenate(b), np.concatenate(t)


def train_adaptation(
    content: np.ndarray,
    catalog: pl.DataFrame,
    sessions: pl.DataFrame,
    config: AdaptConfig = AdaptConfig(),
    progress: bool = False,
) -> Adaptation:
    """Learn the adaptation from the :func:`indexer.transitions.sessionise` frame of validated
    events; see the module docstring."""
    import torch
    import torch.nn.functional as F

    started = time.perf_counter()
    a, b, t = cooccurrence_pairs(sessions, config.window)
    if len(a) == 0:
        raise ValueError("events hold no cross-category co-engagement pairs to learn from")
    if config.holdout > 0 and t.min() < t.max():
        train = t < np.quantile(t, 1 - config.holdout)
    elif config.holdout > 0:  # no clock (one timestamp for all): hold out a random share instead
        train = np.random.default_rng([config.seed, 1]).random(len(t)) >= config.holdout
    else:
        train = np.ones(len(t), dtype=bool)
    rng = np.random.default_rng(config.seed)
    train_idx = np.flatnonzero(train)
    if len(train_idx) > config.max_pairs:
        train_idx = rng.choice(train_idx, config.max_pairs, replace=False)
    ta, tb = a[train_idx], b[train_idx]

    device = training_device(config.device)
    torch.manual_seed(config.seed)
    n, d = content.shape
    c = torch.from_numpy(np.ascontiguousarray(content, dtype=np.float32)).to(device)
    proj = torch.nn.Linear(d, config.dim, bias=False)
    residual = torch.nn.Embedding(n, config.dim, sparse=True)
    torch.nn.init.zeros_(residual.weight)
    proj, residual = proj.to(device), residual.to(device)
    opt_dense = torch.optim.Adam(proj.parameters(), lr=config.lr)
    opt_sparse = torch.optim.SparseAdam(list(residual.parameters()), lr=config.lr)
    # Fewer pairs than a batch: one smaller batch per epoch; under two pairs nothing to contrast.
    batch = min(config.batch_size, len(ta))
    labels = torch.arange(batch, device=device)
    itself = torch.eye(batch, dtype=torch.bool, device=device)
    steps, losses = 0, []
    steps_per_epoch = max(1, len(ta) // max(batch, 1))
    total = min(config.max_steps, config.epochs * steps_per_epoch) if batch >= 2 else 0
    bar = _progress(total, progress)
    while steps < total:
        order = rng.permutation(len(ta))
        for lo in range(0, len(order) - batch + 1, batch):
            ia = torch.from_numpy(ta[order[lo : lo + batch]]).to(device)
            ib = torch.from_numpy(tb[order[lo : lo + batch]]).to(device)
            ea = F.normalize(proj(c[ia]) + residual(ia), dim=1)
            eb = F.normalize(proj(c[ib]) + residual(ib), dim=1)
            logits = ea @ eb.T / config.temperature
            # The same item twice in a batch is not a negative of itself.
            same = (ib[None, :] == ib[:, None]) & ~itself
            logits = logits.masked_fill(same, float("-inf"))
            loss = (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2
            reg = config.residual_l2 * (
                residual(ia).pow(2).sum(1).mean() + residual(ib).pow(2).sum(1).mean()
            )
            opt_dense.zero_grad()
            opt_sparse.zero_grad()
            (loss + reg).backward()
            opt_dense.step()
            opt_sparse.step()
            losses.append(loss.detach())  # read once at the end: no device sync per step
            steps += 1
            bar.update(1)
            if steps >= total:
                break
    bar.close()
    losses = torch.stack(losses).cpu().tolist() if losses else []
    adaptation = Adaptation(
        config,
        proj.weight.detach().cpu().numpy().T.copy(),
        residual.weight.detach().cpu().numpy().copy(),
    )
    del (
        proj,
        residual,
        opt_dense,
        opt_sparse,
    )  # and with them the optimiser state: 2 x (items, dim) floats
    held_a, held_b = a[~train], b[~train]
    # Integer category codes: comparing a million Python strings per query row was most of the
    # check.
    categories = category_codes(catalog)[1].to_numpy()
    adapted = adaptation.apply(content, np.arange(n))
    adaptation.report = {
        "config": asdict(config),
        "pairs": len(a),
        "train_pairs": len(ta),
        "heldout_pairs": len(held_a),
        "items_with_behaviour": len(np.unique(np.concatenate([ta, tb]))),
        "steps": steps,
        "loss_first": round(float(np.mean(losses[: max(1, len(losses) // 20)])), 4)
        if losses
        else None,
        "loss_last": round(float(np.mean(losses[-max(1, len(losses) // 20) :])), 4)
        if losses
        else None,
        "heldout_category_hit_at_10": {
            "content": round(
                category_hit_rate(
                    content, categories, held_a, held_b, rng=np.random.default_rng(1)
                ),
                4,
            ),
            "adapted": round(
                category_hit_rate(
                    adapted, categories, held_a, held_b, rng=np.random.default_rng(1)
                ),
                4,
            ),
        },
        "seconds": round(time.perf_counter() - started, 2),
        "device": str(device),
    }
    log.info("adaptation: %s", adaptation.report)
    return adaptation


def training_device(name: str):
    """The torch device ``name`` (AdaptConfig.device) names; "auto": CUDA where torch sees it."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and (
        not torch.cuda.is_available() or (device.index or 0) >= torch.cuda.device_count()
    ):
        raise ValueError(f"adaptation device {name!r}: torch sees no such CUDA device here")
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"adaptation device {name!r}: use auto, cpu, cuda or cuda:N")
    return device


def category_hit_rate(
    vectors: np.ndarray,
    categories: np.ndarray,
    a: np.ndarray,
    b: np.ndarray,
    k: int = 10,
    sample: int = 500,
    rng: np.random.Generator | None = None,
) -> float:
    """For held-out co-engaged pairs (a, b): the share whose b's category is among the categories of
    a's ``k`` nearest neighbours outside a's own category (exact search over all ``vectors``)."""
    if len(a) == 0:
        return float("nan")
    rng = rng or np.random.default_rng(0)
    pick = rng.choice(len(a), min(sample, len(a)), replace=False)
    hits = 0
    # 32 query rows at a time: each holds a (32, items) score matrix and its argpartition.
    for lo in range(0, len(pick), 32):
        rows = pick[lo : lo + 32]
        scores = vectors[a[rows]] @ vectors.T
        scores[categories[a[rows]][:, None] == categories[None, :]] = -np.inf
        top = np.argpartition(-scores, k, axis=1)[:, :k]
        hits += int((categories[top] == categories[b[rows]][:, None]).any(axis=1).sum())
    return hits / len(pick)


def _normalise(x: np.ndarray) -> np.ndarray:
    return (x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)).astype(np.float32)


def _progress(total: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="adapt", unit="step", disable=not enabled)
