"""core/swap.py on its own: folders swapped whole, a failed exchange rolled back, a swap that died settled."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cvrepro.core import swap


def _sets(tmp_path: Path) -> tuple[Path, list[tuple[Path, Path]]]:
    work = tmp_path / ".work"
    pairs = []
    for name in ("raw", "labels"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "f.txt").write_text(f"old {name}")
        (work / name).mkdir(parents=True)
        (work / name / "f.txt").write_text(f"new {name}")
        pairs.append((work / name, tmp_path / name))
    return work, pairs


def _contents(tmp_path: Path) -> list[str]:
    return [(tmp_path / name / "f.txt").read_text() for name in ("raw", "labels")]


def test_swap_in_puts_every_new_folder_in_place_and_journals_it(tmp_path: Path):
    work, pairs = _sets(tmp_path)
    swap.swap_in(pairs, work, {"dvc_add": True}, "test")
    assert _contents(tmp_path) == ["new raw", "new labels"]
    assert (work / "raw" / "f.txt").read_text() == "old raw"  # the old set, now in the work folder
    journal = json.loads((work / swap.JOURNAL).read_text())
    assert journal["step"] == "swapped" and journal["dvc_add"] is True
    assert swap.journal_step(work) == "swapped"


def test_a_failed_exchange_puts_the_old_set_back(tmp_path: Path):
    work, pairs = _sets(tmp_path)
    pairs.append((work / "missing", tmp_path / "other"))  # renaming a folder that is not there fails
    with pytest.raises(swap.SwapFailed, match="missing"):
        swap.swap_in(pairs, work)
    assert _contents(tmp_path) == ["old raw", "old labels"]
    assert not (work / swap.JOURNAL).exists()


@pytest.mark.parametrize("step, want", [("swapping", ["old raw", "old labels"]), ("swapped", ["new raw", "new labels"])])
def test_a_swap_that_died_is_settled_by_its_journal(tmp_path: Path, step: str, want: list[str]):
    work, pairs = _sets(tmp_path)
    swap.swap_in(pairs[:1], work)  # raw swapped; labels not yet, as if killed between the two exchanges
    journal = json.loads((work / swap.JOURNAL).read_text())
    pair = {"new": "labels", "target": "labels", "new_ino": (work / "labels").lstat().st_ino,
            "old_ino": (tmp_path / "labels").lstat().st_ino}
    (work / swap.JOURNAL).write_text(json.dumps({**journal, "step": step, "pairs": journal["pairs"] + [pair]}))
    assert swap.settle_interrupted(work)["step"] == step
    assert _contents(tmp_path) == want


def test_no_journal_means_nothing_was_moved(tmp_path: Path):
    assert swap.settle_interrupted(tmp_path) == {} and swap.journal_step(tmp_path) is None
