"""The layout's rules, checked: imports run one way through the layers (LAYERS), the config is read
typed outside config/, every stage's code is a DVC dependency of it, nothing imports the stages, no module outside the tasks package
compares task names, and a fourth task is one module (shown with a toy task defined here, run
through snapshot, split and preprocess)."""

from __future__ import annotations

import ast
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from cvrepro import tasks
from cvrepro.core.fileio import CvreproError, read_json, write_json
from cvrepro.dataset.index import checked_annotations
from cvrepro.stages import preprocess, snapshot, split
from cvrepro.tasks.base import Task
from helpers import REPO, tiny_params
from helpers.imports import PACKAGE, all_modules, closure, files, import_targets, module_file

SRC = REPO / "src"
STAGE_MODULES = {"compose": "cvrepro.config.compose", **{s: f"cvrepro.stages.{s}" for s in
                                                          ("snapshot", "split", "preprocess", "train", "evaluate")},
                 "label_issues": "cvrepro.learning.label_issues"}  # `cvrepro label-issues` runs it


# The layers, lowest first: a module imports its own layer and those below, never one above (at module
# level, inside a function or under TYPE_CHECKING alike). A module is in the layer of the longest prefix
# that names it: learning's building blocks sit below the tasks, its runners above them. The package
# itself (`cvrepro.load_model`) is an entry point. docs/architecture.md draws the same table.
LAYERS = (
    ("core", ("cvrepro.core",)),
    ("config", ("cvrepro.config",)),
    ("dataset", ("cvrepro.dataset",)),
    ("learning blocks", ("cvrepro.learning",)),
    ("tasks", ("cvrepro.tasks",)),
    ("formats", ("cvrepro.formats",)),
    ("learning runners", tuple(f"cvrepro.learning.{m}" for m in ("artifacts", "trainer", "resume", "evaluation", "predictor", "label_issues"))),
    ("provenance", ("cvrepro.provenance",)),
    ("stages", ("cvrepro.stages",)),
    ("entry points", ("cvrepro.cli", PACKAGE)),
)


def layer_of(module: str) -> tuple[int, str] | None:
    """(rank, name) of the module's layer; None if no entry of LAYERS names it."""
    found = [(len(p), rank, name) for rank, (name, prefixes) in enumerate(LAYERS) for p in prefixes
             if module == p or (p != PACKAGE and module.startswith(p + "."))]
    return max(found)[1:] if found else None


def back_imports(src: Path) -> list[str]:
    """Every import of a layer above the importing module's, as `file:line: module (layer) imports ...`,
    and every module that is in no layer."""
    out = []
    for module in all_modules(src):
        where = module_file(src, module).relative_to(src).as_posix()
        layer = layer_of(module)
        if layer is None:
            out.append(f"{where}: {module} is in no layer; add it to LAYERS (tests/test_architecture.py)")
            continue
        for line, used in import_targets(src, module):
            target = layer_of(used)
            if target is not None and target[0] > layer[0]:
                out.append(f"{where}:{line}: {module} ({layer[1]}) imports {used} ({target[1]})")
    return out


def test_imports_run_one_way_down_the_layers():
    assert back_imports(SRC) == []


def test_a_back_import_is_caught_even_inside_a_function(tmp_path: Path):
    shutil.copytree(SRC / PACKAGE, tmp_path / PACKAGE)
    index = tmp_path / PACKAGE / "dataset/index.py"
    lines = index.read_text().count("\n")
    index.write_text(index.read_text() + "\n\ndef _planted():\n    from cvrepro import tasks\n    return tasks\n")
    models = tmp_path / PACKAGE / "learning/models.py"
    models.write_text("from . import trainer  # noqa\n" + models.read_text())
    (tmp_path / PACKAGE / "extra.py").write_text("")
    assert back_imports(tmp_path) == [
        f"cvrepro/dataset/index.py:{lines + 4}: cvrepro.dataset.index (dataset) imports cvrepro.tasks (tasks)",
        "cvrepro/extra.py: cvrepro.extra is in no layer; add it to LAYERS (tests/test_architecture.py)",
        "cvrepro/learning/models.py:1: cvrepro.learning.models (learning blocks) imports cvrepro.learning.trainer "
        "(learning runners)",
    ]


def mapping_reads_of_params(src: Path) -> list[str]:
    """`file:line` of every `params[...]` / `params.get(...)` outside config/: the config is read typed
    (config/typed.py), so a dict read of it anywhere else is the old untyped path coming back."""
    out = []
    for path in sorted((src / PACKAGE).rglob("*.py")):
        if path.relative_to(src / PACKAGE).parts[0] == "config":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            target = node.value if isinstance(node, ast.Subscript) else \
                node.func.value if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and \
                node.func.attr == "get" else None
            if isinstance(target, ast.Name) and target.id == "params":
                out.append(f"{path.relative_to(src).as_posix()}:{node.lineno}")
    return out


def test_the_config_is_read_typed_outside_config(tmp_path: Path):
    assert mapping_reads_of_params(SRC) == []
    shutil.copytree(SRC / PACKAGE, tmp_path / PACKAGE)
    planted = tmp_path / PACKAGE / "dataset/index.py"
    planted.write_text(planted.read_text() + "\n\ndef _seed(params):\n    return params.get('split')['seed']\n")
    assert mapping_reads_of_params(tmp_path) == [f"{PACKAGE}/dataset/index.py:{len(planted.read_text().splitlines())}"]


def test_the_docs_draw_the_same_layers():
    chain = " → ".join(name for name, _ in LAYERS)
    assert chain in " ".join((REPO / "docs/architecture.md").read_text().split())


def test_a_task_name_where_the_task_goes_says_what_changed(tmp_path: Path):
    # dataset/ takes the Task its caller chose; a caller still passing the name learns how to resolve it
    from cvrepro.dataset.corrections import apply_corrections
    from cvrepro.dataset.manifest import build_manifest

    with pytest.raises(TypeError, match=r"tasks.get\('detection'\)"):
        build_manifest(tmp_path, tmp_path / "annotations.json", task="detection")
    with pytest.raises(TypeError, match=r"tasks.get\('detection'\)"):
        apply_corrections({}, [], tmp_path / "fix.csv", task="detection")


def missing_code_deps(dvc_yaml: dict) -> dict[str, list[str]]:
    """stage -> the project files its command runs that its deps (files or folders) do not cover."""
    out = {}
    for stage, module in STAGE_MODULES.items():
        deps = [str(d).split("#")[0].strip().rstrip("/") for d in dvc_yaml["stages"][stage].get("deps", [])]
        code = files(SRC, closure(SRC, module, entry="cvrepro.cli"), REPO)
        out[stage] = sorted(f for f in code if not any(f == d or f.startswith(d + "/") for d in deps))
    return out


def test_every_stage_depends_on_all_the_code_it_runs():
    assert missing_code_deps(yaml.safe_load((REPO / "dvc.yaml").read_text())) == {s: [] for s in STAGE_MODULES}


def test_a_removed_code_dep_is_caught():
    dvc_yaml = yaml.safe_load((REPO / "dvc.yaml").read_text())
    dvc_yaml["stages"]["evaluate"]["deps"].remove("src/cvrepro/provenance/lineage.py")
    assert missing_code_deps(dvc_yaml)["evaluate"] == ["src/cvrepro/provenance/lineage.py"]
    dvc_yaml["stages"]["train"]["deps"].remove("src/cvrepro/tasks")
    assert "src/cvrepro/tasks/detection.py" in missing_code_deps(dvc_yaml)["train"]


def test_a_lazy_import_counts():
    # tasks.detection imports the engine inside a method: the snapshot stage still depends on it
    assert "cvrepro.learning.engine" in closure(SRC, "cvrepro.stages.snapshot")


def _modules() -> dict[str, ast.AST]:
    return {p.relative_to(SRC).as_posix(): ast.parse(p.read_text()) for p in (SRC / "cvrepro").rglob("*.py")}


def test_nothing_imports_the_stages():
    offenders = []
    for path, tree in _modules().items():
        if path.startswith("cvrepro/stages/"):
            continue
        for node in ast.walk(tree):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            offenders += [f"{path}:{node.lineno}" for n in names if n.startswith("cvrepro.stages")]
    assert offenders == []


def test_no_task_name_is_compared_outside_the_tasks_package():
    names = set(tasks.names())
    offenders = []
    for path, tree in _modules().items():
        if path.startswith("cvrepro/tasks/"):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Compare):
                values = [node.left, *node.comparators]
                for v in values:
                    elements = v.elts if isinstance(v, (ast.Tuple, ast.List, ast.Set)) else [v]
                    if any(isinstance(e, ast.Constant) and e.value in names for e in elements):
                        offenders.append(f"{path}:{node.lineno}")
            if isinstance(node, ast.Dict) and sum(isinstance(k, ast.Constant) and k.value in names
                                                  for k in node.keys) > 1:
                offenders.append(f"{path}:{node.lineno} (a table keyed by task)")
    assert offenders == []


def test_an_unknown_or_missing_task_is_an_error_not_detection():
    params = tiny_params()
    with pytest.raises(CvreproError, match="params.yaml: task must be a string, got None"):
        tasks.of_params({**params, "task": None})
    with pytest.raises(CvreproError, match="params.yaml: task is not set"):
        tasks.of_params({**params, "task": ""})
    with pytest.raises(CvreproError, match="task 'keypoints' is unknown"):
        tasks.of_params({**params, "task": "keypoints"})


# --------------------------------------------------------------------------- a fourth task, defined here


class Counting(Task):
    """Toy task: how many objects an image shows (one `count` label per image, no box)."""

    name = "counting"
    layout = "per split: images.npy uint8 [N,3,S,S]; counts.npy int64 [N]; image_ids.npy; scales.npy"

    def parse_labels(self, annotations, images, class_map, ann_path, problems, rejected, invalid=None):
        by_image = {}
        for where, a, image in checked_annotations(annotations, ("id", "image_id", "category_id", "count"),
                                                   images, class_map, ann_path, problems, rejected):
            if not isinstance(a["count"], int) or a["count"] < 0:
                problems.add(f"{where}: 'count' must be a non-negative integer, got {a['count']!r}")
                continue
            by_image[image["id"]] = [{"id": a["id"], "category_id": a["category_id"], "count": a["count"]}]
        return by_image

    def write_split(self, out_dir, paths, by_path, size, root, params):
        from cvrepro.dataset.processed import SplitWriter

        labels = read_json(root / "data/labels/counts.json")["annotations"]
        count_of = {a["image_id"]: a["count"] for a in labels}
        writer = SplitWriter(out_dir, len(paths), size)
        counts = [count_of[entry["image_id"]] for _i, entry in writer.images(paths, by_path, root)]
        writer.close()
        np.save(out_dir / "counts.npy", np.asarray(counts, dtype=np.int64))

    def serves(self, index):
        return any(isinstance(a, dict) and "count" in a for a in index.get("annotations") or [])


@pytest.fixture
def counting_task():
    task = tasks.register(Counting())
    yield task
    tasks.unregister(task.name)


def _counting_project(root: Path, n: int = 12) -> None:
    rng = np.random.default_rng(0)
    images, annotations = [], []
    for i in range(n):
        name = f"img_{i:02d}.png"
        (root / "data/raw").mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (20, 30, 3), dtype=np.uint8)).save(root / "data/raw" / name)
        images.append({"id": i + 1, "file_name": name, "width": 30, "height": 20})
        annotations.append({"id": i + 1, "image_id": i + 1, "category_id": 1, "count": int(i % 4)})
    write_json(root / "data/labels/counts.json",
               {"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "apple"}]})


def test_a_task_defined_in_a_test_runs_snapshot_split_preprocess(tmp_path: Path, counting_task):
    _counting_project(tmp_path)
    params = {**tiny_params(), "task": "counting"}
    params["dataset"].update(annotations="counts.json", annotations_by_task={}, notes="toy")
    params["split"].update(method="sha256", seed=1, ratios={"train": 0.5, "val": 0.25, "test": 0.25}, group_key=None)
    params["preprocess"].update(size=16, resize="stretch", store="npy", mean=[0.5] * 3, std=[0.25] * 3)
    manifest = snapshot.run(params, tmp_path)
    assert manifest["task"] == "counting" and manifest["stats"]["images"] == 12
    assert manifest["stats"]["per_class"] == {"apple": 12}
    splits = split.run(params, tmp_path)
    assert sum(splits["counts"].values()) == 12
    info = preprocess.run(params, tmp_path)
    assert info["task"] == "counting" and info["layout"] == Counting.layout
    for name, members in splits["splits"].items():
        counts = np.load(tmp_path / "data/processed" / name / "counts.npy")
        want = [int(p[4:6]) % 4 for p in members]  # img_NN.png holds NN % 4 objects
        assert counts.tolist() == want
        assert np.load(tmp_path / "data/processed" / name / "images.npy").shape == (len(members), 3, 16, 16)
    # its labels are checked, with the file and field named
    labels = json.loads((tmp_path / "data/labels/counts.json").read_text())
    labels["annotations"][3]["count"] = -1
    write_json(tmp_path / "data/labels/counts.json", labels)
    with pytest.raises(CvreproError, match=r"counts.json: annotations\[3\] \(annotation id 4\): 'count' must be"):
        snapshot.run(params, tmp_path)
