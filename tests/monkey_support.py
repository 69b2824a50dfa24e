"""The monkey's helpers that are not gestures: files a person might open by mistake, a
small MNIST-format dataset, warming up the torch thread, and reports (diffs, thread stacks)."""

from __future__ import annotations

import difflib
import json
import sys
import threading
from pathlib import Path


def bad_files(folder: Path) -> list[Path]:
    """Files a person might open by mistake, made once per folder."""
    project = json.loads((Path(__file__).resolve().parents[1] / "assets" / "examples" /
                          "spiral.layerlab.json").read_text())
    bad_training = json.loads(json.dumps(project))
    bad_training["training"]["dataset"]["validation_split"] = 1.5
    bad_training["training"]["optimizer"]["lr"] = "abc"
    duplicate = json.loads(json.dumps(project))
    duplicate["graph"]["nodes"].append(dict(duplicate["graph"]["nodes"][0]))
    unknown = json.loads(json.dumps(project))
    unknown["graph"]["nodes"][1]["type"] = "Quantum"
    newer = dict(project, version=99)
    contents = {"garbage.txt": "hello, not a project", "empty.layerlab.json": "",
                "truncated.layerlab.json": '{"format": "layerlab-project", "vers',
                "list.layerlab.json": "[]", "binary.layerlab.json": b"\x00\xff\xfe",
                "bad-training.layerlab.json": json.dumps(bad_training),
                "duplicate.layerlab.json": json.dumps(duplicate),
                "unknown.layerlab.json": json.dumps(unknown),
                "newer.layerlab.json": json.dumps(newer)}
    paths = []
    for name, content in contents.items():
        path = folder / name
        if not path.exists():
            if isinstance(content, bytes):
                path.write_bytes(content)
            else:
                path.write_text(content, encoding="utf-8")
        paths.append(path)
    (folder / "plain-file").touch()
    return paths


def warm_up() -> None:
    """WORKAROUND F1 (/work/notes/monkey_findings.md): the first run builds its trainer in
    the torch thread with cold imports (scikit-learn for `digits`, torch's own lazy modules),
    2.5 s on an idle machine and over 5 s on a busy one, and Stop waits for it. Building one
    trainer here first takes that out of the monkey's timings. Remove once Stop does not
    wait for a run that has not begun."""
    from layerlab.core.examples import example_text
    from layerlab.core.project import Project
    from layerlab.core.trainer import Trainer

    Trainer(Project.from_dict(json.loads(example_text("tiny-transformer"))))


def write_idx_dataset(root: Path, train: int, test: int) -> None:
    """Random images and labels in the four IDX files of MNIST's layout."""
    import gzip
    import struct

    import numpy as np

    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for stem, shape in (("train-images-idx3-ubyte", (train, 28, 28)),
                        ("t10k-images-idx3-ubyte", (test, 28, 28)),
                        ("train-labels-idx1-ubyte", (train,)),
                        ("t10k-labels-idx1-ubyte", (test,))):
        array = rng.integers(0, 10 if "labels" in stem else 256, shape, dtype=np.uint8)
        header = struct.pack(">BBBB", 0, 0, 8, len(shape)) + struct.pack(
            f">{len(shape)}I", *shape)
        (root / f"{stem}.gz").write_bytes(gzip.compress(header + array.tobytes(), 1))


def other_stacks() -> str:
    """Where every thread but this one is, to see what keeps a run from stopping."""
    import traceback
    me = threading.get_ident()
    return "\n".join(f"thread {ident}:\n" + "".join(traceback.format_stack(frame)[-40:])
                     for ident, frame in sys._current_frames().items() if ident != me)


def diff(expected: str, got: str) -> str:
    lines = difflib.unified_diff(expected.splitlines(), got.splitlines(), "at open",
                                 "after undo", lineterm="", n=2)
    return "\n".join(list(lines)[:60])


def strict_json(text: str) -> object:
    """JSON as the project file means it: Infinity and NaN are not numbers there."""
    def refuse(constant: str) -> object:
        raise ValueError(f"{constant} is not JSON")
    return json.loads(text, parse_constant=refuse)
