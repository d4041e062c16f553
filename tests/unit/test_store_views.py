"""Store views: pools from the backbone contract, the patch-token view, bags of rows."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch

import vitlab
from tests.conftest import Interrupt, interrupt_after, write_images
from vitlab.errors import ConfigError, DataError
from vitlab.store import EmbeddingKey, EmbeddingStore
from vitlab.store.bags import Bags, make_bags

KW = dict(num_workers=0, progress=False, batch_size=4)




def _direct_tokens(backbone, folder, rows, layers):
    src = vitlab.load_source(f"folder:{folder}")
    tf = backbone.spec.preprocessing.build_transform()
    x = torch.stack([tf(src.load_image(i)) for i in rows])
    with torch.inference_mode():
        return backbone.forward_tokens(x, layers)


def _text_backbone(base):
    """The tiny ViT posing as an image–text model: ``embed`` = 2 * the first 8 CLS features."""

    class TextViT(type(base)):
        has_text = True

        def embed_image(self, out):
            return 2 * out.tokens[self.spec.depth - 1][:, 0, :8]

    return TextViT(base.model, base.spec)


# -- keys -------------------------------------------------------------------------------
def test_pooled_keys_keep_their_pre_views_layout_and_digest(tiny_backbone, image_folder, cache_dir):
    store = EmbeddingStore(cache_dir)
    src = vitlab.load_source(f"folder:{image_folder}")
    key = store.key_for(tiny_backbone, src, [-1, 0])
    d = key.to_dict()
    # the dict the key hashed before views existed (vitlab 0.1.0 at 3098b10): exactly these fields
    old = {"backbone": tiny_backbone.fingerprint(), "source": {"kind": "folder", "fingerprint": src.fingerprint,
                                                               "n": 18},
           "layers": [0, 2], "pools": ["cls", "mean"], "precision": "fp32", "schema": 1}
    assert d == old
    blob = json.dumps(old, sort_keys=True, separators=(",", ":"), default=str)
    assert key.digest == hashlib.sha256(blob.encode()).hexdigest()[:24]
    # regression pins: digests computed with the code at 3098b10 (before store views), same inputs
    hand = EmbeddingKey({"name": "demo:fmnist-vit", "weights_id": "ab"}, {"kind": "sample", "fingerprint": "cd"},
                        layers=(5,), pools=("cls", "mean"), precision="fp32")
    assert hand.digest == "6867b18b57a50a9de2124592"
    demo = vitlab.load_backbone("demo:fmnist-vit")
    sample = vitlab.load_source("sample:fashion-mnist")
    demo_key = store.key_for(demo, sample, -1)
    assert set(demo_key.to_dict()) == {"backbone", "source", "layers", "pools", "precision", "schema"}
    assert demo_key.to_dict()["pools"] == ["cls", "mean"] == list(demo.stored_pools)
    # Regression pin for the shipped assets (demo checkpoint identified by its content hash since the
    # deferred-loading change; sample fingerprint): if either asset changes on purpose, update these.
    assert (demo.weights_id, sample.fingerprint) == ("91fd6b65592a09f2e58cb9f819cef3ee",
                                                     "a077893f7369b57629b6d6cbd3e11891")
    assert demo_key.digest == "c3711548286dfaf7636fd57e"  # demo:fmnist-vit on sample:fashion-mnist, layer -1


def test_tokens_key_differs_by_view_and_dtype(tiny_backbone, image_folder, cache_dir):
    store = EmbeddingStore(cache_dir)
    src = vitlab.load_source(f"folder:{image_folder}")
    pooled = store.key_for(tiny_backbone, src, -1)
    t32 = store.key_for(tiny_backbone, src, -1, view="tokens")
    t16 = store.key_for(tiny_backbone, src, -1, view="tokens", token_dtype="float16")
    assert len({pooled.digest, t32.digest, t16.digest}) == 3
    assert t16.to_dict()["view"] == "tokens" and t16.to_dict()["token_dtype"] == "float16"
    assert t32.array_names() == ["L2.cls", "L2.mean", "L2.tokens"]


def test_stored_pools_come_from_the_backbone_and_embed_is_last_layer_only(tiny_backbone, image_folder, cache_dir):
    bb = _text_backbone(tiny_backbone)
    assert bb.stored_pools == ("cls", "mean", "embed")
    emb = vitlab.embed(bb, f"folder:{image_folder}", cache_dir=cache_dir, layers=[0, -1], **KW)
    assert sorted(emb.arrays) == ["L0.cls", "L0.mean", "L2.cls", "L2.embed", "L2.mean"]
    out = _direct_tokens(tiny_backbone, image_folder, [0, 7], [2])
    np.testing.assert_allclose(emb.get(-1, "embed")[[0, 7]], 2 * out.tokens[2][:, 0, :8].numpy(), atol=1e-5)
    assert emb.get(None, "embed").shape == (18, 8) and emb.get(0, "cls").shape == (18, 32)
    with pytest.raises(ConfigError, match=r"'embed' exists only for the last block \(2\).*not layer 0"):
        emb.get(0, "embed")
    plain = vitlab.embed(tiny_backbone, f"folder:{image_folder}", cache_dir=cache_dir, **KW)
    assert plain.digest != emb.digest and "L2.embed" not in plain.arrays
    with pytest.raises(ConfigError, match=r"'embed' is not available: .*vit_tiny.* has no image–text head"):
        plain.get(-1, "embed")
    # pool="embed" as the default pooling of the result
    assert vitlab.embed(bb, f"folder:{image_folder}", cache_dir=cache_dir, layers=[0, -1], pool="embed",
                        **KW).get().shape == (18, 8)
    with pytest.raises(ConfigError, match=r"'embed' needs an image–text model"):
        vitlab.embed(tiny_backbone, f"folder:{image_folder}", cache_dir=cache_dir, pool="embed", **KW)


# -- tokens view --------------------------------------------------------------------------
def test_tokens_equal_a_direct_forward(tiny_backbone, image_folder, cache_dir):
    emb = vitlab.embed(tiny_backbone, f"folder:{image_folder}", cache_dir=cache_dir, layers=[-1, 0],
                       view="tokens", **KW)
    out = _direct_tokens(tiny_backbone, image_folder, [0, 5, 17], [0, 2])
    tok = emb.tokens()
    assert isinstance(tok, np.memmap) and tok.dtype == np.float32 and tok.shape == (18, 16, 32)
    np.testing.assert_allclose(tok[[0, 5, 17]], out.patch_tokens(2).numpy(), atol=1e-5)
    np.testing.assert_allclose(emb.tokens(0)[[0, 5, 17]], out.patch_tokens(0).numpy(), atol=1e-5)
    assert emb.grid == (4, 4) and emb.num_prefix_tokens == 1 and emb.num_register_tokens == 0
    assert emb.input_size == (32, 32) and emb.view == "tokens" and emb.token_dtype == "float32"
    # the pooled vectors come along: mean pooling is the mean of the stored patch tokens
    np.testing.assert_allclose(emb.get(-1, "mean"), tok.mean(axis=1), atol=1e-5)
    manifest = json.loads((emb.path / "manifest.json").read_text())
    assert manifest["tokens"]["grid"] == [4, 4] and manifest["arrays"]["L2.tokens"] == [18, 16, 32]
    s = emb.summary()
    assert s["view"] == "tokens" and s["shape"] == [18, 16, 32] and s["pooled_shape"] == [18, 32]
    with pytest.raises(ConfigError, match=r"layer 1 was not extracted"):
        emb.tokens(1)


def test_registers_are_stripped_from_tokens(image_folder, cache_dir):
    from tests.conftest import BACKBONE_FACTORIES

    bb = BACKBONE_FACTORIES["timm-dinov2-reg"](None)  # CLS + 4 registers, 2x2 grid at 28 px
    emb = vitlab.embed(bb, f"folder:{image_folder}", cache_dir=cache_dir, view="tokens", **KW)
    out = _direct_tokens(bb, image_folder, [3], [-1])
    assert emb.num_prefix_tokens == 5 and emb.num_register_tokens == 4 and emb.grid == (2, 2)
    np.testing.assert_allclose(emb.tokens()[[3]], out.patch_tokens(bb.spec.depth - 1).numpy(), atol=1e-5)


def test_float16_tokens_are_half_the_size_and_rounded(tiny_backbone, image_folder, cache_dir):
    f32 = vitlab.embed(tiny_backbone, f"folder:{image_folder}", cache_dir=cache_dir, view="tokens", **KW)
    f16 = vitlab.embed(tiny_backbone, f"folder:{image_folder}", cache_dir=cache_dir, view="tokens",
                       token_dtype="float16", **KW)
    assert f16.digest != f32.digest and f16.tokens().dtype == np.float16
    np.testing.assert_array_equal(f16.tokens(), f32.tokens().astype(np.float16))  # round-to-nearest of the same
    np.testing.assert_allclose(f16.tokens().astype(np.float32), f32.tokens(), rtol=2 ** -10, atol=1e-7)
    size16, size32 = ((e.path / "L2.tokens.npy").stat().st_size for e in (f16, f32))
    assert abs(size16 / size32 - 0.5) < 0.01
    np.testing.assert_array_equal(f16.get(), f32.get())  # pooled vectors stay float32


def test_tokens_and_pooled_are_separate_entries_both_reused(tiny_backbone, image_folder, cache_dir):
    store = EmbeddingStore(cache_dir)
    call = lambda **k: store.get_or_compute(tiny_backbone, f"folder:{image_folder}", **KW, **k)  # noqa: E731
    pooled, tokens = call(), call(view="tokens")
    assert not pooled.from_cache and not tokens.from_cache and pooled.digest != tokens.digest
    again_p, again_t = call(), call(view="tokens")
    assert again_p.from_cache and again_t.from_cache
    assert (again_p.digest, again_t.digest) == (pooled.digest, tokens.digest)
    np.testing.assert_array_equal(again_t.tokens(), tokens.tokens())
    assert "L2.tokens" not in again_p.arrays
    with pytest.raises(ConfigError, match=r"pooled vectors only \(view='pooled'\); embed with view='tokens'"):
        again_p.tokens()
    assert sorted(e["view"] for e in store.entries()) == ["pooled", "tokens"]


def test_interrupted_tokens_entry_resumes_bit_identical(tiny_backbone, tmp_path, cache_dir):
    root = write_images(tmp_path / "many", n_per_class=10)  # 30 images, shards of 8
    store = EmbeddingStore(cache_dir)
    kw = dict(KW, shard_size=8, view="tokens", token_dtype="float16", layers=[0, -1])
    with pytest.raises(Interrupt):
        store.get_or_compute(tiny_backbone, f"folder:{root}", on_batch=interrupt_after(18), **kw)
    [entry] = (cache_dir / "embeddings").iterdir()
    assert len(list(entry.glob("shards/*.safetensors"))) == 2
    resumed = store.get_or_compute(tiny_backbone, f"folder:{root}", **kw)
    fresh = vitlab.embed(tiny_backbone, f"folder:{root}", cache_dir=tmp_path / "fresh", **kw)
    assert json.loads((resumed.path / "manifest.json").read_text())["resumed"] is True
    for name in ("L0.tokens", "L2.tokens", "L2.cls", "L0.mean"):
        assert (resumed.path / f"{name}.npy").read_bytes() == (fresh.path / f"{name}.npy").read_bytes()


def test_tokens_view_errors(tiny_backbone, image_folder, cache_dir):
    with pytest.raises(ConfigError, match=r"pixels:16 has no patch tokens.*use view='pooled'"):
        vitlab.embed("pixels:16", f"folder:{image_folder}", cache_dir=cache_dir, view="tokens", **KW)
    with pytest.raises(ConfigError, match=r"unknown view 'patches'; choose one of pooled, tokens"):
        vitlab.embed(tiny_backbone, f"folder:{image_folder}", cache_dir=cache_dir, view="patches", **KW)
    with pytest.raises(ConfigError, match=r"unknown token_dtype 'bfloat16'"):
        vitlab.embed(tiny_backbone, f"folder:{image_folder}", cache_dir=cache_dir, view="tokens",
                     token_dtype="bfloat16", **KW)
    with pytest.raises(ConfigError, match=r"token_dtype='float16' applies only to view='tokens'"):
        vitlab.embed(tiny_backbone, f"folder:{image_folder}", cache_dir=cache_dir, token_dtype="float16", **KW)
    assert not (cache_dir / "embeddings").exists() or not any((cache_dir / "embeddings").iterdir())


def test_cli_embed_view_tokens(image_folder, cache_dir):
    from typer.testing import CliRunner

    from vitlab.cli import app

    args = ["embed", "-b", "random:timm:vit_tiny_patch16_224", "-d", f"folder:{image_folder}", "--cache-dir",
            str(cache_dir), "--device", "cpu", "--num-workers", "0", "--batch-size", "6", "--view", "tokens",
            "--token-dtype", "float16", "--json", "--quiet"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    s = json.loads(res.stdout)
    assert s["view"] == "tokens" and s["shape"] == [18, 196, 192] and s["token_dtype"] == "float16"
    assert s["grid"] == [14, 14] and s["num_prefix_tokens"] == 1 and s["input_size"] == [224, 224]
    res = CliRunner().invoke(app, args[:-2])  # human summary, from the cache now
    assert res.exit_code == 0, res.output
    assert "tokens [18, 196, 192] float16" in " ".join(res.output.split())


# -- bags ---------------------------------------------------------------------------------
def test_make_bags_on_hand_made_keys():
    bags = make_bags(["b", "a", "b", 3, "a", "b"])
    assert isinstance(bags, Bags) and len(bags) == 3 and bags.ids == ["b", "a", "3"]
    assert bags.offsets.tolist() == [0, 3, 5, 6] and bags.order.tolist() == [0, 2, 5, 1, 4, 3]
    assert bags.sizes.tolist() == [3, 2, 1] and bags.bag(1).tolist() == [1, 4] and bags.bag(-1).tolist() == [3]
    X = np.arange(12.0).reshape(6, 2)
    feats = bags.features(X)
    assert [f.shape for f in feats] == [(3, 2), (2, 2), (1, 2)]
    np.testing.assert_array_equal(feats[1], X[[1, 4]])
    grouped = make_bags(["x", "x", "y"])  # already grouped: slices of X itself, no copy
    assert all(np.shares_memory(f, X[:3]) for f in grouped.features(X[:3]))
    empty = make_bags([])
    assert len(empty) == 0 and empty.offsets.tolist() == [0] and empty.features(np.zeros((0, 4))) == []
    with pytest.raises(DataError, match=r"row 'r2' \(row 2\) has no bag key \(None\)"):
        make_bags(["a", "b", None, None], ids=["r0", "r1", "r2", "r3"])
    with pytest.raises(DataError, match=r"row 1 has no bag key \(nan\)"):
        make_bags(["a", float("nan")])
    with pytest.raises(ConfigError, match=r"bag 3 is out of range; there are 3 bags"):
        bags.bag(3)
    with pytest.raises(ConfigError, match=r"X has 2 rows but the bags index 6"):
        bags.features(X[:2])


def test_embeddings_bags_by_group_and_by_keys(image_folder, tmp_path, tiny_backbone, cache_dir):
    rows = [f"imgs/bag/bag_0{i}.png,bag,p{i % 3}" for i in range(6)]
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,label,group\n" + "\n".join(rows) + "\n")
    emb = vitlab.embed(tiny_backbone, f"csv:{manifest}", cache_dir=cache_dir, view="tokens", **KW)
    bags = emb.bags()
    assert bags.ids == ["p0", "p1", "p2"] and bags.bag(0).tolist() == [0, 3]
    assert [f.shape for f in bags.features(emb.tokens())] == [(2, 16, 32)] * 3
    np.testing.assert_array_equal(bags.features(emb.get())[2], emb.get()[[2, 5]])
    by = emb.bags(by=np.array([1, 1, 2, 2, 2, 1]))
    assert by.ids == ["1", "2"] and by.sizes.tolist() == [3, 3]
    with pytest.raises(DataError, match=r"row 'imgs/bag/bag_03.png' \(row 3\) has no bag key"):
        emb.bags(by=["a", "a", "a", None, "b", "b"])
    with pytest.raises(ConfigError, match=r"by has 2 keys but these embeddings have 6 rows"):
        emb.bags(by=["a", "b"])
    plain = vitlab.embed(tiny_backbone, f"folder:{image_folder}", cache_dir=cache_dir, **KW)
    with pytest.raises(DataError, match=r"no group column, so there are no bags by 'group'"):
        plain.bags()
