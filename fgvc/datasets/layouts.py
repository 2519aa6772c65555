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


def write_inaturalist(root: Path, year: int, num_classes: int = 4, per_class: int = 3,
                      seed: int = 0) -> None:
    """train_val<year>/<supercategory>/<category>/<file>.jpg, <split><year>.json, test<year>/."""
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
            file_name = f"train_val{year}/{supers[item.label % 3]}/{folder}/{name}"
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


def write_herbarium2020(root: Path, num_classes: int = 4, per_class: int = 2, seed: int = 0
                        ) -> None:
    """train/metadata.json + train/images/..., test/metadata.json (no annotations)."""
    categories = [{"id": 100 + c, "name": f"Plant {c}", "family": "F", "genus": "G"}
                  for c in range(num_classes)]
    docs = {"train": {"annotations": [], "categories": categories, "images": [], "info": {},
                      "licenses": [], "regions": []},
            "test": {"images": [], "info": {}, "licenses": []}}
    for item in fake_images(num_classes, {"train": per_class, "test": 1}, seed):
        sub = f"images/{item.label:03d}/{item.number}.jpg" if item.split == "train" else \
            f"images/{item.number}.jpg"
        _save(item.image, root / item.split / sub)
        image_id = item.number + (0 if item.split == "train" else 10_000)
        docs[item.split]["images"].append({"id": image_id, "file_name": sub,
                                           "width": item.image.size[0],
                                           "height": item.image.size[1]})
        if item.split == "train":
            docs["train"]["annotations"].append({"id": item.number, "image_id": image_id,
                                                 "category_id": 100 + item.label, "region_id": 0})
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
                        single_file: bool = False, labels_in_devkit: bool = False) -> None:
    """devkit/{cars_meta,cars_train_annos,cars_test_annos}.mat + cars_test_annos_withlabels.mat,
    or the single cars_annos.mat + car_ims/ distribution."""
    from scipy.io import savemat

    names = np.array([f"Make{c} Model{c} 2012" for c in range(num_classes)], dtype=object)
    rows: dict[str, list[dict]] = {"train": [], "test": []}
    for item in fake_images(num_classes, {"train": per_class, "test": per_class}, seed):
        fname = f"{item.number + 1:05d}.jpg"
        w, h = item.image.size
        row = {"bbox_x1": np.uint16(1), "bbox_y1": np.uint16(2), "bbox_x2": np.uint16(w - 1),
               "bbox_y2": np.uint16(h - 1), "class": np.uint8(item.label + 1)}
        if single_file:
            rel = f"car_ims/{item.split}_{fname}"
            _save(item.image, root / rel)
            rows[item.split].append({"relative_im_path": rel, **row,
                                     "test": np.uint8(item.split == "test")})
        else:
            _save(item.image, root / f"cars_{item.split}" / fname)
            rows[item.split].append({**row, "fname": fname})
    if single_file:
        savemat(root / "cars_annos.mat", {"annotations": _mat_struct(rows["train"] + rows["test"]),
                                          "class_names": names[None, :]})
        return
    devkit = root / "devkit"
    devkit.mkdir(parents=True, exist_ok=True)
    savemat(devkit / "cars_meta.mat", {"class_names": names[None, :]})
    savemat(devkit / "cars_train_annos.mat", {"annotations": _mat_struct(rows["train"])})
    unlabelled = [{k: v for k, v in r.items() if k != "class"} for r in rows["test"]]
    savemat(devkit / "cars_test_annos.mat", {"annotations": _mat_struct(unlabelled)})
    labelled_at = devkit if labels_in_devkit else root
    savemat(labelled_at / "cars_test_annos_withlabels.mat",
            {"annotations": _mat_struct(rows["test"])})


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
                   missing: int = 2) -> None:
    """species.txt, images.txt, test_images.txt (tab-separated, headers); ``missing`` listed
    images are never downloaded, as happens with dead URLs."""
    species = [(c + 1, f"Bird {c}", f"Avis {c}", f"Bird_{c}") for c in range(num_classes)]
    _write_lines(root / "species.txt", ["id\tcommon\tscientific\tdir"] +
                 ["\t".join(map(str, s)) for s in species])
    parts = [f"{p}_{axis}" for p in ("back", "beak", "belly") for axis in ("x", "y")]
    header = ["url", "md5", "path", "species_id", "bb_x1", "bb_y1", "bb_x2", "bb_y2", *parts]
    rows, tests = [], []
    for item in fake_images(num_classes, {"train": per_class, "test": 1}, seed):
        rel = f"{species[item.label][3]}/{item.split}_{item.number:04d}.jpg"
        if len(rows) >= missing:
            _save(item.image, root / "images" / rel)
        w, h = item.image.size
        rows.append([f"http://example.invalid/{rel}", _hash(rel), rel, str(item.label + 1),
                     "1", "2", str(w - 1), str(h - 1)] + ["0"] * len(parts))
        if item.split == "test":
            tests.append(rel)
    _write_lines(root / "images.txt", ["\t".join(header)] + ["\t".join(r) for r in rows])
    _write_lines(root / "test_images.txt", ["path"] + tests)


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
}
