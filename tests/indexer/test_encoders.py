"""Encoders and fusion: real models from local paths, missing modalities handled, vectors usable."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from PIL import Image

from indexer.attributes import AttributeEncoder
from indexer.encoders import ImageEncoder, TextEncoder, read_precomputed
from indexer.errors import DataValidationError, EncoderError
from indexer.fusion import Fusion, FusionPart


def test_text_encoder_separates_categories(text_encoder):
    v = text_encoder.encode_texts(
        [
            "ultralight 2-person dome tent",
            "backpacking tent, freestanding",
            "noise-cancelling wireless headphones",
        ]
    )
    assert v.shape == (3, 384)
    assert np.allclose(np.linalg.norm(v, axis=1), 1, atol=1e-5)
    assert v[0] @ v[1] > v[0] @ v[2] + 0.2
    assert text_encoder.describe()["model"] == "all-MiniLM-L6-v2"
    assert len(text_encoder.describe()["model_sha256"]) == 64


def test_text_encoder_joins_fields_and_times_itself(text_encoder):
    catalog = pl.DataFrame({"title": ["Tent", "Stove"], "description": ["For two.", None]})
    enc = TextEncoder(model_path=text_encoder.model_path, fields=("title", "description"))
    assert enc.texts(catalog) == ["Tent. For two", "Stove"]
    _vectors, present = enc.encode(catalog)
    assert present.all()
    assert enc.timing.items == 2
    assert 0 < enc.timing.model_s <= enc.timing.total_s


def test_the_pipelined_feed_gives_the_librarys_vectors_in_the_texts_order(text_encoder):
    """Tokenised ahead in threads, batched by length: the same vectors, each at its own text, as
    the library's encode; its forward passes are timed like the library's."""
    from indexer.text_feed import pipelined_encode

    texts = [f"{w} tent for {n} people" * (1 + n % 3) for n, w in enumerate(["red", "blue"] * 40)]
    texts[7] = "x"
    model = text_encoder._model
    expected = model.encode(texts, batch_size=16, normalize_embeddings=True)
    got = pipelined_encode(model, texts, batch_size=16, ahead=3, workers=2)
    assert got.shape == expected.shape
    assert np.abs(got - expected).max() < 1e-5
    assert np.allclose(np.linalg.norm(got, axis=1), 1, atol=1e-5)
    piped = TextEncoder(model_path=text_encoder.model_path, feed="pipelined", batch_size=16)
    assert (piped.pipelined, TextEncoder(model_path=text_encoder.model_path).pipelined) == (
        True,
        False,  # auto on a CPU: the library
    )
    assert TextEncoder(model_path=text_encoder.model_path).batch_size == 128
    vectors = piped.encode_texts(texts)
    assert np.abs(vectors - expected).max() < 1e-5
    assert 0 < piped.timing.model_s <= piped.timing.total_s
    with pytest.raises(ValueError, match="feed must be auto, library or pipelined"):
        TextEncoder(model_path=text_encoder.model_path, feed="fast")


def test_missing_text_model_is_a_clear_error(tmp_path):
    with pytest.raises(EncoderError, match="text model folder not found"):
        TextEncoder(model_path=str(tmp_path / "nope"))


def test_image_encoder_loads_tiny_clip_and_skips_missing_images(tiny_clip, tmp_path):
    rng = np.random.default_rng(0)
    for name in ("a.png", "b.png"):
        Image.fromarray((rng.random((40, 50, 3)) * 255).astype("uint8")).save(tmp_path / name)
    (tmp_path / "broken.png").write_bytes(b"not a png")
    catalog = pl.DataFrame(
        {
            "image": [
                str(tmp_path / "a.png"),
                None,
                str(tmp_path / "broken.png"),
                str(tmp_path / "b.png"),
                str(tmp_path / "gone.png"),
            ]
        }
    )
    enc = ImageEncoder(tiny_clip)
    vectors, present = enc.encode(catalog)
    assert present.tolist() == [True, False, False, True, False]
    assert vectors.shape == (5, enc.dim)
    assert enc.dim == 16
    assert np.allclose(np.linalg.norm(vectors[present], axis=1), 1, atol=1e-5)
    assert not vectors[~present].any()
    assert len(enc.unreadable) == 2


def test_attribute_encoder_is_deterministic_and_hierarchical():
    catalog = pl.DataFrame(
        {
            "category": ["A > B > C", "A > B > C", "A > B > D", "A > E > F", "X > Y > Z"],
            "brand": ["b1", "b2", "b1", None, "b1"],
            "price": [10.0, 12.0, 10.0, None, 1000.0],
        }
    )
    v, present = AttributeEncoder().encode(catalog)
    again, _ = AttributeEncoder().encode(catalog)
    assert present.all()
    assert np.array_equal(v, again)
    s = v @ v.T
    # Same leaf > same group > same department > nothing shared.
    assert s[0, 1] > s[0, 2] > s[0, 3] > abs(s[0, 4]) - 0.3
    assert s[0, 2] > s[1, 2]  # same brand counts


def test_fusion_weights_are_the_inner_product_mix():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((2, 8)).astype(np.float32)
    a /= np.linalg.norm(a, axis=1, keepdims=True)
    b = rng.standard_normal((2, 4)).astype(np.float32)
    b /= np.linalg.norm(b, axis=1, keepdims=True)
    fusion = Fusion((FusionPart("a", 8, 3.0), FusionPart("b", 4, 1.0)))
    fused = fusion.fuse({"a": (a, np.ones(2, bool)), "b": (b, np.ones(2, bool))})
    assert fused[0] @ fused[1] == pytest.approx((3 * a[0] @ a[1] + b[0] @ b[1]) / 4, abs=1e-5)
    # An item missing a part is compared on the parts it has.
    only_b = fusion.fuse({"a": (a, np.array([True, False])), "b": (b, np.ones(2, bool))})
    assert np.allclose(only_b[1, 8:], b[1], atol=1e-6)
    assert Fusion.from_manifest(fusion.to_manifest()) == fusion


def test_precomputed_vectors_align_by_item_id_and_reject_bad_ones(tmp_path):
    pl.DataFrame({"item_id": ["b", "a"], "vector": [[0.0, 2.0], [3.0, 4.0]]}).write_parquet(
        tmp_path / "v.parquet"
    )
    vectors, present = read_precomputed(tmp_path / "v.parquet", pl.Series(["a", "b", "c"]))
    assert present.tolist() == [True, True, False]
    assert np.allclose(vectors, [[0.6, 0.8], [0, 1], [0, 0]])
    pl.DataFrame(
        {"item_id": ["a", "b"], "vector": [[1.0, float("nan")], [1.0, 0.0]]}
    ).write_parquet(tmp_path / "bad.parquet")
    with pytest.raises(DataValidationError, match="row 1, column 'vector'"):
        read_precomputed(tmp_path / "bad.parquet", pl.Series(["a", "b"]))
    pl.DataFrame({"item_id": ["a", "b"], "vector": [[1.0, 0.0], [1.0]]}).write_parquet(
        tmp_path / "ragged.parquet"
    )
    with pytest.raises(DataValidationError, match="one non-zero length"):
        read_precomputed(tmp_path / "ragged.parquet", pl.Series(["a", "b"]))
