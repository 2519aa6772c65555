"""``fgvc predict RUN --images FILE|DIR|GLOB ...``: a finished run's top classes for the images a
user has, as a CSV (``path,label_1,score_1,...,label_k,score_k``, class names).

Everything that can be refused is refused before the model is loaded: a folder that is not a
finished run, an argument that names no image, an output that exists. Unreadable files are left
out with one warning that counts and names them (``fgvc.predict`` does the same).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fgvc.inference.exported import ExportFolder, check_options, is_export_folder
from fgvc.inference.image_files import STDOUT, check_output, find_images, write_top_k_csv
from fgvc.inference.predictions import Predictions, top_k_block
from fgvc.runfolder import RunFolder

DEFAULT_TOP_K = 5


@dataclass
class ImagePredictions:
    """What was written, for the command to report."""

    out: str
    found: int  # image files named by the arguments
    predicted: int  # rows written (the readable ones)
    top_k: int  # columns per row, after clamping to the class count
    asked_top_k: int
    num_classes: int
    resolutions: list[int]
    crops: str


def predict_image_files(run_dir: str | Path, specs: list[str], *, out: str | Path | None = None,
                        top_k: int = DEFAULT_TOP_K, force: bool = False,
                        resolutions: list[int] | None = None, crops: str | None = None,
                        average: str | None = None) -> ImagePredictions:
    """Predict every image ``specs`` names with the run's final weights, at its adapted
    resolution (``recipe.final_resolution``) and test transform unless told otherwise, and
    write the CSV to ``out`` (default ``RUN/predictions-images.csv``; ``-``: standard output).
    ``run_dir`` may also be an ``fgvc export`` folder: its model, with its saved test DA."""
    from fgvc.api import load_run, predict

    if is_export_folder(run_dir):
        export = ExportFolder.open(run_dir)  # a damaged folder is refused before any image
        check_options(export, resolutions, crops or "center")
        paths = find_images(specs)
        target = str(out) if out is not None else str(export.path / RunFolder.IMAGE_PREDICTIONS)
        check_output(target, force)
        preds = predict(export.path, paths, resolutions=resolutions, crops=crops or "center")
        return _write_csv(target, preds, len(paths), top_k, force)
    folder = RunFolder.open(run_dir)
    recipe = folder.read_recipe()
    folder.final_weights(recipe)  # an unfinished run is refused before any image is read
    paths = find_images(specs)
    target = str(out) if out is not None else str(folder.image_predictions_path)
    check_output(target, force)
    infer = recipe.predict or recipe.evaluate
    run = load_run(folder.path)
    preds = predict(run, paths, resolutions=resolutions, crops=crops or infer.crops,
                    average=average or infer.average, batch_size=infer.batch_size)
    return _write_csv(target, preds, len(paths), top_k, force)


def _write_csv(target: str, preds: Predictions, found: int, top_k: int,
               force: bool) -> ImagePredictions:
    """The top-k CSV of ``preds`` (class names, best first), whatever model produced them."""
    k = min(top_k, len(preds.class_ids))
    indices, scores = top_k_block(np.asarray(preds.probs, dtype=np.float32), k)
    names = np.asarray(preds.class_names or preds.class_ids)
    write_top_k_csv(target, preds.ids, names[indices].tolist(), scores, force=force)
    return ImagePredictions(target, found, len(preds.ids), k, top_k, len(preds.class_ids),
                            list(preds.meta["resolutions"]), preds.meta["crops"])


def describe(result: ImagePredictions) -> str:
    """The command's closing line."""
    where = "standard output" if result.out == STDOUT else result.out
    return (f"{result.predicted} of {result.found} images predicted ({result.crops} at "
            f"{'/'.join(map(str, result.resolutions))} px), top-{result.top_k} class names "
            f"-> {where}")
