"""What is known about each dataset before reading it: where it comes from, its official class
and split counts, its layout and licence, and the FixRes paper's figures on it.

``datasets/<name>.md`` is rendered from these cards (``python -m fgvc.datasets.cards`` rewrites
them; a test keeps them in step).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Card:
    title: str
    classes: int | None
    splits: dict[str, int]
    source: str
    layout: str
    licence: str
    paper: str = ""
    notes: list[str] = field(default_factory=list)
    # Every copy fgvc reads: variant -> "the root to give: what is under it"; detected from disk.
    variants: dict[str, str] = field(default_factory=dict)


CARDS: dict[str, Card] = {
    "synthetic": Card(
        "Synthetic fine-grained creatures (fgvc's embedded default)", 8,
        {"train": 800, "val": 1920, "test": 320},
        "Generated on first use by fgvc from a seed (`dataset.options`); nothing to download.",
        "images/{train,val,test}/<id>.jpg, train.csv and val.csv (id,path,category_id), "
        "test.csv (id,path), solution/test_labels.csv (held-back answers), classes.csv, meta.json",
        "Generated data, no licence restriction.",
        notes=["Classes differ only in fine detail: the kind of body texture and how fine it is; "
               "eye colour and tail shape are random distractors. Objects vary in size and "
               "position, images in size and aspect ratio.",
               "Split sizes above are for the default options (8 classes, 100/240/40 per class)."]),
    "inaturalist2017": Card(
        "iNaturalist 2017", 5089, {"train": 579184, "val": 95986},
        "https://github.com/visipedia/inat_comp (2017): train_val_images.tar.gz, "
        "train_val2017.zip, test2017.tar.gz, test2017.zip",
        "train_val_images/<supercategory>/<species>/<file>.jpg, test2017/<file>.jpg, "
        "train2017.json, val2017.json, test2017.json (COCO style; file_name relative to the root)",
        "Images under their photographers' licences (mostly CC BY-NC); see the competition page.",
        "Table 3, SENet-154: baseline 74.1, with FixRes 75.4 (best published then 67.3).",
        ["Official metric: top-5 error.",
         "Without the JSON files, torchvision's folder has no train/val split and no official "
         "ids (its folders are species names): the one split is `trainval`, category ids are "
         "torchvision's (position in sorted order) and an image's id is its path under 2017/ "
         "(`<supercategory>/<species>/<file>`: file names repeat across folders). Put "
         "train2017.json and val2017.json in the root to get both."],
        {"official": "the folder holding train2017.json and train_val_images/",
         "torchvision INaturalist(version='2017')": "torchvision's `root`, the folder holding 2017/ "
         "(train and val merged, <supercategory>/<species>/<file>); with the official JSON files "
         "beside 2017/, their splits and ids"}),
    "inaturalist2018": Card(
        "iNaturalist 2018", 8142, {"train": 437513, "val": 24426, "test": 149394},
        "https://github.com/visipedia/inat_comp (2018)",
        "train_val2018/<supercategory>/<category id>/<file>.jpg, test2018/<file>.jpg, "
        "train2018.json, val2018.json, test2018.json (COCO style)",
        "Images under their photographers' licences; see the competition page.",
        notes=["Official metric: top-3 error. Taxon names are obfuscated in the original release."],
        variants={"official": "the folder holding train2018.json and train_val2018/",
                  "torchvision INaturalist(version='2018')": "the folder holding 2018/ (train and val "
                  "merged: one split `trainval`; category ids from the numeric folders, image ids "
                  "the path under 2018/); with the official JSON files beside it, their splits"}),
    "inaturalist2019": Card(
        "iNaturalist 2019 (FGVC6, Kaggle inaturalist-2019-fgvc6)", 1010,
        {"train+val": 268243, "test": 35350},
        "https://www.kaggle.com/c/inaturalist-2019-fgvc6 (train_val2019.tar.gz, train2019.json, "
        "val2019.json, test2019.tar.gz, test2019.json)",
        "train_val2019/<supercategory>/<category id>/<file>.jpg, test2019/<file>.jpg, "
        "train2019.json, val2019.json, test2019.json (COCO style)",
        "Images under their photographers' licences; competition rules apply.",
        "Competition entry: ensemble of 4 networks, top-1 86.577 %, rank 5/214.",
        ["Official metric: top-1 error; submission `id,predicted`."],
        {"official": "the folder holding train2019.json and train_val2019/",
         "torchvision INaturalist(version='2019')": "the folder holding 2019/ (train and val merged: "
         "one split `trainval`; category ids from the numeric folders, image ids the path under "
         "2019/); with the official JSON files beside it, their splits"}),
    "inaturalist2021": Card(
        "iNaturalist 2021", 10000,
        {"train": 2686843, "train_mini": 500000, "val": 100000, "test": 500000},
        "https://github.com/visipedia/inat_comp (2021): train.tar.gz (~224 GB) and/or "
        "train_mini.tar.gz, val.tar.gz, public_test.tar.gz and their .json files",
        "train/, train_mini/, val/, public_test/ folders; train.json, train_mini.json, val.json, "
        "public_test.json (COCO style); any of train/train_mini may be absent",
        "Images under their photographers' licences.",
        notes=["`train_mini` (50 images per class) is a split whenever train_mini.json is there; "
               "a copy without train.json (mini only) reads as train_mini, val, test. Recipes "
               "train on it with `dataset.train_split: train_mini`.",
               "Any other COCO-style year: use the `coco` adapter with options.files."],
        variants={"official": "the folder holding val.json and train.json and/or train_mini.json",
                  "torchvision INaturalist(version='2021_*')": "torchvision's `root`, the folder "
                  "holding 2021_train/, 2021_train_mini/, 2021_valid/ (any of them; not the "
                  "version folder itself): splits train, train_mini, val; category ids from the "
                  "folders' 5-digit prefix, equal to the official JSON's; image ids the path "
                  "under the version folder (`<category folder>/<file>`)"}),
    "herbarium2019": Card(
        "Herbarium 2019 (FGVC6, Kaggle herbarium-2019-fgvc6)", 683,
        {"train": 34225, "val": 2679, "test": 9565},
        "https://www.kaggle.com/c/herbarium-2019-fgvc6",
        "train/<category>/<id>.jpg, validation/<category>/<id>.jpg, test/<id>.jpg (or the resized "
        "small-train/, small-validation/, small-test/ with options.small: true)",
        "New York Botanical Garden images; competition rules apply.",
        "Competition entry: SENet-154 + ResNet-50 ensemble, top-1 88.845 %, rank 4/22.",
        ["Image ids repeat across category folders: train/val samples are keyed "
         "`<category>/<file>`; test ids are the file names (the `Id` of the submission).",
         "Category folders are numeric ids, mapped numerically."]),
    "herbarium2020": Card(
        "Herbarium 2020, 2021, 2022 and later editions (COCO-style metadata)", None, {},
        "https://www.kaggle.com/c/herbarium-2020-fgvc7, herbarium-2021-fgvc8, herbarium-2022-fgvc9",
        "2020/2021: train/metadata.json, train/images/..., test/metadata.json, test/images/...; "
        "2022: train_metadata.json, test_metadata.json, train_images/..., test_images/...",
        "Competition rules apply.",
        notes=["The edition is read from the files on disk; the class count is the metadata's "
               "(2020: 32,093 species; 2021: 64,500; 2022: 15,501), shown by "
               "`fgvc datasets info herbarium2020`.",
               "Image paths are resolved against the metadata file's folder or the root, whichever "
               "holds most of the listed images (checked across the whole list)."],
        variants={"2020": "nybg2020/ (what the archive unpacks to) or the folder holding it",
                  "2021": "the folder holding train/metadata.json and test/metadata.json",
                  "2022 and later": "the folder holding train_metadata.json (keys image_id, "
                  "category_id, scientificName) and train_images/"}),
    "stanford_cars": Card(
        "Stanford Cars", 196, {"train": 8144, "test": 8041},
        "Original site (ai.stanford.edu/~jkrause/cars) is offline; mirrors exist on Kaggle.",
        "cars_train/*.jpg, cars_test/*.jpg, devkit/{cars_meta.mat, cars_train_annos.mat, "
        "cars_test_annos.mat}, cars_test_annos_withlabels.mat (root or devkit/); or the single "
        "cars_annos.mat with car_ims/",
        "For non-commercial research only.",
        "Table 3, SENet-154: baseline 94.0, with FixRes 94.4 (best published then 94.7).",
        ["Test labels come from cars_test_annos_withlabels.mat (root, devkit/, car_devkit/devkit/ "
         "or cars_test/), else from cars_annos.mat when its test entries match the devkit's boxes "
         "one by one, else the test split is unlabelled (with a warning).",
         "Image ids are `train/00001.jpg`, `test/00001.jpg` (the devkit numbers both splits from "
         "00001), so ids and boxes are unique.",
         "Boxes are read where the annotation files carry them (`bbox_x1` ... `bbox_y2`); copies "
         "without them load without boxes.",
         "A split is read where its annotations and its images folder are both there: a copy of "
         "the test half only (cars_test/, cars_meta.mat, the test annotations) reads as its "
         "test split."],
        {"devkit": "the folder holding devkit/, cars_train/, cars_test/",
         "Kaggle mirror": "the folder holding car_devkit/devkit/, cars_train/cars_train/, "
         "cars_test/cars_test/ and cars_annos.mat (whose car_ims/ paths the mirror lacks)",
         "torchvision StanfordCars": "torchvision's root/stanford_cars/ (the devkit layout)",
         "cars_annos.mat + car_ims/": "the folder holding both"}),
    "cub200": Card(
        "CUB-200-2011", 200, {"train": 5994, "test": 5794},
        "https://www.vision.caltech.edu/datasets/cub_200_2011/ (CUB_200_2011.tgz)",
        "CUB_200_2011/images/<NNN.Species>/<file>.jpg, images.txt, image_class_labels.txt, "
        "classes.txt, train_test_split.txt, bounding_boxes.txt",
        "For non-commercial research and educational purposes.",
        "Table 3, SENet-154: baseline 88.4, with FixRes 88.7 (best published then 88.7).",
        ["`root` may be the folder holding CUB_200_2011/ or CUB_200_2011/ itself."]),
    "flowers102": Card(
        "Oxford 102 Flowers", 102, {"train": 1020, "val": 1020, "test": 6149},
        "https://www.robots.ox.ac.uk/~vgg/data/flowers/102/ (102flowers.tgz, imagelabels.mat, "
        "setid.mat)",
        "jpg/image_00001.jpg ... image_08189.jpg, imagelabels.mat, setid.mat",
        "Research use; see the VGG page.",
        "Table 3, Inception-ResNet-V2: baseline 95.0, with FixRes 95.7 (best published then 98.8).",
        ["`trainval` (2,040 images) is what papers train on.",
         "The official files carry no class names: classes are named `flower <id>`."],
        {"official": "the folder holding jpg/, imagelabels.mat and setid.mat",
         "torchvision Flowers102": "torchvision's root/flowers-102/ (the same files)"}),
    "oxford_pets": Card(
        "Oxford-IIIT Pets", 37, {"trainval": 3680, "test": 3669},
        "https://www.robots.ox.ac.uk/~vgg/data/pets/ (images.tar.gz, annotations.tar.gz)",
        "images/<Breed_Name>_<n>.jpg, annotations/{list.txt, trainval.txt, test.txt}",
        "CC BY-SA 4.0.",
        "Table 3, SENet-154: baseline 94.6, with FixRes 94.8 (best published then 95.9).",
        ["A few original JPEGs are corrupt or not JPEG: run `fgvc datasets verify`.",
         "Head bounding boxes are read from annotations/xmls/ (trainval images only)."],
        {"official": "the folder holding images/ and annotations/",
         "torchvision OxfordIIITPet": "torchvision's root/oxford-iiit-pet/"}),
    "nabirds": Card(
        "NABirds", 555, {"train": 23929, "test": 24633},
        "https://dl.allaboutbirds.org/nabirds",
        "nabirds/images/<4-digit class id>/<uuid>.jpg, images.txt, image_class_labels.txt, "
        "train_test_split.txt, bounding_boxes.txt, classes.txt, hierarchy.txt",
        "Non-commercial research; see the Cornell Lab terms.",
        "Table 3, SENet-154: baseline 88.3, with FixRes 89.2 (best published then 82.8).",
        ["Only the 555 leaf classes label images; their ids are not contiguous and are mapped in "
         "ascending order to labels 0..554."]),
    "birdsnap": Card(
        "Birdsnap", 500, {"train": 47386, "test": 2443},
        "http://thomasberg.org/ (metadata + a download script; many image URLs are dead)",
        "species.txt, images.txt, test_images.txt (tab-separated, headers), images/<path> or "
        "download/images/<path>",
        "Images under their owners' licences; metadata for research.",
        "Table 3, SENet-154: baseline 83.4, with FixRes 84.3 (best published then 84.3).",
        ["Listed images that were never downloaded are counted, reported and skipped; none "
         "downloaded at all is an error. `fgvc datasets verify` counts them as a warning (exit 0); "
         "`--strict` makes them fail the check."],
        {"images/": "the folder holding species.txt and images/",
         "official download script": "the folder holding species.txt and download/images/"}),
    "imagefolder": Card(
        "Custom data as folders", None, {},
        "Your own images.",
        "<root>/train/<class>/<image>, <root>/val/<class>/<image>, <root>/test/<image>",
        "Yours."),
    "csv": Card(
        "Custom data as CSV lists", None, {},
        "Your own images.",
        "<root>/train.csv, val.csv, test.csv with columns path,label[,id]; paths relative to root",
        "Yours."),
    "parquet": Card(
        "Local Parquet / Arrow copies (Hugging Face hub)", None, {},
        "A dataset repository's files downloaded from the hub beforehand (fgvc never connects).",
        "data/<split>-00000-of-0000N.parquet (or <split>.parquet, <config>/<split>/0000.parquet), or "
        "save_to_disk's <split>/data-00000-of-0000N.arrow; `validation` is read as split `val`",
        "The dataset's own.",
        notes=["Columns detected: the image (the hub's {bytes, path} struct, binary, or a path "
               "column), the label (the ClassLabel feature, else label/labels/fine_label/...), "
               "the id (image_id/id; else `<file>/<row>`); override with options.image_column, "
               "label_column, id_column; options.files maps split -> file or glob.",
               "Class names come from the ClassLabel names in the file's `huggingface` metadata "
               "(or dataset_info.json); without them the label values are the category ids. "
               "Label -1 or null marks an unlabelled row.",
               "Images stored as bytes are read from the file when decoded (a row group at a "
               "time, the last ones kept in memory); indexing never reads the bytes."],
        variants={"Parquet": "the folder holding data/ (or the .parquet files)",
                  "Arrow (save_to_disk)": "the folder holding the <split>/ folders"}),
    "coco": Card(
        "Any COCO-style classification JSON", None, {},
        "Your own or a later competition's JSON.",
        "options.files maps split -> JSON (images: id, file_name; annotations: image_id, "
        "category_id; categories: id, name); options.images names the folder the file_name "
        "values are relative to (one folder, or split -> folder)",
        "Yours.",
        notes=["Category ids are integers (or their decimal text); image ids integers or text. "
               "Anything else is refused, naming the file and the entry.",
               "Without options.images, file_name is read relative to the root or to the JSON's "
               "folder, whichever holds the listed images."]),
}


def render_card(name: str) -> str:
    card = CARDS[name]
    splits = ", ".join(f"{k} {v:,}" for k, v in card.splits.items()) or "as on disk"
    lines = [
        f"# {card.title}",
        "",
        f"- **fgvc name:** `{name}` (recipe: `dataset: {{name: {name}, root: datasets/{name}}}`)",
        f"- **Classes:** {card.classes if card.classes else 'as on disk'}",
        f"- **Splits:** {splits}",
        f"- **Where to get it:** {card.source}",
        f"- **Expected layout under the root:** {card.layout}",
        f"- **Licence:** {card.licence}",
    ]
    if card.paper:
        lines.append(f"- **FixRes paper:** {card.paper}")
    lines += [f"- {note}" for note in card.notes]
    if card.variants:
        lines += ["", "## Copies read (detected from what is on disk)", "",
                  "| copy | root to give |", "|---|---|"]
        lines += [f"| {variant} | {root} |" for variant, root in card.variants.items()]
    lines += ["", f"Check a copy with `fgvc datasets info {name} --root <root>` and "
              f"`fgvc datasets verify {name} --root <root>`. Images reached through a symbolic "
              "link that leads out of the root are refused unless the recipe sets "
              "`dataset.follow_symlinks_outside: true` (`--follow-symlinks-outside`).", ""]
    return "\n".join(lines)


def write_cards(folder: Path) -> None:
    for name in CARDS:
        (folder / f"{name}.md").write_text(render_card(name))


if __name__ == "__main__":
    write_cards(Path(__file__).resolve().parents[2] / "datasets")
