"""The dataset bump policy on its own (dataset/bump.py): a diff in, (level, reason) out."""

from __future__ import annotations

from cvrepro.dataset.bump import required_bump


def _diff(**changes) -> dict:
    """A diff of two equal states (the shape dataset_diff returns, without from/to), with `changes` applied."""
    diff = {"schema_changed": False, "class_map": {"added": {}, "removed": {}, "renamed": {}},
            "images": {"added": [], "removed": [], "modified": [], "attributes_changed": []},
            "labels": {"changes": [], "masks_changed": []}, "split_changes": []}
    for path, value in changes.items():
        *parents, leaf = path.split("__")
        node = diff
        for key in parents:
            node = node[key]
        node[leaf] = value
    return diff


def test_each_level_and_its_reason():
    assert required_bump(_diff()) == (None, "nothing changed")
    assert required_bump(_diff(class_map__renamed={"1": ["a", "b"]})) == ("major", "the class map or label schema changed")
    assert required_bump(_diff(schema_changed=True))[0] == "major"
    assert required_bump(_diff(images__added=["x.jpg", "y.jpg"], split_changes=["z.jpg"])) == \
        ("minor", "2 images added, 1 images changed split")
    moved = {"path": "a.jpg", "added": 0, "removed": 0, "moved": 1, "relabelled": 0}
    assert required_bump(_diff(labels__changes=[moved])) == ("patch", "only edits of existing labels on the same images")
    assert required_bump(_diff(labels__changes=[{**moved, "added": 3}])) == \
        ("minor", "3 new labels on existing images")
    assert required_bump(_diff(images__attributes_changed=["a.jpg"]))[0] == "patch"
    assert required_bump(_diff(labels__masks_changed=[{"path": "a.png", "changed_pixels": 0.1}]))[0] == "patch"
