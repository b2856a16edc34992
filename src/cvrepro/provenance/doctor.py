"""`cvrepro doctor`, and the repair every repository-changing command runs first.

Under the repository lock nothing else is running, so whatever a previous command
left half-done was left by a process that died: a release journal (provenance/journal.py)
is completed or rolled back, and an import's work folders under data/ are finished or
rolled back and removed (formats/transfer.py). Each repair is reported in one line.
"""

from __future__ import annotations

from pathlib import Path


def repair(root: Path) -> list[dict]:
    """Settle every interrupted operation in `root`; [{"tag"?, "action", "message"}, ...]."""
    from cvrepro.formats.transfer import recover_imports
    from cvrepro.provenance import journal

    done = [r for r in [journal.recover(Path(root))] if r]
    return done + recover_imports(Path(root))
