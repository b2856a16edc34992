"""The version-bump policy of dataset releases: which bump a dataset diff requires, and why.

Apart from the diff (dataset/diff.py), which only says what changed, so that the rules can be read,
and changed, in one place. Rules (README, "Releases: dataset and model versions"):
- major: the class map, the task or the manifest schema changed;
- minor: images added, removed or changed in content; new labels on images
  (boxes added); images moved to another split;
- patch: only edits of existing labels on the same images (boxes moved,
  relabelled or deleted; classification images relabelled; segmentation masks
  edited, reported as the fraction of changed pixels; attributes corrected).
"""

from __future__ import annotations


def required_bump(diff: dict) -> tuple[str | None, str]:
    """(level, reason) the diff requires: level is "major", "minor", "patch" or None (nothing changed)."""
    images, labels = diff["images"], diff["labels"]
    if diff["schema_changed"] or any(diff["class_map"].values()):
        return "major", "the class map or label schema changed"
    added, removed, modified = images["added"], images["removed"], images["modified"]
    added_on_existing = sum(c["added"] for c in labels["changes"])
    split_moves = diff["split_changes"]
    if added or removed or modified or added_on_existing or split_moves:
        return "minor", ", ".join(part for part, on in [
            (f"{len(added)} images added", added), (f"{len(removed)} removed", removed),
            (f"{len(modified)} changed in content", modified),
            (f"{added_on_existing} new labels on existing images", added_on_existing),
            (f"{len(split_moves)} images changed split", split_moves)] if on)
    if labels["changes"] or images["attributes_changed"] or labels["masks_changed"]:
        return "patch", "only edits of existing labels on the same images"
    return None, "nothing changed"
