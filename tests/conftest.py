from __future__ import annotations

import os

import pytest

# Nothing in the tests may reach a model hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def shop():
    """The default synthetic shop (5,000 items, seed 0), generated once."""
    from indexer.datagen.config import ShopConfig
    from indexer.datagen.shop import generate_shop

    return generate_shop(ShopConfig())


@pytest.fixture(scope="session")
def shop_stats(shop):
    from indexer.datagen.stats import shop_stats

    return shop_stats(shop.catalog.frame, shop.events, sorted(shop.complement_pairs()))


@pytest.fixture(scope="session")
def small_shop_dir(tmp_path_factory):
    """A 2,000-item synthetic shop on disk (seed 0)."""
    from indexer.datagen.config import ShopConfig
    from indexer.datagen.shop import generate_shop, write_shop

    out = tmp_path_factory.mktemp("shop") / "shop"
    write_shop(generate_shop(ShopConfig(items=2_000)), out)
    return out


@pytest.fixture(scope="session")
def text_encoder():
    """The packaged all-MiniLM-L6-v2, loaded once."""
    from indexer.encoders import TextEncoder

    return TextEncoder()


@pytest.fixture(scope="session")
def built_index(small_shop_dir, tmp_path_factory):
    """An index version of the small shop, built with its events (text + attributes, adapted)."""
    from indexer.build import BuildConfig, build_index

    root = tmp_path_factory.mktemp("index")
    report = build_index(small_shop_dir / "catalog.parquet", root, small_shop_dir / "events.parquet", BuildConfig(progress=False))
    return report


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory):
    """A seeded, randomly initialised CLIP (~10k parameters, 32 px) saved as a model folder that
    sentence-transformers loads through its real image path. Built here: nothing is downloaded."""
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

    torch.manual_seed(0)
    config = CLIPConfig(
        text_config=dict(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, max_position_embeddings=32, bos_token_id=0, eos_token_id=1),
        vision_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                           image_size=32, patch_size=8),
        projection_dim=16,
    )
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in "abcdefghijklmnopqrstuvwxyz":
        vocab[c] = len(vocab)
        vocab[c + "</w>"] = len(vocab)
    # transformers 5 ignores vocab_file/merges_file here: pass the vocabulary itself.
    tokenizer = CLIPTokenizer(vocab=vocab, merges=[], unk_token="<|endoftext|>", bos_token="<|startoftext|>",
                              eos_token="<|endoftext|>", pad_token="<|endoftext|>", model_max_length=32)
    processor = CLIPProcessor(
        image_processor=CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}),
        tokenizer=tokenizer,
    )
    path = tmp_path_factory.mktemp("tiny-clip")
    CLIPModel(config).save_pretrained(path)
    processor.save_pretrained(path)
    return str(path)
