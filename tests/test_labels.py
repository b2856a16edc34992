"""`cvrepro labels apply`: CSV label corrections on a real demo dataset, checked by the real snapshot.

Every test writes its own CSV; a bad one must leave the labels file byte-identical."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from helpers import REPO, copy_template, run
from cvrepro.config.compose import compose
from cvrepro import tasks
from cvrepro.dataset import corrections as labels
from cvrepro.dataset.demo import generate_demo
from cvrepro.core.fileio import CvreproError, read_json, write_json
from cvrepro.core.paths import ANNOTATIONS, RAW_DIR
from cvrepro.dataset.manifest import build_manifest

HEADER = "image,annotation_id,action,category,x,y,w,h"


@pytest.fixture(scope="module")
def demo_data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("demo")
    generate_demo(root, seed=4, n_images=12)
    return root


@pytest.fixture
def root(demo_data: Path, tmp_path: Path) -> Path:
    """A private copy of the 12-image demo dataset."""
    return shutil.copytree(demo_data, tmp_path / "root")


def coco_of(root: Path) -> dict:
    return json.loads((root / ANNOTATIONS).read_text())


def write_csv(path: Path, *rows: str, header: str = HEADER) -> Path:
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


def apply_csv(csv: Path, annotations: Path, **options) -> dict:
    """`labels apply` outside a project: the task is what the labels file holds (`tasks.of_labels`)."""
    return labels.run(csv, annotations, task=tasks.of_labels(read_json(annotations)), **options)


def hashes(root: Path) -> dict[str, str]:
    manifest = build_manifest(root / RAW_DIR, root / ANNOTATIONS, workers=1, task=tasks.get("detection"))
    return {f["path"]: f["labels_hash"] for f in manifest["files"]}


def pick(coco: dict) -> tuple[dict, dict, dict, dict, dict]:
    """Three annotations on three different images, a fourth image, and the images by id."""
    images = {im["id"]: im for im in coco["images"]}
    chosen, used = [], set()
    for a in coco["annotations"]:
        if a["image_id"] not in used and len(chosen) < 3:
            chosen.append(a)
            used.add(a["image_id"])
    a, b, c = chosen[:3]
    other = next(im for im in coco["images"] if im["id"] not in used)
    assert len({a["image_id"], b["image_id"], c["image_id"], other["id"]}) == 4
    return a, b, c, other, images


def other_category(coco: dict, category_id: int) -> dict:
    return next(c for c in coco["categories"] if c["id"] != category_id)


def test_each_action_applies_and_the_snapshot_still_validates(root: Path, tmp_path: Path):
    coco = coco_of(root)
    before = hashes(root)
    a, b, c, other, images = pick(coco)
    relabel_to = other_category(coco, a["category_id"])
    w = other["width"]
    csv = write_csv(
        tmp_path / "fix.csv",
        f"{images[a['image_id']]['file_name']},{a['id']},relabel,{relabel_to['name']},,,,",
        f"{b['image_id']},{b['id']},move,,3,3,{w - 2.5},10.25",  # image by id; right edge on the half-pixel tolerance
        f"{images[c['image_id']]['file_name']},{c['id']},delete,,,,,",
        f"{other['file_name']},,add,{relabel_to['id']},0,0,12,8",  # category by id
    )
    summary = apply_csv(csv, root / ANNOTATIONS)

    after = hashes(root)  # the real snapshot: raises if the corrected labels are invalid
    changed = {images[x["image_id"]]["file_name"] for x in (a, b, c)} | {other["file_name"]}
    assert {p for p in before if before[p] != after[p]} == changed
    assert set(summary["images_changed"]) == changed
    new = {x["id"]: x for x in coco_of(root)["annotations"]}
    assert new[a["id"]]["category_id"] == relabel_to["id"]
    assert new[b["id"]]["bbox"] == [3, 3, w - 2.5, 10.25] and new[b["id"]]["area"] == round((w - 2.5) * 10.25, 2)
    assert new[b["id"]]["category_id"] == b["category_id"]
    assert c["id"] not in new
    added = max(x["id"] for x in coco["annotations"]) + 1
    assert new[added] == {"id": added, "image_id": other["id"], "category_id": relabel_to["id"],
                          "bbox": [0, 0, 12, 8], "area": 96, "iscrowd": 0}
    assert summary["actions"] == {"relabel": 1, "move": 1, "delete": 1, "add": 1}
    assert summary["added_ids"] == [added] and summary["written"]
    deltas = {name: c["delta"] for name, c in summary["per_class"].items()}
    expected = {cat["name"]: 0 for cat in coco["categories"]}
    names = {cat["id"]: cat["name"] for cat in coco["categories"]}
    expected[names[a["category_id"]]] -= 1
    expected[relabel_to["name"]] += 2
    expected[names[c["category_id"]]] -= 1
    assert deltas == expected
    assert any("cvrepro release dataset" in step for step in summary["next_steps"])


def test_a_relabel_is_a_one_line_diff(root: Path, tmp_path: Path):
    """The file is rewritten in the format `cvrepro demo` writes, so only the corrected value changes."""
    old = (root / ANNOTATIONS).read_text().splitlines()
    coco = coco_of(root)
    a = coco["annotations"][5]
    to = other_category(coco, a["category_id"])
    apply_csv(write_csv(tmp_path / "fix.csv", f"{a['image_id']},{a['id']},relabel,{to['id']},,,,"), root / ANNOTATIONS)
    new = (root / ANNOTATIONS).read_text().splitlines()
    assert len(old) == len(new)
    changed = [(x, y) for x, y in zip(old, new) if x != y]
    assert changed == [(f'      "category_id": {a["category_id"]},', f'      "category_id": {to["id"]},')]


def test_move_with_a_category_also_relabels(root: Path, tmp_path: Path):
    coco = coco_of(root)
    a = coco["annotations"][0]
    to = other_category(coco, a["category_id"])
    summary = apply_csv(write_csv(tmp_path / "fix.csv", f"{a['image_id']},{a['id']},move,{to['name']},1,1,5,5"),
                         root / ANNOTATIONS)
    moved = next(x for x in coco_of(root)["annotations"] if x["id"] == a["id"])
    assert (moved["category_id"], moved["bbox"], moved["area"]) == (to["id"], [1, 1, 5, 5], 25)
    assert summary["per_class"][to["name"]]["delta"] == 1
    hashes(root)


def test_new_ids_follow_the_largest_in_row_order_and_repeat_exactly(root: Path, tmp_path: Path):
    top = max(a["id"] for a in coco_of(root)["annotations"])
    apply_csv(write_csv(tmp_path / "delete.csv", "1,1,delete,,,,,"), root / ANNOTATIONS)  # a gap: ids != count
    csv = write_csv(tmp_path / "add.csv", "img_000003.png,,add,cart,1,1,4,4", "img_000001.png,,add,shelf,2,2,4,4")
    copy = shutil.copytree(root, tmp_path / "copy")
    assert apply_csv(csv, root / ANNOTATIONS)["added_ids"] == [top + 1, top + 2]
    apply_csv(csv, copy / ANNOTATIONS)
    assert (root / ANNOTATIONS).read_bytes() == (copy / ANNOTATIONS).read_bytes()
    added = [a for a in coco_of(root)["annotations"] if a["id"] > top]
    assert [(a["id"], a["image_id"]) for a in added] == [(top + 1, 4), (top + 2, 2)]


# Each bad row sits on line 3, below a good one: (row, field or text the message must name).
BAD_ROWS = {
    "wrong field count": ("img_000002.png,5,delete,,,,", "expected 8 fields"),
    "unknown action": ("img_000002.png,{aid},rename,cart,,,,", "field 'action': unknown action 'rename'"),
    "unknown image": ("img_999.png,{aid},delete,,,,,", "field 'image': no image with file_name or id 'img_999.png'"),
    "unknown image id": ("77,{aid},delete,,,,,", "field 'image': no image with file_name or id '77'"),
    "unknown annotation": ("img_000002.png,9999,delete,,,,,", "field 'annotation_id': no annotation with id 9999"),
    "non-numeric id": ("img_000002.png,seven,delete,,,,,", "field 'annotation_id': expected an integer, got 'seven'"),
    "annotation of another image": ("img_000005.png,{aid},delete,,,,,", "field 'annotation_id': annotation {aid} "
                                                                        "belongs to image id 3"),
    "touched twice": ("img_000002.png,{first},delete,,,,,", "field 'annotation_id': annotation {first} is already "
                                                            "corrected on line 2"),
    "unknown category": ("img_000002.png,{aid},relabel,dog,,,,", "field 'category': unknown category 'dog'"),
    "unknown category id": ("img_000002.png,,add,9,1,1,4,4", "field 'category': unknown category '9'"),
    "same category": ("img_000002.png,{aid},relabel,{cat},,,,", "a relabel must change the category"),
    "non-numeric box": ("img_000002.png,{aid},move,,1,1,wide,4", "field 'w': expected a finite number, got 'wide'"),
    "nan box": ("img_000002.png,{aid},move,,nan,1,4,4", "field 'x': expected a finite number"),
    "zero width": ("img_000002.png,,add,cart,1,1,0,4", "field 'w': box width and height must be > 0"),
    "outside the image": ("img_000002.png,,add,cart,150,1,10.6,4", "field 'w': box [150, 1, 10.6, 4] lies outside"),
    "negative corner": ("img_000002.png,{aid},move,,-0.6,1,4,4", "field 'x': box [-0.6, 1, 4, 4] lies outside"),
    "same box": ("img_000002.png,{aid},move,,{box}", "nothing to move"),
    "box on a relabel": ("img_000002.png,{aid},relabel,cart,1,1,4,4", "fields 'x', 'y', 'w', 'h': must be empty"),
    "category on a delete": ("img_000002.png,{aid},delete,cart,,,,", "field 'category': must be empty for delete"),
    "id on an add": ("img_000002.png,{aid},add,cart,1,1,4,4", "field 'annotation_id': must be empty for add"),
    "add without box": ("img_000002.png,,add,cart,,,,", "fields 'x', 'y', 'w', 'h': required for add"),
    "relabel without category": ("img_000002.png,{aid},relabel,,,,,", "field 'category': required for relabel"),
}


def _fill(template: str, coco: dict) -> str:
    """Point a template row at image 3 (img_000002.png) and its first annotation."""
    on_3 = [a for a in coco["annotations"] if a["image_id"] == 3]
    a = on_3[-1]
    box = ",".join(f"{v:g}" for v in a["bbox"])
    return template.format(aid=a["id"], first=on_3[0]["id"], cat=a["category_id"], box=box)


def _good_row(coco: dict) -> str:
    a = next(a for a in coco["annotations"] if a["image_id"] == 3)
    return f"img_000002.png,{a['id']},relabel,{other_category(coco, a['category_id'])['name']},,,,"


@pytest.mark.parametrize("kind", BAD_ROWS)
def test_one_bad_row_rejects_the_file_names_the_line_and_writes_nothing(root: Path, tmp_path: Path, kind: str):
    coco = coco_of(root)
    assert len([a for a in coco["annotations"] if a["image_id"] == 3]) >= 2  # the templates need two
    row, expected = BAD_ROWS[kind]
    csv = write_csv(tmp_path / "fix.csv", _good_row(coco), _fill(row, coco))
    original = (root / ANNOTATIONS).read_bytes()
    with pytest.raises(CvreproError) as err:
        apply_csv(csv, root / ANNOTATIONS)
    assert f"{csv}:3: " in str(err.value) and _fill(expected, coco) in str(err.value)
    assert f"{csv}:2" not in str(err.value)  # the good row is not blamed
    assert (root / ANNOTATIONS).read_bytes() == original


def test_every_bad_row_is_reported_together(root: Path, tmp_path: Path):
    coco = coco_of(root)
    rows = [_fill(row, coco) for row, _ in BAD_ROWS.values()]
    assert len(rows) > 20
    original = (root / ANNOTATIONS).read_bytes()
    with pytest.raises(CvreproError) as err:
        apply_csv(write_csv(tmp_path / "fix.csv", _good_row(coco), *rows), root / ANNOTATIONS)
    message = str(err.value)
    assert "20 problems in" in message and "nothing written" in message and "stopped after the first 20" in message
    assert [f"fix.csv:{line}:" in message for line in range(2, 23)] == [False] + [True] * 20
    assert (root / ANNOTATIONS).read_bytes() == original


@pytest.mark.parametrize("header, expected", [
    ("image,annotation_id,action,category,x,y,w", "missing h"),
    ("image,annotation,action,category,x,y,w,h", "missing annotation_id; unexpected annotation"),
    ("", "empty file"),
    ("image;annotation_id;action;category;x;y;w;h", "not semicolons"),
])
def test_a_wrong_header_is_line_1(root: Path, tmp_path: Path, header: str, expected: str):
    csv = tmp_path / "fix.csv"
    csv.write_text(f"{header}\n" if header else "")
    with pytest.raises(CvreproError, match=f"fix.csv:1: .*{expected}"):
        apply_csv(csv, root / ANNOTATIONS)


def test_columns_in_any_order_blank_lines_and_a_bom(root: Path, tmp_path: Path):
    a = coco_of(root)["annotations"][0]
    csv = tmp_path / "fix.csv"
    csv.write_text("\ufeffaction,image,annotation_id,category,x,y,w,h\n\n,,,,,,,\n"
                   f"Delete,{a['image_id']},{a['id']},,,,,\n")  # any column order, any case of action
    assert apply_csv(csv, root / ANNOTATIONS)["actions"]["delete"] == 1
    bad = tmp_path / "bad.csv"
    bad.write_text(f"{HEADER}\n\n\nimg_000000.png,{a['id']},frob,,,,,\n")  # line numbers count the blank lines
    with pytest.raises(CvreproError, match="bad.csv:4: field 'action'"):
        apply_csv(bad, root / ANNOTATIONS)


def test_dry_run_via_the_cli_writes_nothing(root: Path, tmp_path: Path):
    a = coco_of(root)["annotations"][0]
    csv = write_csv(tmp_path / "fix.csv", f"{a['image_id']},{a['id']},delete,,,,,")
    before = (root / ANNOTATIONS).stat()
    original = (root / ANNOTATIONS).read_bytes()
    res = run(["cvrepro", "labels", "apply", str(csv), "--dry-run", "--json"], root)
    summary = json.loads(res.stdout)
    assert summary["dry_run"] and not summary["written"] and summary["actions"]["delete"] == 1
    assert (root / ANNOTATIONS).read_bytes() == original
    assert (root / ANNOTATIONS).stat().st_mtime_ns == before.st_mtime_ns
    assert not list((root / ANNOTATIONS).parent.glob(".*.tmp"))  # no temporary file left either

    text = run(["cvrepro", "labels", "apply", str(csv), "--dry-run"], root).stdout
    assert "dry run" in text and "nothing written" in text


def test_the_cli_applies_to_another_labels_file_and_prints_next_steps(root: Path, tmp_path: Path):
    other = tmp_path / "elsewhere" / "labels.json"
    other.parent.mkdir()
    shutil.copy(root / ANNOTATIONS, other)
    a = coco_of(root)["annotations"][0]
    csv = write_csv(tmp_path / "fix.csv", f"{a['image_id']},{a['id']},delete,,,,,")
    out = run(["cvrepro", "labels", "apply", str(csv), "--annotations", str(other)], root).stdout
    assert "delete 1" in out and f"wrote {other}" in out
    assert f"dvc add {other.parent.as_posix()}" in out and "cvrepro release dataset" in out and "PATCH" in out
    assert a["id"] not in {x["id"] for x in json.loads(other.read_text())["annotations"]}
    assert coco_of(root)["annotations"][0] == a  # the default labels file is untouched


def test_the_cli_exits_non_zero_with_error_on_bad_input(root: Path, tmp_path: Path):
    original = (root / ANNOTATIONS).read_bytes()
    csv = write_csv(tmp_path / "fix.csv", "img_000000.png,1,relabel,dog,,,,")
    res = run(["cvrepro", "labels", "apply", str(csv)], root, check=False)
    assert res.returncode == 2 and res.stdout == ""
    assert res.stderr.startswith("error: ") and f"{csv}:2: field 'category': unknown category 'dog'" in res.stderr
    res = run(["cvrepro", "labels", "apply", str(tmp_path / "missing.csv")], root, check=False)
    assert res.returncode == 2 and "missing.csv: file not found" in res.stderr
    res = run(["cvrepro", "labels", "apply", str(csv), "--annotations", "nope.json"], root, check=False)
    assert res.returncode == 2 and "nope.json: file not found" in res.stderr
    assert (root / ANNOTATIONS).read_bytes() == original


# --------------------------------------------------------------------------- other tasks


def classification_labels(path: Path) -> Path:
    """Two images, one label each, no boxes (docs/label-formats.md)."""
    write_json(path, {
        "images": [{"id": 1, "file_name": "a/cat1.jpg", "width": 64, "height": 48},
                   {"id": 2, "file_name": "a/dog1.jpg", "width": 64, "height": 48}],
        "annotations": [{"id": 10, "image_id": 1, "category_id": 1}, {"id": 11, "image_id": 2, "category_id": 1}],
        "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}],
    })
    return path


def test_classification_relabel_works_and_nothing_else_does(tmp_path: Path):
    ann = classification_labels(tmp_path / "annotations.json")
    assert tasks.of_labels(json.loads(ann.read_text())).name == "classification"
    csv = write_csv(tmp_path / "fix.csv", "a/dog1.jpg,11,relabel,dog,,,,")
    summary = apply_csv(csv, ann)
    assert summary["task"] == "classification" and summary["per_class"]["dog"] == {"before": 0, "after": 1, "delta": 1}
    assert json.loads(ann.read_text())["annotations"] == [{"id": 10, "image_id": 1, "category_id": 1},
                                                          {"id": 11, "image_id": 2, "category_id": 2}]
    original = ann.read_bytes()
    for row in ["1,10,move,,1,1,4,4", "1,10,delete,,,,,", "1,,add,dog,,,,"]:
        with pytest.raises(CvreproError, match=r"fix.csv:2: field 'action': .* classification dataset"):
            apply_csv(write_csv(tmp_path / "fix.csv", row), ann)
    assert ann.read_bytes() == original


def test_a_file_name_that_reads_as_another_images_id_is_refused(tmp_path: Path):
    ann = tmp_path / "annotations.json"
    write_json(ann, {
        "images": [{"id": 1, "file_name": "2", "width": 8, "height": 8},
                   {"id": 2, "file_name": "b.png", "width": 8, "height": 8}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1}],
        "categories": [{"id": 1, "name": "2"}, {"id": 2, "name": "x"}],
    })
    with pytest.raises(CvreproError) as err:
        apply_csv(write_csv(tmp_path / "fix.csv", "2,1,relabel,x,,,,", "1,1,relabel,2,,,,"), ann)
    assert ("fix.csv:2: field 'image': '2' is both the file_name of image id 1 and the id of image 'b.png'; "
            "write './2' for the first") in str(err.value)
    assert "fix.csv:3: field 'category': '2' is the name of category id 1 and the id of 'x'" in str(err.value)
    summary = apply_csv(write_csv(tmp_path / "fix.csv", "./2,1,relabel,x,,,,"), ann)  # the suggested spelling
    assert summary["images_changed"] == ["2"] and summary["per_class"]["x"]["after"] == 1


def test_segmentation_masks_are_not_csv_driven(root: Path, tmp_path: Path):
    csv = write_csv(tmp_path / "fix.csv", "img_000000.png,1,delete,,,,,")
    original = (root / ANNOTATIONS).read_bytes()
    res = run(["cvrepro", "labels", "apply", str(csv), "--task", "segmentation"], root, check=False)
    assert res.returncode == 2 and "mask edits are not CSV-driven" in res.stderr
    masks_only = tmp_path / "masks.json"
    write_json(masks_only, {"images": [{"id": 1, "file_name": "a.png", "width": 8, "height": 8,
                                        "mask_file": "masks/a.png"}],
                            "categories": [{"id": 1, "name": "road"}]})
    with pytest.raises(CvreproError, match="mask edits are not CSV-driven"):
        apply_csv(csv, masks_only)  # inferred: masks, no annotations
    assert (root / ANNOTATIONS).read_bytes() == original


def test_the_task_comes_from_params_yaml(root: Path, tmp_path: Path):
    (root / "params.yaml").write_text(yaml.safe_dump(compose(REPO / "conf", ["task=segmentation"])))
    csv = write_csv(tmp_path / "fix.csv", "img_000000.png,1,delete,,,,,")
    res = run(["cvrepro", "labels", "apply", str(csv)], root, check=False)
    assert res.returncode == 2 and "mask edits are not CSV-driven" in res.stderr


# --------------------------------------------------------------------------- with git and DVC


@pytest.mark.slow
def test_dvc_sees_the_corrected_labels(tmp_path: Path):
    project = copy_template(tmp_path / "project")
    generate_demo(project, seed=2, n_images=12)
    run(["dvc", "add", "data/raw", "data/labels"], project)
    run(["git", "add", "-A"], project)
    run(["git", "commit", "-qm", "demo data"], project)
    assert json.loads(run(["dvc", "status", "--json", "data/labels.dvc"], project).stdout) == {}

    a = coco_of(project)["annotations"][0]
    to = other_category(coco_of(project), a["category_id"])
    csv = write_csv(tmp_path / "fix.csv", f"{a['image_id']},{a['id']},relabel,{to['name']},,,,")
    out = run(["cvrepro", "labels", "apply", str(csv)], project).stdout
    assert "dvc add data/labels" in out

    status = json.loads(run(["dvc", "status", "--json", "data/labels.dvc"], project).stdout)
    assert status == {"data/labels.dvc": [{"changed outs": {"data/labels": "modified"}}]}
    # The next steps the command prints: record the labels; DVC then tracks the new version.
    run(["dvc", "add", "data/labels"], project)
    assert json.loads(run(["dvc", "status", "--json", "data/labels.dvc"], project).stdout) == {}
    assert "data/labels.dvc" in run(["git", "status", "--porcelain"], project).stdout


def test_the_example_in_the_docs_is_what_the_command_prints(tmp_path: Path):
    doc = (Path(__file__).resolve().parents[1] / "docs/labels.md").read_text()
    example = doc.split("## Example", 1)[1]
    csv_text = example.split("```csv\n", 1)[1].split("```", 1)[0]
    printed = example.split("Applied:\n\n```\n", 1)[1].split("```", 1)[0]
    generate_demo(tmp_path, seed=0, n_images=12)
    (tmp_path / "fixes.csv").write_text(csv_text)
    assert run(["cvrepro", "labels", "apply", "fixes.csv"], tmp_path).stdout == printed
    hashes(tmp_path)  # and the corrected labels pass the snapshot's checks


def test_help_and_misuse(tmp_path: Path):
    assert "labels" in run(["cvrepro", "--help"], tmp_path).stdout
    assert "apply" in run(["cvrepro", "labels", "--help"], tmp_path).stdout
    assert "docs/labels.md" in run(["cvrepro", "labels", "apply", "--help"], tmp_path).stdout
    assert run(["cvrepro", "labels"], tmp_path, check=False).returncode == 2


def test_unreadable_inputs_are_clear_errors(root: Path, tmp_path: Path):
    latin1 = tmp_path / "latin1.csv"
    latin1.write_bytes(f"{HEADER}\nimg_000000.png,1,relabel,caf\xe9,,,,\n".encode("latin-1"))
    with pytest.raises(CvreproError, match="latin1.csv: not UTF-8 text"):
        apply_csv(latin1, root / ANNOTATIONS)
    coco = coco_of(root)
    coco["annotations"][3]["id"] = coco["annotations"][2]["id"]
    broken = tmp_path / "broken.json"
    write_json(broken, coco)
    with pytest.raises(CvreproError, match=r"broken.json: annotations\[3\]: .*duplicate 'id'"):
        apply_csv(write_csv(tmp_path / "fix.csv", "img_000000.png,1,delete,,,,,"), broken)
