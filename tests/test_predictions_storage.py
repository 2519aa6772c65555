"""Predictions on disk: memory-mapped directory layout, legacy .npz, top-k storage, and the
streamed ensemble against the dense float64 computation."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from fgvc.inference.ensemble import EnsembleError, combine
from fgvc.inference.predictions import Predictions, PredictionsError, top_k_block
from fgvc.inference.submission import write_submission
from fgvc.recipes.recipe import SchemaError, parse_recipe


def random_preds(n=37, c=11, seed=0, ids=None) -> Predictions:
    rng = np.random.default_rng(seed)
    probs = rng.dirichlet(np.full(c, 0.3), size=n).astype(np.float16)
    ids = ids or [f"img{i}" for i in range(n)]
    return Predictions(ids, [str(100 + 3 * j) for j in range(c)], probs, {"model": f"m{seed}"})


def test_directory_round_trip_is_memory_mapped(tmp_path):
    p = random_preds()
    p.save(tmp_path / "preds")
    assert sorted(f.name for f in (tmp_path / "preds").iterdir()) == [
        "class_ids.npy", "ids.npy", "meta.json", "probs.npy"]
    assert [f.name for f in tmp_path.iterdir()] == ["preds"]  # no temporary left behind
    back = Predictions.load(tmp_path / "preds")
    assert isinstance(back.probs, np.memmap) and back.probs.dtype == np.float16
    assert back.ids == p.ids and back.class_ids == p.class_ids
    assert back.meta["model"] == "m0" and back.meta["layout"] == 1
    np.testing.assert_array_equal(back.probs, p.probs)
    # plain numpy reads it too, one row without the rest
    row = np.load(tmp_path / "preds" / "probs.npy", mmap_mode="r")[5]
    np.testing.assert_array_equal(row, p.probs[5])


def test_saving_again_replaces_the_directory(tmp_path):
    random_preds(seed=0).save(tmp_path / "p")
    random_preds(seed=1, n=4).save(tmp_path / "p")
    back = Predictions.load(tmp_path / "p")
    assert len(back.ids) == 4 and back.meta["model"] == "m1"
    assert [f.name for f in tmp_path.iterdir()] == ["p"]


def test_legacy_npz_is_still_read_and_never_written(tmp_path):
    p = random_preds()
    np.savez_compressed(tmp_path / "old.npz", ids=np.asarray(p.ids), class_ids=np.asarray(p.class_ids),
                        probs=p.probs, meta=np.asarray(json.dumps(p.meta)))
    old = Predictions.load(tmp_path / "old.npz")
    np.testing.assert_array_equal(old.probs, p.probs)
    assert old.ids == p.ids and old.top_k(3) == p.top_k(3)
    with pytest.raises(PredictionsError, match=r"new\.npz: predictions are written as a directory"):
        p.save(tmp_path / "new.npz")
    with pytest.raises(PredictionsError, match="not a predictions directory"):
        Predictions.load(tmp_path)


@pytest.mark.parametrize("k", [1, 3, 10, 11, 50])
def test_partial_sort_top_k_equals_a_stable_full_sort(k):
    rng = np.random.default_rng(k)
    block = rng.integers(0, 6, size=(200, 11)).astype(np.float32)  # many ties, at the k-th too
    indices, values = top_k_block(block, k)
    expected = np.argsort(-block, axis=1, kind="stable")[:, :k]
    np.testing.assert_array_equal(indices, expected)
    np.testing.assert_array_equal(values, np.take_along_axis(block, expected, 1))


def test_dense_top_k_is_streamed_in_blocks(monkeypatch):
    p = random_preds(n=50, c=7)
    expected = np.argsort(-p.probs.astype(np.float32), axis=1, kind="stable")[:, :4]
    monkeypatch.setattr("fgvc.inference.predictions.CHUNK_ELEMENTS", 7 * 3)  # 3 rows per block
    assert p.top_k(4) == np.asarray(p.class_ids)[expected].tolist()


def test_top_k_storage(tmp_path):
    p = random_preds()
    p.keep_top_k(3).save(tmp_path / "top3")
    assert sorted(f.name for f in (tmp_path / "top3").iterdir()) == [
        "class_ids.npy", "ids.npy", "meta.json", "top_indices.npy", "top_scores.npy"]
    kept = Predictions.load(tmp_path / "top3")
    assert kept.kept_top_k == 3 and kept.probs is None and kept.meta["keep_top_k"] == 3
    assert kept.top_k(3) == p.top_k(3) and kept.top_k(1) == p.top_k(1)
    dense_idx, dense_val = p.top_k_arrays(3)
    np.testing.assert_array_equal(kept.top_scores, dense_val)
    np.testing.assert_array_equal(kept.top_indices, dense_idx)
    with pytest.raises(PredictionsError, match=r"keeps only the top-3 classes .* 5 were asked"):
        kept.top_k(5)
    # a submission within k works from it; one asking for more is a clear error
    write_submission(kept, tmp_path / "s.csv", "inaturalist2018")
    rows = list(csv.reader((tmp_path / "s.csv").open()))
    assert rows[1] == [p.ids[0], " ".join(p.top_k(3)[0])]
    with pytest.raises(PredictionsError, match="keep_top_k"):
        write_submission(kept, tmp_path / "s5.csv", "inaturalist2017")
    with pytest.raises(EnsembleError, match=r"top3 keeps only the top-3 .* every class"):
        combine([("full", p), (str(tmp_path / "top3"), kept)])


def dense_reference(members, weights, how):
    total = np.zeros(members[0].probs.shape)
    ref_ids = members[0].ids
    for preds, w in zip(members, weights, strict=True):
        rows = preds.probs[[preds.ids.index(i) for i in ref_ids]].astype(np.float64)
        total += w * (np.log(np.clip(rows, 1e-8, None)) if how == "log_probs" else rows)
    total /= sum(weights)
    if how == "log_probs":
        total = np.exp(total - total.max(axis=1, keepdims=True))
    return total / total.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("how", ["probs", "log_probs"])
@pytest.mark.parametrize("step", [1, 4, None])
def test_streamed_ensemble_equals_the_dense_computation(tmp_path, how, step):
    a, b = random_preds(seed=1), random_preds(seed=2)
    order = np.random.default_rng(0).permutation(len(b.ids))  # b lists the images in another order
    b = Predictions([b.ids[i] for i in order], b.class_ids, np.ascontiguousarray(b.probs[order]),
                    b.meta)
    a.save(tmp_path / "a")
    b.save(tmp_path / "b")
    members = [("a", Predictions.load(tmp_path / "a")), ("b", Predictions.load(tmp_path / "b"))]
    expected = dense_reference([a, b], [2.0, 1.0], how)
    on_disk = combine(members, [2.0, 1.0], how, out=tmp_path / "ab", step=step)
    in_memory = combine(members, [2.0, 1.0], how, step=step)
    assert on_disk.ids == a.ids and isinstance(on_disk.probs, np.memmap)
    for result in (on_disk, in_memory):
        assert result.probs.dtype == np.float16
        # float16 storage: half a unit in the last place of values <= 1
        np.testing.assert_allclose(result.probs.astype(np.float64), expected, atol=5e-4, rtol=0)
    np.testing.assert_array_equal(on_disk.probs, in_memory.probs)
    assert on_disk.meta["combine"] == how and [m["name"] for m in on_disk.meta["ensemble"]] == ["a", "b"]


@pytest.mark.parametrize("keep,fmt,message", [
    (0, "generic", r"predict\.keep_top_k: must be >= 1"),
    (3, "inaturalist2017", r"predict\.keep_top_k: keeps 3 classes per image, but the "
                           r"inaturalist2017 submission lists 5"),
])
def test_keep_top_k_is_validated(tiny_recipe_dict, keep, fmt, message):
    data = {**tiny_recipe_dict, "predict": {**tiny_recipe_dict.get("predict", {}), "keep_top_k": keep},
            "submission": {**tiny_recipe_dict["submission"], "format": fmt}}
    with pytest.raises(SchemaError, match=message):
        parse_recipe(data, "r.yaml")
