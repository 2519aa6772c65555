"""Small stand-ins for the real datasets, written in each one's exact official layout.

The images are the synthetic creatures (real JPEGs, learnable), the metadata is byte-for-byte
the shape the authors ship: COCO JSON, MATLAB structs, space- or tab-separated lists. Tests
build them to check the adapters, and smoke runs (``fgvc table3 --smoke``, the competition
recipes) train on them end to end.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from fgvc.datasets.synthetic import SyntheticOptions, class_table, render_image


@dataclass(frozen=True)
class FakeImage:
    split: str
    label: int  # 0-based class index of the generator
    number: int  # running number within the split
    image: Image.Image


def fake_images(num_classes: int, per_class: dict[str, int], seed: int = 0,
                min_side: int = 40, max_side: int = 64) -> Iterator[FakeImage]:
    """Creatures whose texture follows the class; beyond the generator's eight looks, classes
    repeat looks (enough for layout tests, which need many category folders, not accuracy)."""
    looks = min(num_classes, len(class_table(99, seed)))
    opts = SyntheticOptions(seed=seed, num_classes=looks, min_side=min_side, max_side=max_side)
    traits = class_table(looks, seed)
    for split_index, (split, count) in enumerate(per_class.items()):
        for i in range(count * num_classes):
            label = i % num_classes
            rng = np.random.default_rng([seed, 100 + split_index, i])
            yield FakeImage(split, label, i, render_image(traits[label % looks], opts, rng))


def _save(image: Image.Image, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, quality=90)


def _hash(*parts) -> str:
    return hashlib.md5("/".join(map(str, parts)).encode()).hexdigest()


def _write_lines(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines))


INAT_IMAGE_FOLDERS = {2017: "train_val_images", 2018: "train_val2018", 2019: "train_val2019"}


def write_inaturalist(root: Path, year: int, num_classes: int = 4, per_class: int = 3,
                      seed: int = 0) -> None:
    """train_val_images/ (2017) or train_val<year>/, <supercategory>/<category>/<file>.jpg,
    <split><year>.json, test<year>/."""
    supers = ["Plantae", "Aves", "Insecta"]
    categories = []
    for c in range(num_classes):
        cat = {"id": c, "name": f"Species {c}", "supercategory": supers[c % 3]}
        if year >= 2018:
            cat.update(kingdom="Animalia", phylum="Chordata", **{"class": "Aves"}, order="O",
                       family="F", genus=f"Genus{c // 2}")
            if year == 2019:
                cat.pop("supercategory")
        categories.append(cat)
    docs = {s: {"info": {"year": year}, "licenses": [], "images": [], "annotations": [],
                "categories": categories} for s in ("train", "val")}
    docs["test"] = {"info": {"year": year}, "licenses": [], "images": []}
    counts = {"train": per_class, "val": max(1, per_class // 2), "test": max(1, per_class // 2)}
    for n, item in enumerate(fake_images(num_classes, counts, seed)):
        image_id = 1000 * (1 + ["train", "val", "test"].index(item.split)) + item.number
        name = f"{_hash(year, item.split, item.number)}.jpg"
        if item.split == "test":
            file_name = f"test{year}/{name}"
        else:
            folder = f"Species_{item.label}" if year == 2017 else str(item.label)
            file_name = f"{INAT_IMAGE_FOLDERS[year]}/{supers[item.label % 3]}/{folder}/{name}"
        _save(item.image, root / file_name)
        w, h = item.image.size
        docs[item.split]["images"].append({"id": image_id, "width": w, "height": h,
                                           "file_name": file_name, "license": 1,
                                           "rights_holder": "fgvc"})
        if item.split != "test":
            ann = {"id": n, "image_id": image_id, "category_id": item.label}
            if year == 2017:
                ann.update(bbox=[1.0, 2.0, w / 2, h / 2], area=w * h / 4, iscrowd=0)
            docs[item.split]["annotations"].append(ann)
    for split, doc in docs.items():
        (root / f"{split}{year}.json").write_text(json.dumps(doc))


def write_herbarium2019(root: Path, num_classes: int = 12, per_class: int = 2, seed: int = 0
                        ) -> None:
    """train/<category>/<id>.jpg with ids repeating across categories; test/<id>.jpg."""
    counts = {"train": per_class, "validation": 1, "test": 1}
    for item in fake_images(num_classes, counts, seed):
        if item.split == "test":
            _save(item.image, root / "test" / f"{item.number:05d}.jpg")
        else:
            _save(item.image, root / item.split / str(item.label) /
                  f"{item.number // num_classes:05d}.jpg")


def write_herbarium2020(root: Path, num_classes: int = 4, per_class: int = 2, seed: int = 0,
                        edition: int = 2020) -> None:
    """2020/2021: train/metadata.json + train/images/<nnn>/<nn>/<id>.jpg, test/metadata.json (no
    annotations), file names relative to the JSON's folder. 2022: train_metadata.json and
    test_metadata.json (a bare list) at the root, images under train_images/ and test_images/,
    keys image_id / category_id / scientificName, string image ids."""
    new = edition >= 2022
    categories = [{"category_id": 100 + c, "scientificName": f"Plant {c}", "family": "F",
                   "genus": "G", "species": f"s{c}"} if new else
                  {"id": 100 + c, "name": f"Plant {c}", "family": "F", "genus": "G"}
                  for c in range(num_classes)]
    docs: dict[str, dict] = {
        "train": {"annotations": [], "categories": categories, "images": [], "info": {},
                  "licenses": [], **({"genera": [], "institutions": []} if new else {"regions": []})},
        "test": {"images": [], "info": {}, "licenses": []}}
    for item in fake_images(num_classes, {"train": per_class, "test": 1}, seed):
        sub = (f"{item.label:03d}/{item.number // 10:02d}/{item.number}.jpg" if item.split == "train"
               else f"{item.number // 10:03d}/test-{item.number:06d}.jpg")
        folder = f"{item.split}_images" if new else f"{item.split}/images"
        _save(item.image, root / folder / sub)
        number = item.number + (0 if item.split == "train" else 10_000)
        image_id = f"{item.label:05d}__{item.number:03d}" if new else number
        entry = {"image_id" if new else "id": image_id, "file_name": sub if new else f"images/{sub}"}
        docs[item.split]["images"].append(entry if new else {**entry, "width": item.image.size[0],
                                                             "height": item.image.size[1]})
        if item.split == "train":
            docs["train"]["annotations"].append(
                {"genus_id": 1, "institution_id": 0, "category_id": 100 + item.label,
                 "image_id": image_id} if new else
                {"id": item.number, "image_id": image_id, "category_id": 100 + item.label,
                 "region_id": 0})
    if new:
        (root / "train_metadata.json").write_text(json.dumps(docs["train"]))
        (root / "test_metadata.json").write_text(json.dumps(docs["test"]["images"]))
        return
    for split, doc in docs.items():
        (root / split / "metadata.json").write_text(json.dumps(doc))


def _mat_struct(rows: list[dict]) -> np.ndarray:
    fields = list(rows[0])
    array = np.zeros((1, len(rows)), dtype=[(f, "O") for f in fields])
    for i, row in enumerate(rows):
        for f in fields:
            array[0, i][f] = row[f]
    return array


def write_stanford_cars(root: Path, num_classes: int = 4, per_class: int = 3, seed: int = 0,
                        single_file: bool = False, labels_in_devkit: bool = False,
                        kaggle_mirror: bool = False) -> None:
    """devkit/{cars_meta,cars_train_annos,cars_test_annos}.mat + cars_test_annos_withlabels.mat,
    or the single cars_annos.mat + car_ims/ distribution. ``kaggle_mirror``: the common Kaggle
    copy, car_devkit/devkit/, cars_train/cars_train/, cars_test/cars_test/ and cars_annos.mat
    at the root (listing car_ims/ paths that the mirror does not ship), no labels file."""
    from scipy.io import savemat

    names = np.array([f"Make{c} Model{c} 2012" for c in range(num_classes)], dtype=object)
    rows: dict[str, list[dict]] = {"train": [], "test": []}
    for item in fake_images(num_classes, {"train": per_class, "test": per_class}, seed):
        fname = f"{item.number + 1:05d}.jpg"
        w, h = item.image.size
        row = {"bbox_x1": np.uint16(1 + item.number % 3), "bbox_y1": np.uint16(2),
               "bbox_x2": np.uint16(w - 1), "bbox_y2": np.uint16(h - 1 - item.number % 5),
               "class": np.uint8(item.label + 1)}
        if single_file:
            rel = f"car_ims/{item.split}_{fname}"
            _save(item.image, root / rel)
            rows[item.split].append({"relative_im_path": rel, **row,
                                     "test": np.uint8(item.split == "test")})
        else:
            folder = f"cars_{item.split}/cars_{item.split}" if kaggle_mirror else f"cars_{item.split}"
            _save(item.image, root / folder / fname)
            rows[item.split].append({**row, "fname": fname})
    if single_file:
        savemat(root / "cars_annos.mat", {"annotations": _mat_struct(rows["train"] + rows["test"]),
                                          "class_names": names[None, :]})
        return
    devkit = root / ("car_devkit/devkit" if kaggle_mirror else "devkit")
    devkit.mkdir(parents=True, exist_ok=True)
    savemat(devkit / "cars_meta.mat", {"class_names": names[None, :]})
    savemat(devkit / "cars_train_annos.mat", {"annotations": _mat_struct(rows["train"])})
    unlabelled = [{k: v for k, v in r.items() if k != "class"} for r in rows["test"]]
    savemat(devkit / "cars_test_annos.mat", {"annotations": _mat_struct(unlabelled)})
    if kaggle_mirror:  # one list of all images, train and test interleaved, numbered car_ims/
        merged = [(r, is_test) for pair in zip(rows["train"], rows["test"], strict=True)
                  for r, is_test in zip(pair, (0, 1), strict=True)]
        annos = [{"relative_im_path": f"car_ims/{i + 1:06d}.jpg",
                  **{k: v for k, v in r.items() if k != "fname"}, "test": np.uint8(is_test)}
                 for i, (r, is_test) in enumerate(merged)]
        savemat(root / "cars_annos.mat", {"annotations": _mat_struct(annos),
                                          "class_names": names[None, :]})
        return
    labelled_at = devkit if labels_in_devkit else root
    savemat(labelled_at / "cars_test_annos_withlabels.mat",
            {"annotations": _mat_struct(rows["test"])})


def write_inaturalist2021(root: Path, num_classes: int = 4, per_class: int = 4, seed: int = 0,
                          full_train: bool = True, torchvision: bool = False) -> None:
    """train/, train_mini/ (half of train's images per class), val/ with category folders
    ``<5-digit id>_<Kingdom>_<Phylum>_<Class>_<Order>_<Family>_<Genus>_<species>``; train.json,
    train_mini.json, val.json, public_test.json + public_test/. ``full_train=False``: the
    mini-only copy. ``torchvision``: torchvision's folders 2021_train, 2021_train_mini,
    2021_valid and no JSON."""
    dirs = [f"{c:05d}_Animalia_Chordata_Aves_Order{c}_Family{c}_Genus{c}_species{c}"
            for c in range(num_classes)]
    categories = [{"id": c, "name": f"Genus{c} species{c}", "common_name": f"Bird {c}",
                   "supercategory": "Birds", "kingdom": "Animalia", "image_dir_name": dirs[c]}
                  for c in range(num_classes)]
    folder = {"train": "2021_train", "train_mini": "2021_train_mini", "val": "2021_valid"} \
        if torchvision else {"train": "train", "train_mini": "train_mini", "val": "val"}
    docs = {s: {"info": {"year": 2021}, "images": [], "annotations": [], "categories": categories}
            for s in ("train", "train_mini", "val")}
    docs["public_test"] = {"info": {"year": 2021}, "images": [], "categories": categories}
    mini_every = 2
    for item in fake_images(num_classes, {"train": per_class, "val": 1, "public_test": 1}, seed):
        uuid = _hash(2021, item.split, item.number)
        image_id = 100_000 * (1 + ["train", "val", "public_test"].index(item.split)) + item.number
        if item.split == "public_test":
            if not torchvision:
                _save(item.image, root / "public_test" / f"{uuid}.jpg")
                docs["public_test"]["images"].append({"id": image_id,
                                                      "file_name": f"public_test/{uuid}.jpg"})
            continue
        targets = [item.split]
        if item.split == "train" and (item.number // num_classes) % mini_every == 0:
            targets.append("train_mini")
        for split in targets:
            if split == "train" and not full_train:
                continue
            rel = f"{folder[split]}/{dirs[item.label]}/{uuid}.jpg"
            _save(item.image, root / rel)
            name = rel.replace(folder[split], split, 1)
            docs[split]["images"].append({"id": image_id, "file_name": name,
                                          "width": item.image.size[0], "height": item.image.size[1]})
            docs[split]["annotations"].append({"id": image_id, "image_id": image_id,
                                               "category_id": item.label})
    if torchvision:
        return
    for split, doc in docs.items():
        if split != "train" or full_train:
            (root / f"{split}.json").write_text(json.dumps(doc))


def write_inaturalist_torchvision(root: Path, year: int, keep_json: bool = False, **kw) -> None:
    """torchvision's ``INaturalist`` folder for 2017-2019: the official train/val images merged
    under ``<root>/<year>/``; with ``keep_json`` the official JSON files stay in the root."""
    write_inaturalist(root, year, **kw)
    (root / INAT_IMAGE_FOLDERS[year]).rename(root / str(year))
    for path in root.glob(f"*{year}.json"):
        if not keep_json or path.name.startswith("test"):
            path.unlink()
    for path in (root / f"test{year}").rglob("*.jpg"):
        path.unlink()
    (root / f"test{year}").rmdir()


def write_flowers102(root: Path, num_classes: int = 4, per_class: int = 2, seed: int = 0) -> None:
    """jpg/image_NNNNN.jpg, imagelabels.mat (labels 1..C), setid.mat (trnid, valid, tstid)."""
    from scipy.io import savemat

    labels, ids = [], {"trnid": [], "valid": [], "tstid": []}
    key = {"train": "trnid", "val": "valid", "test": "tstid"}
    for item in fake_images(num_classes, {"train": per_class, "val": per_class,
                                          "test": per_class * 2}, seed):
        number = len(labels) + 1
        labels.append(item.label + 1)
        ids[key[item.split]].append(number)
        _save(item.image, root / "jpg" / f"image_{number:05d}.jpg")
    savemat(root / "imagelabels.mat", {"labels": np.array(labels, dtype=np.uint8)[None, :]})
    savemat(root / "setid.mat", {k: np.array(v, dtype=np.uint16)[None, :] for k, v in ids.items()})


def _birds_lists(root: Path, items: list[tuple[str, str, str, bool, tuple]], classes: list[str]
                 ) -> None:
    """images.txt, image_class_labels.txt, train_test_split.txt, bounding_boxes.txt, classes.txt."""
    _write_lines(root / "images.txt", [f"{i} {rel}" for i, rel, _, _, _ in items])
    _write_lines(root / "image_class_labels.txt", [f"{i} {c}" for i, _, c, _, _ in items])
    _write_lines(root / "train_test_split.txt", [f"{i} {int(t)}" for i, _, _, t, _ in items])
    _write_lines(root / "bounding_boxes.txt",
                 [f"{i} " + " ".join(f"{v:.1f}" for v in box) for i, _, _, _, box in items])
    _write_lines(root / "classes.txt", classes)


def write_cub200(root: Path, num_classes: int = 4, per_class: int = 3, seed: int = 0) -> None:
    """CUB_200_2011/images/<NNN.Species>/<file>.jpg and its 1-based id lists."""
    base = root / "CUB_200_2011"
    folders = [f"{c + 1:03d}.Species_{c}" for c in range(num_classes)]
    items = []
    for item in fake_images(num_classes, {"train": per_class, "test": per_class}, seed):
        rel = f"{folders[item.label]}/Species_{item.label}_{item.split}_{item.number:04d}.jpg"
        _save(item.image, base / "images" / rel)
        w, h = item.image.size
        items.append((str(len(items) + 1), rel, str(item.label + 1), item.split == "train",
                      (1.0, 2.0, w - 3.0, h - 4.0)))
    _birds_lists(base, items, [f"{c + 1} {folders[c]}" for c in range(num_classes)])


def write_nabirds(root: Path, num_classes: int = 4, per_class: int = 3, seed: int = 0) -> None:
    """nabirds/images/<4-digit id>/<uuid>.jpg; non-contiguous leaf ids beside inner nodes."""
    base = root / "nabirds"
    leaf_ids = [295 + 7 * c for c in range(num_classes)]  # non-contiguous, like the real ones
    items = []
    for item in fake_images(num_classes, {"train": per_class, "test": per_class}, seed):
        uuid = _hash("nabirds", item.split, item.number)
        rel = f"{leaf_ids[item.label]:04d}/{uuid}.jpg"
        _save(item.image, base / "images" / rel)
        w, h = item.image.size
        items.append((uuid, rel, str(leaf_ids[item.label]), item.split == "train",
                      (0.0, 1.0, w - 1.0, h - 1.0)))
    classes = ["0 Birds", "1 Perching Birds"] + [f"{cid} Leaf Bird {cid}" for cid in leaf_ids]
    _birds_lists(base, items, classes)
    _write_lines(base / "hierarchy.txt", ["1 0"] + [f"{cid} 1" for cid in leaf_ids])
    _write_lines(base / "sizes.txt", [f"{u} 64 64" for u, *_ in items])


def write_oxford_pets(root: Path, num_classes: int = 4, per_class: int = 3, seed: int = 0) -> None:
    """images/<Breed_Name>_<n>.jpg and annotations/{list,trainval,test}.txt."""
    breeds = [("Abyssinian", 1), ("american_bulldog", 2), ("Bengal", 1), ("beagle", 2),
              ("Birman", 1), ("boxer", 2)][:num_classes]
    lines: dict[str, list[str]] = {"trainval": [], "test": []}
    for item in fake_images(num_classes, {"trainval": per_class, "test": per_class}, seed):
        breed, species = breeds[item.label]
        name = f"{breed}_{item.number + (0 if item.split == 'trainval' else 500)}"
        _save(item.image, root / "images" / f"{name}.jpg")
        lines[item.split].append(f"{name} {item.label + 1} {species} {item.label // 2 + 1}")
        if item.split == "trainval":  # head boxes ship for trainval images only
            w, h = item.image.size
            _write_lines(root / "annotations" / "xmls" / f"{name}.xml", [
                f"<annotation><filename>{name}.jpg</filename><size><width>{w}</width>"
                f"<height>{h}</height><depth>3</depth></size><object><name>"
                f"{'cat' if species == 1 else 'dog'}</name><bndbox><xmin>2</xmin><ymin>3</ymin>"
                f"<xmax>{w - 2}</xmax><ymax>{h - 3}</ymax></bndbox></object></annotation>"])
    comments = ["#Image CLASS-ID SPECIES BREED ID", "#ID: 1:37 Class ids", "#SPECIES: 1:Cat 2:Dog"]
    _write_lines(root / "annotations" / "trainval.txt", lines["trainval"])
    _write_lines(root / "annotations" / "test.txt", lines["test"])
    _write_lines(root / "annotations" / "list.txt", comments + lines["trainval"] + lines["test"])


def write_birdsnap(root: Path, num_classes: int = 4, per_class: int = 3, seed: int = 0,
                   missing: int = 2, images: str = "images") -> None:
    """species.txt, images.txt, test_images.txt (tab-separated, headers); ``missing`` listed
    images are never downloaded, as happens with dead URLs. ``images="download/images"`` is
    where the official download script puts them."""
    species = [(c + 1, f"Bird {c}", f"Avis {c}", f"Bird_{c}") for c in range(num_classes)]
    _write_lines(root / "species.txt", ["id\tcommon\tscientific\tdir"] +
                 ["\t".join(map(str, s)) for s in species])
    parts = [f"{p}_{axis}" for p in ("back", "beak", "belly") for axis in ("x", "y")]
    header = ["url", "md5", "path", "species_id", "bb_x1", "bb_y1", "bb_x2", "bb_y2", *parts]
    rows, tests = [], []
    for item in fake_images(num_classes, {"train": per_class, "test": 1}, seed):
        rel = f"{species[item.label][3]}/{item.split}_{item.number:04d}.jpg"
        if len(rows) >= missing:
            _save(item.image, root / images / rel)
        w, h = item.image.size
        rows.append([f"http://example.invalid/{rel}", _hash(rel), rel, str(item.label + 1),
                     "1", "2", str(w - 1), str(h - 1)] + ["0"] * len(parts))
        if item.split == "test":
            tests.append(rel)
    _write_lines(root / "images.txt", ["\t".join(header)] + ["\t".join(r) for r in rows])
    _write_lines(root / "test_images.txt", ["path"] + tests)


def write_parquet(root: Path, num_classes: int = 4, per_class: int = 3, seed: int = 0,
                  storage: str = "bytes", class_names: bool = True, row_group_size: int = 5) -> None:
    """A Hugging Face hub copy: ``data/{train,validation,test}-00000-of-00001.parquet`` with an
    ``image`` struct ``{bytes, path}`` (``storage="bytes"``: encoded JPEG inside; ``"path"``:
    bytes null and the path relative to the root, the JPEGs under ``images/``), a ``label``
    column (a ``ClassLabel`` in the ``huggingface`` schema metadata when ``class_names``) and an
    ``image_id`` column; or ``storage="arrow"``: ``save_to_disk``'s ``<split>/data-00000-of-00001.arrow``
    (streaming IPC format) with ``dataset_info.json`` beside it. The test split is unlabelled
    (label -1, as the hub stores hidden labels)."""
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    names = [f"Class {c}" for c in range(num_classes)]
    features = {"image": {"_type": "Image"}, "image_id": {"dtype": "string", "_type": "Value"},
                "label": ({"names": names, "_type": "ClassLabel"} if class_names
                          else {"dtype": "int64", "_type": "Value"})}
    rows: dict[str, list[dict]] = {"train": [], "validation": [], "test": []}
    for item in fake_images(num_classes, {"train": per_class, "validation": 1, "test": 1}, seed):
        name = f"{item.split}_{item.number:04d}.jpg"
        buf = io.BytesIO()
        item.image.save(buf, format="JPEG", quality=90)
        if storage == "path":
            _save(item.image, root / "images" / name)
        image = {"bytes": None if storage == "path" else buf.getvalue(),
                 "path": f"images/{name}" if storage == "path" else name}
        label = -1 if item.split == "test" else item.label
        rows[item.split].append({"image": image, "image_id": f"{item.split}-{item.number}",
                                 "label": label if class_names else (None if label < 0 else label + 10)})
    schema = pa.schema([("image", pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
                        ("image_id", pa.string()), ("label", pa.int64())])
    for split, split_rows in rows.items():
        table = pa.Table.from_pylist(split_rows, schema=schema)
        if class_names:
            table = table.replace_schema_metadata(
                {"huggingface": json.dumps({"info": {"features": features}})})
        if storage == "arrow":
            (root / split).mkdir(parents=True, exist_ok=True)
            with pa.ipc.new_stream(str(root / split / "data-00000-of-00001.arrow"),
                                   table.schema) as writer:
                writer.write_table(table, max_chunksize=row_group_size)
            (root / split / "dataset_info.json").write_text(json.dumps({"features": features}))
        else:
            (root / "data").mkdir(parents=True, exist_ok=True)
            pq.write_table(table, root / "data" / f"{split}-00000-of-00001.parquet",
                           row_group_size=row_group_size)


WRITERS: dict[str, Callable[..., None]] = {
    "inaturalist2017": lambda root, **kw: write_inaturalist(root, 2017, **kw),
    "inaturalist2018": lambda root, **kw: write_inaturalist(root, 2018, **kw),
    "inaturalist2019": lambda root, **kw: write_inaturalist(root, 2019, **kw),
    "herbarium2019": write_herbarium2019,
    "herbarium2020": write_herbarium2020,
    "stanford_cars": write_stanford_cars,
    "cub200": write_cub200,
    "flowers102": write_flowers102,
    "oxford_pets": write_oxford_pets,
    "nabirds": write_nabirds,
    "birdsnap": write_birdsnap,
    "inaturalist2021": write_inaturalist2021,
}
