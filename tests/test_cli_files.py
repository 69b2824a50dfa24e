"""Files a person hands the command line that are not what they should be, places it cannot
write, a reader that stops reading, and the permissions of what it writes.

Each refusal is one line on stderr that names the file, with exit 1 or 2 — never 3 (our own
bug), never a traceback. The few subprocess tests run the installed `layerlab` script, as a
person would; the rest call main() in-process over the whole matrix.
"""

import json
import os
import pickle
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import layerlab
from layerlab.cli import main
from layerlab.core.atomic import atomic_write_text

from conftest import EXAMPLES

LAYERLAB = str(Path(sys.executable).with_name("layerlab"))
SPIRAL = str(EXAMPLES / "spiral.layerlab.json")
DIGITS = str(EXAMPLES / "digits-mlp.layerlab.json")
TORCH_ADVICE = ("weights_only", "Re-running", "trusted source")


class Evil:
    """A pickle that runs code when loaded: `print("pwned")`."""

    def __reduce__(self):
        return (print, ("pwned",))


def make_bad_files(folder: Path) -> dict[str, tuple[Path, str]]:
    """name → (file, the words that say what it is)."""
    folder.mkdir(exist_ok=True)
    files = {
        "text": (folder / "text.pt", "it is a text file"),
        "empty": (folder / "empty.pt", "it is empty"),
        "zip": (folder / "other.zip.pt", "it is a zip archive torch.save did not write"),
        "plain-pickle": (folder / "plain.pkl", "it is a Python pickle torch.save did not "
                                               "write"),
        "code-pickle": (folder / "evil.pt", "was refused: it holds Python objects beyond "
                                            "tensors (print), and loading them could run code"),
        "legacy-code-pickle": (folder / "evil.pkl", "was refused: it holds Python objects "
                                                    "beyond tensors (builtins.print)"),
        "binary": (folder / "noise.pt", "it is not a file torch.save wrote"),
        "folder": (folder / "adir.pt", "is a folder, not a file"),
        "missing": (folder / "nothere.pt", "No such file or directory"),
    }
    files["text"][0].write_text("hello, these are not weights\n")
    files["empty"][0].write_bytes(b"")
    with zipfile.ZipFile(files["zip"][0], "w") as archive:
        archive.writestr("notes.txt", "not a tensor")
    files["plain-pickle"][0].write_bytes(pickle.dumps({"a": 1}, protocol=4))
    torch.save({"fc1.weight": Evil()}, files["code-pickle"][0])
    files["legacy-code-pickle"][0].write_bytes(pickle.dumps({"a": Evil()}, protocol=4))
    files["binary"][0].write_bytes(bytes(range(256)) * 4)
    files["folder"][0].mkdir()
    return files


@pytest.fixture(scope="module")
def bad(tmp_path_factory):
    return make_bad_files(tmp_path_factory.mktemp("bad"))


def run_inprocess(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_naming(err: str, path: Path | str) -> str:
    assert "Traceback" not in err and "internal error" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(str(path)) or f" {path}" in lines[0], err
    return lines[0]


COMMANDS = {
    "train --init-weights": lambda f, out: ["train", SPIRAL, "--init-weights", f,
                                            "--out", out],
    "train --resume": lambda f, out: ["train", SPIRAL, "--resume", f, "--out", out],
    "export --weights": lambda f, out: ["export", SPIRAL, "--weights", f, "--to",
                                        "safetensors", "-o", out / "w.safetensors"],
    "trace --weights": lambda f, out: ["trace", SPIRAL, "--weights", f],
}


@pytest.mark.parametrize("command", sorted(COMMANDS))
@pytest.mark.parametrize("kind", ["text", "empty", "zip", "plain-pickle", "code-pickle",
                                  "legacy-code-pickle", "binary", "folder", "missing"])
def test_every_weights_or_checkpoint_option_refuses_a_wrong_file_in_one_line(
        tmp_path, capsys, bad, command, kind):
    path, words = bad[kind]
    code, out, err = run_inprocess(capsys, *COMMANDS[command](path, tmp_path))
    assert code == 1
    line = assert_one_line_naming(err, path)
    assert words in line
    assert "pwned" not in out
    assert not any(advice in line for advice in TORCH_ADVICE)
    assert not list(tmp_path.iterdir())  # nothing written


def test_the_code_refusal_says_how_to_convert_safely(capsys, bad):
    path, _ = bad["code-pickle"]
    _, _, err = run_inprocess(capsys, "trace", DIGITS, "--weights", path)
    assert err.strip().endswith("if you trust where it came from, load it in a Python "
                                "session you trust and save its state dict with "
                                "safetensors.torch.save_file, then use that .safetensors file")


def test_a_checkpoint_must_be_this_runs(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", SPIRAL, "--epochs", "1", "--out", str(run)]) == 0
    save_file({"fc1.weight": torch.zeros(2)}, tmp_path / "w.safetensors")
    cases = [
        (["--resume", tmp_path / "w.safetensors"], "is not a run's checkpoint: it holds only "
                                                   "weights, not the optimizer state"),
        (["--resume", run / "checkpoint.pt", "--optimizer", "SGD"],
         "was written with another optimizer than this run's (sgd)"),
    ]
    for extra, words in cases:
        capsys.readouterr()
        code, _, err = run_inprocess(capsys, "train", SPIRAL, "--epochs", "2", "--out", run,
                                     *extra)
        assert code == 1 and words in assert_one_line_naming(err, extra[1])
    other = tmp_path / "other"
    assert main(["train", DIGITS, "--epochs", "1", "--out", str(other)]) == 0
    capsys.readouterr()
    code, _, err = run_inprocess(capsys, "train", SPIRAL, "--resume", other / "checkpoint.pt",
                                 "--out", run)
    line = assert_one_line_naming(err, other / "checkpoint.pt")
    assert code == 1 and "is the checkpoint of another model: fc1.weight (shape [500, 64] " \
                         "in the file, [16, 2] in the model)" in line
    assert line.count("fc1.weight") == 1


def csv_project(tmp_path: Path, csv_path: Path) -> Path:
    data = json.loads((EXAMPLES / "spiral.layerlab.json").read_text())
    data["training"]["dataset"] = {"name": "csv", "options": {"path": str(csv_path)},
                                   "validation_split": 0.1}
    path = tmp_path / "csv.layerlab.json"
    path.write_text(json.dumps(data))
    return path


def idx_project(tmp_path: Path, root: Path) -> Path:
    data = json.loads((EXAMPLES / "mnist-mlp.layerlab.json").read_text())
    data["training"]["dataset"]["options"] = {"root": str(root), "download": False}
    path = tmp_path / "idx.layerlab.json"
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize(("content", "words"), [
    (bytes(range(256)), "is not a UTF-8 text file"),
    (b"x,y,label\n" + b"1" * 200_000 + b",0,1\n", "cannot be read as CSV: field larger than "
                                                   "field limit"),
    (b"x,y,label\n", "needs a header row and at least one data row"),
    (b"x,y,label\n" + b"1,2,0\n" * 10 + b"1,two,0\n",
     "row 12, column y: 'two' is not a number"),
    (None, "Is a directory"),
])
def test_a_csv_that_is_not_a_table_is_named(tmp_path, capsys, content, words):
    csv_path = tmp_path / "data.csv"
    if content is None:
        csv_path.mkdir()
    else:
        csv_path.write_bytes(content)
    code, _, err = run_inprocess(capsys, "train", csv_project(tmp_path, csv_path), "--out",
                                 tmp_path / "run")
    assert code == 1
    assert words in assert_one_line_naming(err, csv_path)


@pytest.mark.parametrize(("name", "content", "words"), [
    ("train-images-idx3-ubyte", b"hello", "is not an IDX file of unsigned bytes"),
    ("train-images-idx3-ubyte.gz", b"hello", "cannot be read: Not a gzipped file"),
    ("train-images-idx3-ubyte", b"\x00\x00\x08\x03\x00\x00\x00\x02", "is truncated"),
])
def test_an_idx_file_that_is_not_one_is_named(tmp_path, capsys, name, content, words):
    root = tmp_path / "mnist"
    root.mkdir()
    for stem in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                 "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        (root / stem).write_bytes(b"\x00\x00\x08\x01\x00\x00\x00\x00")
    (root / "train-images-idx3-ubyte").unlink()
    (root / name).write_bytes(content)
    code, _, err = run_inprocess(capsys, "train", idx_project(tmp_path, root), "--out",
                                 tmp_path / "run")
    assert code == 1
    assert words in assert_one_line_naming(err, root / name)


# -- places that cannot be written: as root, permission bits do not stop writes, so the
#    unwritable place is a path under a regular file

def test_train_refuses_an_unwritable_out_before_any_work(tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    # the dataset is not here and may not be downloaded: a check after the work had
    # started would complain about the dataset instead
    project = idx_project(tmp_path, tmp_path / "no-mnist")
    code, _, err = run_inprocess(capsys, "train", project, "--out", tmp_path / "afile" / "run")
    assert code == 1
    assert assert_one_line_naming(err, tmp_path / "afile" / "run") == (
        f"cannot write to {tmp_path / 'afile' / 'run'}: {tmp_path / 'afile'} is a file, "
        "not a folder")
    code, _, err = run_inprocess(capsys, "train", project, "--out", tmp_path / "afile")
    assert code == 1 and "afile is a file, not a folder" in err


@pytest.mark.parametrize("fmt", ["onnx", "python", "pt2", "safetensors"])
def test_export_to_an_unwritable_place_says_it_cannot_write_there(tmp_path, capsys, fmt):
    (tmp_path / "afile").write_text("x")
    out = tmp_path / "afile" / f"model.{fmt}"
    code, _, err = run_inprocess(capsys, "export", SPIRAL, "--weights", tmp_path / "none",
                                 "--to", fmt, "-o", out)
    line = assert_one_line_naming(err, out)
    assert code == 1 and line == f"cannot write {out}: {tmp_path / 'afile'} is a file, " \
                                  "not a folder"
    assert "cannot express" not in line
    code, _, err = run_inprocess(capsys, "export", SPIRAL, "--weights", tmp_path / "none",
                                 "--to", fmt, "-o", tmp_path / "no" / "m")
    assert code == 1 and err.strip() == f"cannot write {tmp_path / 'no' / 'm'}: folder " \
                                        f"{tmp_path / 'no'} does not exist"
    code, _, err = run_inprocess(capsys, "export", SPIRAL, "--weights", tmp_path / "none",
                                 "--to", fmt, "-o", tmp_path)
    assert code == 1 and err.strip() == f"cannot write {tmp_path}: it is a folder"


def test_examples_to_an_unwritable_place(tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    out = tmp_path / "afile" / "s.layerlab.json"
    code, _, err = run_inprocess(capsys, "examples", "spiral", "-o", out)
    assert code == 1 and assert_one_line_naming(err, out).endswith("is a file, not a folder")


# -- real subprocesses of the installed script

def layerlab_cli(*args, cwd=None):
    return subprocess.run([LAYERLAB, *map(str, args)], capture_output=True, text=True,
                          check=False, cwd=cwd, timeout=240)


def subprocess_cases(tmp: Path) -> dict[str, tuple[list, int, Path, str]]:
    files = make_bad_files(tmp / "bad")
    (tmp / "afile").write_text("x")
    (tmp / "binary.layerlab.json").write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff")
    text, evil = files["text"][0], files["code-pickle"][0]
    return {
        "init-weights text": (["train", SPIRAL, "--init-weights", text, "--out", tmp / "r"], 1,
                              text, "it is a text file"),
        "resume text": (["train", SPIRAL, "--resume", text, "--out", tmp / "r"], 1, text,
                        "it is a text file"),
        "resume code": (["train", SPIRAL, "--resume", evil, "--out", tmp / "r"], 1, evil,
                        "safetensors.torch.save_file"),
        "project": (["check", tmp / "binary.layerlab.json"], 2, tmp / "binary.layerlab.json",
                    "is not a text file"),
        "out": (["train", SPIRAL, "--out", tmp / "afile" / "r"], 1, tmp / "afile" / "r",
                "is a file, not a folder"),
        "export -o": (["export", SPIRAL, "--weights", text, "--to", "onnx", "-o",
                       tmp / "afile" / "m.onnx"], 1, tmp / "afile" / "m.onnx",
                      "is a file, not a folder"),
    }


@pytest.mark.parametrize("case", ["init-weights text", "resume text", "resume code",
                                  "project", "out", "export -o"])
def test_the_script_refuses_in_one_line_with_the_exact_code(tmp_path, case):
    args, code, path, words = subprocess_cases(tmp_path)[case]
    result = layerlab_cli(*args)
    assert result.returncode == code, result.stderr
    line = assert_one_line_naming(result.stderr, path)
    assert words in line
    assert "pwned" not in result.stdout
    assert not any(advice in line for advice in TORCH_ADVICE)
    assert not (tmp_path / "r").exists() and not (tmp_path / "m.onnx").exists()


def test_a_closed_pipe_ends_quietly():
    """`layerlab check F | head -1`: the reader is gone before the output is written."""
    proc = subprocess.Popen([LAYERLAB, "check", SPIRAL], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    proc.stdout.close()  # long before the script has imported torch and printed anything
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=240) == 141
    assert err == ""


# -- permissions: what the user's umask says, not mkstemp's 0600

@pytest.fixture
def umask():
    previous = os.umask(0o022)
    yield lambda mask: os.umask(mask)
    os.umask(previous)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("mask", [0o022, 0o027])
def test_files_written_follow_the_umask(tmp_path, capsys, umask, mask):
    umask(mask)
    expected = 0o666 & ~mask
    run = tmp_path / "run"
    assert main(["train", SPIRAL, "--epochs", "1", "--out", str(run)]) == 0
    written = [run / name for name in ("weights.safetensors", "metrics.csv",
                                       "project.layerlab.json", "checkpoint.pt")]
    for fmt in ("python", "safetensors", "pt2"):
        out = tmp_path / f"model.{fmt}"
        assert main(["export", SPIRAL, "--weights", str(run / "weights.safetensors"),
                     "--to", fmt, "-o", str(out)]) == 0
        written.append(out)
    assert main(["examples", "lenet5", "-o", str(tmp_path / "l.layerlab.json")]) == 0
    layerlab.load_project(SPIRAL).save(tmp_path / "saved.layerlab.json")
    written += [tmp_path / "l.layerlab.json", tmp_path / "saved.layerlab.json"]
    capsys.readouterr()
    assert {p.name: oct(mode(p)) for p in written} == {p.name: oct(expected) for p in written}


def test_a_replaced_file_keeps_its_own_permissions(tmp_path, umask):
    path = tmp_path / "p.layerlab.json"
    path.write_text("old")
    os.chmod(path, 0o640)
    atomic_write_text(path, "new")
    assert path.read_text() == "new" and mode(path) == 0o640
