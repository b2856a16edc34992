"""The tasks: one module per task behind one interface (`tasks/base.py`, read it first).

    from cvrepro import tasks
    task = tasks.of_params(params)        # params.yaml's `task`; an unknown or missing task is an error
    task.write_split(...)

Built in: detection, segmentation, classification. A fourth task is one module with a
`Task` subclass, `tasks.register(MyTask())`, and one `conf/task/<name>.yaml`; nothing else
in the project names tasks.
"""

from __future__ import annotations

from cvrepro.core.fileio import CvreproError
from cvrepro.config.params import IGNORE_INDEX, recorded
from cvrepro.config.typed import ParamsLike, typed
from cvrepro.tasks.base import Task

_REGISTRY: dict[str, Task] = {}
# Release records and predictor specs written before tasks existed describe detection models
# and carry no task; they are read as that task (the one place this default lives).
LEGACY_TASK = "detection"


def register(task: Task) -> Task:
    if not task.name:
        raise ValueError("a task needs a name")
    _REGISTRY[task.name] = task
    return task


def unregister(name: str) -> None:
    _REGISTRY.pop(name, None)


def _builtins() -> None:
    # each registers itself when first imported, in this order (the order `serving` tries them); always all three:
    # code that imported one of them directly (cvrepro.tasks.detection) must not leave the others unregistered
    import cvrepro.tasks.detection  # noqa: F401
    import cvrepro.tasks.segmentation  # noqa: F401
    import cvrepro.tasks.classification  # noqa: F401


def names() -> tuple[str, ...]:
    _builtins()
    return tuple(_REGISTRY)


def get(name: object, where: str = "params.yaml: task") -> Task:
    """The registered task `name`; CvreproError naming `where` and the known tasks otherwise."""
    _builtins()
    if isinstance(name, str) and name in _REGISTRY:
        return _REGISTRY[name]
    known = ", ".join(_REGISTRY)
    if name is None or name == "":
        raise CvreproError(f"{where} is not set; choose one of {known}")
    raise CvreproError(f"{where} {name!r} is unknown; choose one of {known}")


def of_params(params: ParamsLike) -> Task:
    """The task of params.yaml: its top-level `task` (set by the conf/task/ option)."""
    return get(typed(params).task)


def of_record(record: dict, where: str) -> Task:
    """The task of a manifest, preprocess.json or predictor spec: its `task`, or the legacy task if it
    predates the key."""
    return get(record.get("task", LEGACY_TASK), f"{where}: task")


def of_manifest(manifest: dict) -> Task:
    """The task of a dataset manifest (what `dataset.diff.dataset_diff` asks for each side it compares)."""
    return of_record(manifest, "manifest")


def serving(index: dict) -> list[Task]:
    """The tasks whose labels `index` holds, in registry order."""
    _builtins()
    return [t for t in _REGISTRY.values() if t.serves(index)]


def of_labels(index: object) -> Task:
    """What a labels file holds when nothing says which task: the first task that serves it, else the first
    registered (a file that serves none still gets a task, whose own checks then say what is wrong)."""
    found = serving(index) if isinstance(index, dict) else []
    return found[0] if found else get(names()[0])


def build_model(model_cfg, num_classes: int, size: int, mean: list[float], std: list[float],
                task: str, class_ids: list[int] | None = None, ignore_index: int = IGNORE_INDEX):
    """A model of `task` for `num_classes` outputs (category ids 1..num_classes-1; 0 is background): the
    task's own `build_model`, after checking that `model.name` is one of its networks (naming the task whose
    network it is otherwise). Here, not in learning/models.py: the hint looks through every task.

    model_cfg: a predictor spec's `model` record (JSON, perhaps of an older release), read as recorded and handed
    as is to the task's builder.
    class_ids: the category ids that are classes (segmentation adds 0); the others are never predicted."""
    chosen = get(task)
    name = recorded(model_cfg, "name")
    builders = chosen.model_builders()
    if name not in builders:
        other = [t.name for t in map(get, names()) if name in t.model_builders()]
        hint = f" ('{name}' is a {other[0]} model)" if other else ""
        raise CvreproError(f"params.yaml: model.name '{name}' is not a {task} model{hint}; "
                           f"choose one of {sorted(builders)}")
    return chosen.build_model(model_cfg, num_classes, size, mean, std, class_ids, ignore_index)


__all__ = ["Task", "register", "unregister", "names", "get", "of_params", "of_record", "of_manifest", "serving",
           "of_labels", "build_model", "LEGACY_TASK"]
