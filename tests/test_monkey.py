"""A short monkey sequence on the real window (the long one: benchmarks/bench_monkey.py;
the machinery and its three checks: tests/monkey.py)."""

from monkey import Monkey
from monkey_actions import ACTIONS

SEED = 4
COUNT = 250


def test_a_seeded_monkey_sequence_breaks_nothing(window, tmp_path):
    del window.confirm_discard  # the real question, answered by the monkey
    monkey = Monkey(window, SEED, tmp_path, ACTIONS)
    try:
        result = monkey.run(COUNT, checkpoint_every=20)
    finally:
        window.confirm_discard = lambda: True  # closing must not ask (F8, monkey_findings)
    print(result.summary())
    assert result.actions == COUNT and result.checkpoints >= 6
    assert result.events["run started"] >= 1
    # the step-through was exercised: entered (by F11, or by stepping through a previewed
    # sample), or tried and refused with its reason (printed above). Which of these a seed
    # gives depends on timing and on the window's widgets: the next pick depends on both
    assert result.events["step-through entered"] + result.mix["step through"] >= 1
