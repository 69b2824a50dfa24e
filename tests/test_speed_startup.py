"""Start-up: what each command imports (not how long it takes: timings vary by machine).
`layerlab --help` must answer without torch; `check` without the trainer, the tracer or the
exporters; nothing headless imports Qt."""

import subprocess
import sys

from conftest import EXAMPLES

PROBE = """
import sys
from layerlab.cli import main
try:
    main(sys.argv[1:])
except SystemExit:
    pass
sys.stderr.write("MODULES " + " ".join(sorted(sys.modules)) + "\\n")
"""


def imported(*argv: str) -> set[str]:
    """The modules a command line imports, in a fresh interpreter."""
    result = subprocess.run([sys.executable, "-c", PROBE, *argv], capture_output=True,
                            text=True, timeout=120)
    line = next(x for x in result.stderr.splitlines() if x.startswith("MODULES "))
    return set(line.split()[1:])


def ours(modules: set[str]) -> set[str]:
    return {m for m in modules if m == "layerlab" or m.startswith("layerlab.")}


def test_help_imports_no_command_and_no_torch():
    modules = imported("--help")
    assert ours(modules) == {"layerlab", "layerlab.cli"}
    assert not {"torch", "numpy", "networkx", "PySide6"} & modules


def test_check_imports_what_it_checks_and_no_more():
    modules = imported("check", str(EXAMPLES / "spiral.layerlab.json"))
    assert {"layerlab.core.fit", "layerlab.core.shapes", "torch"} <= modules
    assert {m for m in ours(modules) if m.startswith("layerlab.cli.")} == {
        "layerlab.cli.check", "layerlab.cli.common"}
    heavy = {"layerlab.core.trainer", "layerlab.core.tracer", "layerlab.core.export",
             "layerlab.core.update_rule", "layerlab.cli.train", "sklearn", "PySide6",
             "onnx", "onnxruntime", "safetensors"}
    assert not heavy & modules, heavy & modules
