"""The long monkey test of the window: a seeded random sequence of user actions on the real
widgets (tests/monkey.py), with its three checks after every action. Prints the number of
actions, their mix and the result; on a failure, the seed and the last actions, to replay.

    QT_QPA_PLATFORM=offscreen python benchmarks/bench_monkey.py --seed 1 --count 2000
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from PySide6.QtCore import QSettings, QStandardPaths

from layerlab.app.application import make_application
from layerlab.app.main_window import MainWindow, recovery_path
from monkey import Monkey, MonkeyFailure
from monkey_actions import ACTIONS


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--checkpoint-every", type=int, default=40)
    parser.add_argument("--verbose", action="store_true", help="print each action as done")
    parser.add_argument("--local-mnist", action="store_true",
                        help="a small MNIST-format dataset in a temporary HOME, so that the "
                             "mnist examples train offline")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="layerlab-monkey-"))
    QStandardPaths.setTestModeEnabled(True)  # never the user's settings or recovery file
    QSettings.setDefaultFormat(QSettings.Format.IniFormat)
    QSettings.setPath(QSettings.Format.IniFormat, QSettings.Scope.UserScope,
                      str(folder / "settings"))
    make_application()
    recovery_path().unlink(missing_ok=True)
    window = MainWindow(offer_recovery=False)
    window.show()
    monkey = Monkey(window, args.seed, folder, ACTIONS, echo=args.verbose,
                    local_mnist=args.local_mnist)
    try:
        result = monkey.run(args.count, args.checkpoint_every)
    except MonkeyFailure as failure:
        print(f"FAILED after {len(monkey.history)} log lines, mix {dict(monkey.mix)}")
        print(failure)
        return 1
    finally:
        window.stepper.leave()
        window.training.controller.stop()
        window.doc.undo_stack.setClean()
        window.close()
    print(result.summary())
    return 0


if __name__ == "__main__":
    sys.exit(main())
