"""`layerlab check` and `layerlab examples`: exit codes, messages, files left alone."""

import hashlib
import json
import subprocess
import sys

import pytest

from layerlab.cli import main
from test_project import MNIST

from conftest import EXAMPLES


def run(capsys, *args):
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_check_prints_the_table_and_totals(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))  # no MNIST in ~/.cache/layerlab: a note
    code, out, err = run(capsys, "check", str(EXAMPLES / "mnist-mlp.layerlab.json"))
    assert code == 0 and err == ""
    lines = out.splitlines()
    assert lines[0].split() == ["node", "type", "output", "shape", "parameters"]
    assert lines[2].split() == ["fc1", "Linear", "[500]", "392,500"]
    assert lines[-2] == "total parameters: 397,510 (trainable 397,510)"
    assert lines[-1] == ("note: dataset mnist is not on this machine (its files are not in "
                         f"{tmp_path / '.cache' / 'layerlab' / 'mnist'}; train downloads it), "
                         "so its fit with the network was not checked")


def test_frozen_parameters_are_not_trainable(tmp_path, capsys):
    data = json.loads(json.dumps(MNIST))
    data["graph"]["nodes"][1]["frozen"] = True
    path = tmp_path / "f.json"
    path.write_text(json.dumps(data))
    code, out, _ = run(capsys, "check", str(path))
    assert code == 0
    assert "392,500 (frozen)" in out
    assert "total parameters: 397,510 (trainable 5,010)" in out.splitlines()


def with_graph(**changes):
    data = json.loads(json.dumps(MNIST))
    for node in data["graph"]["nodes"]:
        if node["id"] in changes:
            node.update(changes[node["id"]])
    return json.dumps(data)


BAD_FILES = {
    "truncated": (json.dumps(MNIST)[:200], 2, "is not valid JSON: "),
    "binary": (b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe", 2, "is not a text file"),
    "empty": ("", 2, "is empty"),
    "future": (json.dumps({**MNIST, "version": 99}), 2, "written by a newer LayerLab"),
    "not-a-project": ('{"hello": 1}', 2, "is not a LayerLab project"),
    "list": ("[1, 2]", 2, "expected a JSON object"),
    "unknown-type": (with_graph(relu={"type": "Relu"}), 1,
                     "relu: unknown layer type 'Relu' (did you mean ReLU?)"),
    "wrong-param-type": (with_graph(fc1={"params": {"out_features": "500"}}), 1,
                         "fc1: out_features must be a number, not '500'"),
    "out-of-range": (with_graph(fc1={"params": {"out_features": 0}}), 1,
                     "fc1: out_features must be at least 1, not 0"),
    "shape-mismatch": (with_graph(fc1={"type": "Conv2d",
                                       "params": {"out_channels": 3, "kernel_size": 3}}), 1,
                       "fc1 expects a [C, H, W] input but receives [784] from input"),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_bad_files_exit_with_a_clear_message_and_stay_untouched(tmp_path, capsys, case):
    content, expected_code, words = BAD_FILES[case]
    path = tmp_path / f"{case}.layerlab.json"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    code, _, err = run(capsys, "check", str(path))
    assert code == expected_code
    assert words in err
    assert "Traceback" not in err
    assert all(line.startswith(str(path)) for line in err.splitlines())
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest


def test_cycles_dangling_edges_duplicates_and_several_errors(tmp_path, capsys):
    data = json.loads(json.dumps(MNIST))
    data["graph"]["edges"] += [{"source": "fc2", "target": "fc1"},
                               {"source": "relu", "target": "nowhere"}]
    data["graph"]["nodes"][4]["params"] = {"label_smoothing": 2}
    path = tmp_path / "many.layerlab.json"
    path.write_text(json.dumps(data))
    code, _, err = run(capsys, "check", str(path))
    assert code == 1
    assert "fc1: cycle: " in err and "relu: edge from relu goes to missing node 'nowhere'" in err
    assert "loss: label_smoothing must be at most 1, not 2" in err
    data = json.loads(json.dumps(MNIST))
    data["graph"]["nodes"].append({"id": "relu", "type": "Tanh"})
    path.write_text(json.dumps(data))
    code, _, err = run(capsys, "check", str(path))
    assert code == 1 and "relu: duplicate id 'relu'" in err


def test_missing_file(capsys, tmp_path):
    code, _, err = run(capsys, "check", str(tmp_path / "nope.json"))
    assert code == 2 and err.strip() == f"{tmp_path / 'nope.json'}: no such file"


def test_examples_list_and_write(tmp_path, capsys):
    code, out, _ = run(capsys, "examples")
    assert code == 0 and out.split()[0] == "spiral"
    assert {line.split()[0] for line in out.splitlines()} == {
        "spiral", "mnist-mlp", "digits-mlp", "lenet5", "resnet-block", "tiny-transformer",
        "tiny-gpt"}
    target = tmp_path / "lenet.layerlab.json"
    code, _, _ = run(capsys, "examples", "lenet5", "-o", str(target))
    assert code == 0
    assert target.read_text() == (EXAMPLES / "lenet5.layerlab.json").read_text()
    code, _, err = run(capsys, "examples", "lenet6", "-o", str(tmp_path / "x.json"))
    assert code == 2 and "no example named 'lenet6'; choose one of spiral" in err
    assert not (tmp_path / "x.json").exists()
    code, out, _ = run(capsys, "examples", "LeNet5")  # names in any case
    assert code == 0 and out == (EXAMPLES / "lenet5.layerlab.json").read_text()


def test_examples_replace_another_file_only_with_force(tmp_path, capsys):
    target = tmp_path / "mine.layerlab.json"
    target.write_text("my own project")
    code, _, err = run(capsys, "examples", "spiral", "-o", str(target))
    assert code == 1
    assert err.strip() == (f"{target} exists and is not example spiral; use --force to "
                           "replace it, or choose another file")
    assert target.read_text() == "my own project"
    code, _, _ = run(capsys, "examples", "spiral", "-o", str(target), "--force")
    assert code == 0 and target.read_text() == (EXAMPLES / "spiral.layerlab.json").read_text()
    code, out, err = run(capsys, "examples", "spiral", "-o", str(target))  # the same: fine
    assert code == 0 and err == "" and out == f"wrote {target}\n"


def test_headless_commands_never_import_qt():
    script = (
        "import sys; from layerlab.cli import main; "
        f"code = main(['check', {str(EXAMPLES / 'resnet-block.layerlab.json')!r}]); "
        "bad = [m for m in sys.modules if m.split('.')[0] in ('PySide6', 'pyqtgraph')]; "
        "print('QT', bad); sys.exit(code)")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            check=False)
    assert result.returncode == 0
    assert "QT []" in result.stdout


def test_console_script_runs(tmp_path):
    result = subprocess.run([sys.executable, "-m", "layerlab", "check",
                             str(EXAMPLES / "spiral.layerlab.json")], capture_output=True,
                            text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert "total parameters: 354" in result.stdout
