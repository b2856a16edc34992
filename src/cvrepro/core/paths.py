"""Every path the pipeline reads or writes, in one place, relative to the project root.

Stages run from the project root (DVC runs each `cmd` from the directory of
`dvc.yaml`), so relative paths are what DVC tracks and what we record.
"""

from pathlib import Path

CONF_DIR = Path("conf")
PARAMS = Path("params.yaml")
DVC_LOCK = Path("dvc.lock")

RAW_DIR = Path("data/raw")  # images, immutable, tracked with `dvc add`
LABELS_DIR = Path("data/labels")  # annotations, tracked with `dvc add`
ANNOTATIONS = LABELS_DIR / "annotations.json"  # COCO detection format

SNAPSHOT_DIR = Path("data/snapshot")
MANIFEST = SNAPSHOT_DIR / "manifest.json"
# results of earlier image checks (snapshot opens only new or changed images); git-ignored, per checkout
SNAPSHOT_CHECKS = Path(".cvrepro/snapshot-checks.tsv")

SPLITS_DIR = Path("data/splits")
SPLITS = SPLITS_DIR / "splits.json"

PROCESSED_DIR = Path("data/processed")
PROCESSED_INFO = PROCESSED_DIR / "preprocess.json"  # size, mean/std, class map, layout
DATASET_RELEASES_DIR = Path("data/releases")  # DS-x.y.z.json + .md: dataset release records, git-tracked


def processed_split(split: str) -> Path:
    """The array store of one split (plain .npy files: byte-deterministic, mmap-able)."""
    return PROCESSED_DIR / split


MODELS_DIR = Path("models")
WEIGHTS = MODELS_DIR / "model.pt"  # state_dict only: the artifact whose sha256 is pinned
CHECKPOINT = MODELS_DIR / "checkpoint.pt"  # model + optimizer + scheduler + epoch + config
LABEL_MAP = MODELS_DIR / "label_map.json"
PREPROCESSING = MODELS_DIR / "preprocessing.json"  # pre/post-processing a predictor must apply
TRAIN_INFO = MODELS_DIR / "train.json"  # config id, seeds, epochs, final losses

METRICS_DIR = Path("metrics")
METRICS = METRICS_DIR / "metrics.json"
LINEAGE = METRICS_DIR / "lineage.json"
TRAIN_LOG_DIR = METRICS_DIR / "train"  # DVCLive output: per-epoch losses
PLOTS_DIR = METRICS_DIR / "plots"
PREDICTIONS_GRID = PLOTS_DIR / "predictions_val.png"

MODEL_RELEASES_DIR = MODELS_DIR / "releases"  # vX.Y.Z.json + .md: model release records, git-tracked
ROLLBACKS = MODEL_RELEASES_DIR / "rollbacks.json"  # append-only list of rollback entries (`cvrepro rollback`)
# Where a killed train stage resumes from: outside the stage's DVC outputs (DVC deletes those before
# it reruns a stage) and git-ignored; keyed by the hash of data, params, code and hardware.
RESUME_CHECKPOINT = MODELS_DIR / ".resume" / "checkpoint.pt"
# `cvrepro label-issues` (the label_issues stage, not cached: git-tracked): the CSV `check` and the report count
LABEL_ISSUES = Path("metrics/label_issues/label_issues.csv")
