"""A short monkey sequence on the real window (the long one: benchmarks/bench_monkey.py)."""

from monkey import Monkey
from monkey_actions import ACTIONS

SEED = 20261128
COUNT = 200


def test_a_seeded_monkey_sequence_breaks_nothing(window, tmp_path):
    del window.confirm_discard  # the real question, answered by the monkey
    monkey = Monkey(window, SEED, tmp_path, ACTIONS)
    result = monkey.run(COUNT)
    print(result.summary())
    assert result.actions == COUNT and result.checkpoints >= 1
