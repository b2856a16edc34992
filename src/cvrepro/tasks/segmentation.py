"""Semantic segmentation: a class id per pixel from each image's `mask_file` (docs/label-formats.md).

Labels: an 8-bit mask PNG per image under data/labels (0 = background, `dataset.ignore_index`
not scored); boxes in the same index are not used. The label hash is that of the decoded
pixels. Evaluation resizes the predicted scores to each image's original size and compares
them with the original mask, so the numbers do not depend on `preprocess.size`.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path

from cvrepro.config.params import IGNORE_INDEX
from cvrepro.config.schema import Evaluate
from cvrepro.config.typed import typed
from cvrepro.core.fileio import CvreproError
from cvrepro.core.paths import LABELS_DIR
from cvrepro.core.problems import Problems
from cvrepro.core.relpaths import Containment, normalize_relpath
from cvrepro.dataset.index import MISSING
from cvrepro.dataset.manifest import slice_values
from cvrepro.dataset.masks import mask_labels_hash, read_mask
from cvrepro.tasks import register, sizing
from cvrepro.tasks.base import Task
from cvrepro.learning.samples import SeededSamples


def check_masks(files: list[dict], labels_dir: Path, ann_path: Path, class_map: dict[int, str],
                 ignore_index: int, problems: Problems) -> None:
    """Read every image's mask: present, inside data/labels, 8-bit, the image's size, known values.

    Sets f["mask_file"], f["labels_hash"] and f["pixels"] (class id → pixel count) on the good ones."""
    import numpy as np

    allowed = set(class_map) | {0, ignore_index}
    containment = Containment(labels_dir)
    for f in files:
        if problems.full:
            return
        where = f"{ann_path}: image id {f['id']} ({f['path']})"
        name = f.get("mask_file", MISSING)
        if name is MISSING:
            problems.add(f"{where}: missing 'mask_file' (segmentation needs a mask per image)")
            continue
        rel = normalize_relpath(name)
        if rel is None:
            problems.add(f"{where}: 'mask_file' {name!r} must be a path inside {labels_dir}")
            continue
        if not containment.inside(rel):
            problems.add(f"{where}: 'mask_file' {name!r} resolves outside {labels_dir} (symlink)")
            continue
        path = labels_dir / rel
        try:
            mask = read_mask(path)
        except CvreproError as e:
            problems.add(f"{e} (mask_file of image id {f['id']} in {ann_path})")
            continue
        if mask.shape != (f["height"], f["width"]):
            problems.add(f"{path}: mask is {mask.shape[1]}x{mask.shape[0]} but image id {f['id']} ({f['path']}) "
                         f"is {f['width']}x{f['height']}")
            continue
        values, counts = np.unique(mask, return_counts=True)
        unknown = sorted(int(v) for v in values if int(v) not in allowed)
        if unknown:
            problems.add(f"{path}: mask of image id {f['id']} holds values {unknown} that are neither a category id "
                         f"in {ann_path} nor 0 (background) or {ignore_index} (ignore)")
            continue
        f["mask_file"] = rel
        f["labels_hash"] = mask_labels_hash(mask)
        f["pixels"] = {int(v): int(c) for v, c in zip(values, counts)}


class MaskTrainSet(SeededSamples):
    """Segmentation samples: the image and its class mask, flipped together, then the `augment`
    transforms (the mask moved with the pixels, nearest), all drawn from (seed, epoch, index)."""

    def __getitem__(self, i: int):
        import numpy as np
        import torch

        from cvrepro.learning.engine import to_tensor

        image = to_tensor(self.split.images[i])
        mask = torch.from_numpy(np.array(self.split.masks[i], dtype=np.int64))
        if self.flipped(i):
            image, mask = image.flip(-1), mask.flip(-1)
        return self.augmented(i, image, {"mask": mask})


class Segmentation(Task):
    name = "segmentation"
    samples = MaskTrainSet
    builders = "SEGMENTATION_BUILDERS"  # learning/models.py
    annotations_required = False  # the labels are the masks
    labels_in_index = False  # masks are files of their own: snapshot checks them every time
    layout = ("per split: images.npy uint8 [N,3,S,S]; masks.npy uint8 [N,S,S] class id per pixel "
              "(0 background, ignore_index ignored; resized nearest); image_ids.npy int64 [N]; scales.npy float32 [N,2]")

    def check_labels_on_disk(self, files, labels_dir, ann_path, class_map, ignore_index, problems):
        check_masks(files, labels_dir, ann_path, class_map, ignore_index, problems)

    def objects(self, f, labels, class_map):
        # one "object" per class present, so per_class counts the images holding it
        return [{"category_id": k} for k in sorted(f["pixels"]) if k in class_map]

    def label_entry(self, f, labels):
        return {"objects": len(labels), "labels_hash": f["labels_hash"], "mask_file": f["mask_file"]}

    def extra_stats(self, files, class_map, ignore_index):
        names = {0: "background", **class_map, ignore_index: "ignore"}
        pixels = Counter({name: 0 for name in names.values()})
        for f in files:
            pixels.update({names[k]: v for k, v in f["pixels"].items()})
        return {"pixels_per_class": dict(pixels)}

    def fingerprint_labels(self, files, class_map):
        return sizing.mask_areas(files, class_map)

    def resolution_need(self, fp):
        return sizing.mask_need(fp)

    # preprocess
    def write_split(self, out_dir, paths, by_path, size, root, params):
        import numpy as np
        from PIL import Image

        from cvrepro.dataset.processed import SplitWriter, fitted

        cfg = typed(params)
        writer = SplitWriter.for_params(out_dir, len(paths), size, cfg)
        masks = writer.memmap("masks.npy", np.uint8, (len(paths), size, size))
        for i, entry in writer.images(paths, by_path, root):
            mask = Image.fromarray(read_mask(root / LABELS_DIR / entry["mask_file"]))
            w, h = fitted(entry["width"], entry["height"], size, writer.mode)
            if (w, h) != (size, size):  # letterbox: the padding is no class, it is ignored by the loss
                masks[i] = cfg.dataset.ignore_index
            masks[i, :h, :w] = np.asarray(mask.resize((w, h), Image.NEAREST))
        masks.flush()
        del masks
        writer.close()

    # train
    def build_model(self, model_cfg, num_classes, size, mean, std, class_ids, ignore_index):
        valid = sorted(set(class_ids if class_ids is not None else range(1, num_classes)) | {0})  # 0: background
        return self.dense_model(model_cfg, num_classes, "mask", valid, mean, std, ignore_index)

    def output_spec(self, params, base):
        return {"task": self.name, **base, "ignore_index": typed(params).dataset.ignore_index,
                "output": {"mask": "[S,S] category id per input pixel (0 background); resize to the original "
                                   "image (scores bilinear, then argmax)", "scores": "[K,S,S] softmax over ids 0..K-1"}}

    # predict
    def postprocess(self, out, input_shape, scale, class_names, score_threshold):
        import numpy as np
        import torch

        sx, sy = scale
        size = (round(input_shape[0] / sy), round(input_shape[1] / sx))  # original (height, width)
        content = out["scores"][:, : input_shape[0], : input_shape[1]]  # a letterbox's padding left out
        scores = torch.nn.functional.interpolate(content[None], size=size, mode="bilinear",
                                                 align_corners=False)[0]
        return {"mask": scores.argmax(0).numpy().astype(np.uint8), "class_names": {0: "background", **class_names}}

    # evaluate
    def evaluate_split(self, split, model, data, ctx):
        import numpy as np
        import torch
        import torch.nn.functional as F

        from cvrepro.learning.confusion_metrics import confusion, segmentation_scores
        from cvrepro.learning.engine import predict_batches
        from cvrepro.learning.pictures import grid_order, mask_grid

        root, manifest, spec = ctx["root"], ctx["manifest"], ctx["spec"]
        ev: Evaluate = ctx["cfg"]
        slice_key = ev.slice_key
        k, ignore_index = int(spec["num_classes"]), int(spec.get("ignore_index", IGNORE_INDEX))
        grid = ev.grid_images if ctx["grid_path"] is not None else 0
        names = {0: "background", **ctx["class_names"]}
        by_id = {f["image_id"]: f for f in manifest["files"]}
        slice_of = slice_values(manifest, slice_key)
        total = np.zeros((k, k), dtype=np.int64)
        per_slice: dict[str, np.ndarray] = defaultdict(lambda: np.zeros((k, k), dtype=np.int64))
        slice_images: dict[str, int] = defaultdict(int)
        badness: list[float] = []  # 1 + the share of pixels wrong, per image (at the processed size)
        for start, outs in predict_batches(model, data.images, desc=f"predict {split}"):
            for j, out in enumerate(outs):
                image_id = int(data.image_ids[start + j])
                gt = read_mask(root / LABELS_DIR / by_id[image_id]["mask_file"])
                sx, sy = data.scales[start + j]
                h, w = round(gt.shape[0] * float(sy)), round(gt.shape[1] * float(sx))  # a letterbox's content
                content = torch.from_numpy(out["scores"])[:, :h, :w]
                scores = F.interpolate(content[None], size=gt.shape, mode="bilinear", align_corners=False)
                cm = confusion(gt, scores[0].argmax(0).numpy(), k, ignore_index)
                total += cm
                if image_id in slice_of:
                    per_slice[slice_of[image_id]] += cm
                    slice_images[slice_of[image_id]] += 1
                if grid:
                    small = np.asarray(data.masks[start + j])
                    scored = small != ignore_index
                    wrong = np.count_nonzero((out["mask"] != small) & scored) / max(1, np.count_nonzero(scored))
                    badness.append(1.0 + wrong if wrong else 0.0)
        metrics = segmentation_scores(total, names)
        if slice_key:
            metrics[slice_key] = {
                value: {"images": slice_images[value],
                        **{m: v for m, v in segmentation_scores(per_slice[value], names).items() if m != "per_class"}}
                for value in sorted(per_slice)
            }
        chosen = grid_order(badness, data.image_ids.tolist(), grid) if grid else []
        if chosen:  # the worst images first, then a sample; predicted again (a few) rather than all kept
            images = np.stack([np.asarray(data.images[i]) for i in chosen])
            shown = [out["mask"].astype(np.uint8) for _s, outs in predict_batches(model, images, desc="grid")
                     for out in outs]
            mask_grid([data.images[i].transpose(1, 2, 0) for i in chosen],
                      [np.asarray(data.masks[i]) for i in chosen], shown, names, ctx["grid_path"],
                      ignore_index=ignore_index)
        return metrics

    # releases
    def corrections_refused(self, labels_path: Path) -> str:
        return (f"{labels_path}: segmentation labels are mask PNGs (each image's 'mask_file'); mask edits "
                "are not CSV-driven: edit the masks in an annotation tool")

    def label_change(self, old, new, old_entry, new_entry, old_labels, new_labels):
        from cvrepro.dataset.diff import changed_pixels

        return "mask", {"path": new_entry["path"], "changed_pixels": changed_pixels(old, new, old_entry, new_entry)}

    # formats
    def serves(self, index):
        images = index.get("images") or []
        return bool(images) and all(isinstance(im, dict) and "mask_file" in im for im in images)

    def check_import(self, images, labels_by_image, where):
        for im in images:
            if "mask_file" not in im:
                raise CvreproError(f"image id {im['id']} ({where[im['id']]}): has no mask")


register(Segmentation())
