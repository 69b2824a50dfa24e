"""Mutation score of layerlab.core, per module, with mutmut (configured in pyproject.toml).

    .venv/bin/python benchmarks/mutation.py                 # sample, run, report (HEAD)
    .venv/bin/python benchmarks/mutation.py --report        # report the last results only
    .venv/bin/python benchmarks/mutation.py --group settings --survivors   # one group, diffs
    .venv/bin/python benchmarks/mutation.py --recheck tests/test_ports.py  # survivors, again

It measures the committed HEAD: `git archive HEAD` is unpacked into mutants/head/ (ignored
by git), so edits in progress in the working tree, someone's deliberate break included, can
neither fail the run nor skew it. mutmut writes every mutant of the configured modules into
mutants/head/mutants/ (the source is never touched). This script then
- leaves out string-literal mutants (mutmut 3 has no switch for them): a mutant whose diff
  differs from the original only inside string literals, compared token by token;
- leaves out the equivalent mutants listed in EQUIVALENT, each with its reason, and those
  of functions that run only while their module is imported (mutmut 3 cannot switch them
  on: see import_time_functions);
- draws a seeded random sample of at most --per-group mutants from each group of
  modules (GROUPS: the figures the team tracks);
- runs them with one worker (`mutmut run --max-children 1 NAMES`), each against only the
  tests that call the mutated function;
- prints killed/total per module, per group and overall. A timeout counts as killed; a
  mutant no selected test reaches ("no tests") counts as survived; a sampled mutant not run
  yet (an interrupted run) is not counted, and the report says how many there are.
With --recheck TESTS, each sampled mutant that survived mutmut's run (or that no listed test
reached) is run against TESTS of the working tree, tests outside mutmut's list and tests
written since the run included; one they make fail counts as killed "by re-check" (kept in
mutants/recheck.json while its function is unchanged, and shown apart in the report).
"""

from __future__ import annotations

import argparse
import filecmp
import io
import json
import os
import random
import shutil
import subprocess
import sys
import tarfile
import tokenize
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = Path("src")
CORE = SRC / "layerlab" / "core"
MUTANTS = Path("mutants")

GROUPS = {
    "trainer": ["trainer.py"],
    "settings": ["settings.py"],
    "spec/shapes/layers": ["spec.py", "shapes.py", "layers/activation.py", "layers/common.py",
                           "layers/conv.py", "layers/dense.py", "layers/loss.py",
                           "layers/merge.py", "layers/norm.py", "layers/sequence.py"],
    "objective": ["objective.py"],
    "datasets": ["datasets.py"],
    "diagnostics": ["diagnostics.py"],
    "pycode": ["pycode.py"],
    "export": ["export.py"],
}

# Mutants that behave exactly as the original for every input, so no test can kill them.
# Keyed by mutmut's name; each reason says why. Names hold while the function is unchanged.
EQUIVALENT: dict[str, str] = {
    "layerlab.core.trainer.xǁTrainerǁ_train_step__mutmut_81":
        "accumulate >= 1 for > 1: with accumulate 1 a batch is its whole group, so its share "
        "is exactly 1.0 and the loss is multiplied by 1.0",
    "layerlab.core.settings.x_settings_from__mutmut_96":
        "precision None for 'float32' when the key is missing: the trainer only asks whether "
        "it is 'bfloat16', so both train in float32",
    "layerlab.core.export.x_export_onnx__mutmut_14":
        "external_data None for False: torch only tests its truth (and writes external data "
        "past 2 GB either way)",
    "layerlab.core.export.x_export_onnx__mutmut_59":
        "the ONNX check draws both of its random samples with seed 0 instead of seeds 1 and 7: "
        "it compares the same files on other random inputs, none more right than another",
    "layerlab.core.export.x__dynamic_batch__mutmut_12":
        "the batch dimension's declared upper bound 2^21 for 2^20: only batches of over a "
        "million samples would be treated differently",
}
# Mutants that differ only on a CUDA device, which these machines lack (no test here can run
# the code they change differently): left out like equivalent ones, and listed apart.
CUDA_ONLY: dict[str, str] = {
    "layerlab.core.trainer.xǁTrainerǁ__init____mutmut_80":
        "the GPU index of a torchrun process (cuda only)",
    "layerlab.core.trainer.xǁTrainerǁ_reduce__mutmut_9":
        "the device of the sample count tensor: the loss's device is the CPU here",
    "layerlab.core.trainer.xǁTrainerǁ_wrap_ddp__mutmut_8":
        "DistributedDataParallel's device_ids, None on the CPU either way",
}

KILLED = {1, 3, 24, -24, 152, 255, 36}  # test failure, pytest internal error, timeouts


def string_only(diff: str) -> bool:
    """Whether the mutant changes nothing but the text inside string literals."""
    removed = "\n".join(line[1:] for line in diff.splitlines()
                        if line.startswith("-") and not line.startswith("---"))
    added = "\n".join(line[1:] for line in diff.splitlines()
                      if line.startswith("+") and not line.startswith("+++"))
    return _shape(removed) == _shape(added) is not None


def string_lines_only(diff: str) -> bool:
    """The same test line by line, for strings continued over several lines: each changed
    line read on its own (indent dropped, an unclosed bracket tolerated)."""
    removed = [line[1:].strip() for line in diff.splitlines()
               if line.startswith("-") and not line.startswith("---")]
    added = [line[1:].strip() for line in diff.splitlines()
             if line.startswith("+") and not line.startswith("+++")]
    return len(removed) == len(added) > 0 and all(
        _tokens(a) == _tokens(b) for a, b in zip(removed, added, strict=True))


def _tokens(line: str) -> list[tuple[int, str]]:
    found = []
    try:
        for t in tokenize.generate_tokens(io.StringIO(line).readline):
            if t.type not in (tokenize.NL, tokenize.NEWLINE, tokenize.ENDMARKER):
                found.append((t.type, "" if _plain_string(t) else t.string))
    except (tokenize.TokenError, IndentationError, SyntaxError):
        pass  # a bracket left open for the next line
    return found


def _shape(code: str) -> list[tuple[int, str]] | None:
    """The code's tokens with every plain string literal's text blanked (None: not
    tokenizable). f-strings stay as they are: mutmut never mutates their text, only the code
    inside their braces, and that is not a string mutant."""
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(code).readline))
    except (tokenize.TokenError, IndentationError, SyntaxError):
        return None
    return [(t.type, "" if _plain_string(t) else t.string) for t in tokens
            if t.type not in (tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT,
                              tokenize.COMMENT, tokenize.ENDMARKER)]


def _plain_string(token: tokenize.TokenInfo) -> bool:
    if token.type != tokenize.STRING:
        return False
    prefix = token.string[:min(token.string.find(q) for q in "'\"" if q in token.string)]
    return "f" not in prefix.lower()


def export_head(work: Path) -> None:
    """The committed tree in `work`, replacing the last one but keeping mutmut's cache."""
    archive = subprocess.run(["git", "archive", "HEAD"], cwd=ROOT, capture_output=True,
                             check=True).stdout
    work.mkdir(parents=True, exist_ok=True)
    for child in work.iterdir():
        if child.name != "mutants":
            shutil.rmtree(child) if child.is_dir() else child.unlink()
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(work, filter="data")


def sync_copy() -> None:
    """mutmut copies src/ once and then keeps modules it does not mutate as they were:
    bring those up to date with the tree (other modules change too)."""
    if not (MUTANTS / SRC).exists():
        return
    for copy in (MUTANTS / SRC).rglob("*.py"):
        if not (SRC / copy.relative_to(MUTANTS / SRC)).exists():
            copy.unlink()
    for source in SRC.rglob("*"):
        if source.is_dir() or "__pycache__" in source.parts:
            continue
        copy = MUTANTS / source
        if source.suffix == ".py" and _mutated(source):
            continue
        if not copy.exists() or not filecmp.cmp(source, copy, shallow=False):
            copy.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, copy)


def _mutated(path: Path) -> bool:
    return any(path.is_relative_to(CORE / name) or path == CORE / name
               for names in GROUPS.values() for name in names)


def generate() -> None:
    """Write every mutant into mutants/ (as `mutmut run` does first), run nothing."""
    from mutmut.__main__ import create_mutants
    from mutmut.mutation.trampoline import set_mutant_under_test
    from mutmut.utils.file_utils import copy_also_copy_files, copy_src_dir, setup_source_paths

    set_mutant_under_test("mutant_generation")
    MUTANTS.mkdir(exist_ok=True)
    copy_src_dir()
    copy_also_copy_files()
    setup_source_paths()
    create_mutants(1)
    set_mutant_under_test("")


IMPORT_PROBE = """
import importlib, json, sys
seen = set()
def note(frame, event, arg):
    if event == "call" and "/layerlab/core/" in frame.f_code.co_filename:
        seen.add(frame.f_code.co_filename.split("/layerlab/core/")[1] + ":"
                 + frame.f_code.co_qualname)
sys.setprofile(note)
for module in sys.argv[1:]:
    importlib.import_module(module)
sys.setprofile(None)
print(json.dumps(sorted(seen)))
"""


def import_time_functions() -> set[str]:
    """mutmut's names of the functions that run while their module is imported (catalogue
    and option tables built by factories). mutmut 3 switches a mutant on per call, after
    every module is imported, so a mutant of such a function can never be active: it is
    neither killed nor survives, and is left out of the count."""
    modules = [f"layerlab.core.{m.removesuffix('.py').replace('/', '.')}"
               for names in GROUPS.values() for m in names]
    out = subprocess.run([sys.executable, "-c", IMPORT_PROBE, *modules], check=True,
                         capture_output=True, text=True, env={**os.environ, "PYTHONPATH": "src"})
    names = set()
    for entry in json.loads(out.stdout):
        module, _, qualname = entry.partition(":")
        parts = qualname.split(".")
        if "<" in qualname or len(parts) > 2:
            continue  # module code, comprehensions, nested functions (part of their parent)
        mangled = "x_" + parts[0] if len(parts) == 1 else f"xǁ{parts[0]}ǁ{parts[1]}"
        names.add(f"layerlab.core.{module.removesuffix('.py').replace('/', '.')}.{mangled}")
    return names


def load_meta(module: str) -> dict[str, int | None]:
    meta = MUTANTS / CORE / f"{module}.meta"
    return json.loads(meta.read_text())["exit_code_by_key"] if meta.exists() else {}


def function_hash(name: str, module: str) -> str | None:
    """mutmut's hash of the function the mutant `name` changes (a changed function renumbers
    its mutants, so a verdict kept by name holds only while the hash does)."""
    meta = MUTANTS / CORE / f"{module}.meta"
    hashes = json.loads(meta.read_text())["hash_by_function_name"] if meta.exists() else {}
    return hashes.get(name.rpartition(".")[2].rpartition("__mutmut_")[0])


def candidates(module: str, cache: dict[str, bool]) -> tuple[list[str], int]:
    """The module's mutants less the string-literal ones, and how many were left out."""
    from mutmut.mutation.diff_apply import get_diff_for_mutant

    names, strings = [], 0
    for name in sorted(load_meta(module)):
        # a changed function renumbers its mutants; v2: f-strings are not string mutants
        key = f"{name}@{function_hash(name, module)}@v2"
        if key not in cache:
            cache[key] = string_only(get_diff_for_mutant(name, path=CORE / module))
        if cache[key]:
            strings += 1
        else:
            names.append(name)
    return names, strings


def sample(groups: list[str], per_group: int, seed: int) -> dict[str, tuple[list[str], int, int]]:
    """module -> (its sampled names, its mutants after the string filter, its string
    mutants). Each group's sample is drawn from all of its modules' mutants together."""
    cache_path = MUTANTS / "string-mutants.json"
    cache = json.loads(cache_path.read_text()) if cache_path.exists() else {}
    chosen = {}
    import_time = import_time_functions()
    for group in groups:
        pool = {module: candidates(module, cache) for module in GROUPS[group]}
        everyone = [n for names, _ in pool.values() for n in names]
        picked = set(random.Random(f"{seed}:{group}").sample(everyone,
                                                             min(per_group, len(everyone))))
        # drawn first, left out after: the sample does not move when a list changes
        picked = {n for n in picked if n not in EQUIVALENT and n not in CUDA_ONLY
                  and n.rpartition("__mutmut_")[0] not in import_time
                  and not string_lines_only(_diff(n))}
        for module, (names, strings) in pool.items():
            chosen[module] = ([n for n in names if n in picked], len(names), strings)
    cache_path.write_text(json.dumps(cache))
    return chosen


def _diff(name: str) -> str:
    from mutmut.mutation.diff_apply import get_diff_for_mutant

    module = next(m for names in GROUPS.values() for m in names
                  if name.startswith(f"layerlab.core.{m.removesuffix('.py').replace('/', '.')}."))
    return get_diff_for_mutant(name, path=CORE / module)


def _pytest(tests: list[str], mutant: str) -> int:
    """pytest's exit code on the working tree's `tests`, importing the mutated layerlab
    (mutmut's trampolines pick `mutant`; "" runs the original)."""
    env = {**os.environ, "MUTANT_UNDER_TEST": mutant, "QT_QPA_PLATFORM": "offscreen",
           "PYTHONPATH": str(Path.cwd() / MUTANTS / SRC)}
    command = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider",
               "-p", "no:xdist", *(str(ROOT / t) for t in tests)]
    try:
        return subprocess.run(command, cwd=MUTANTS, env=env, capture_output=True,
                              timeout=600, check=False).returncode
    except subprocess.TimeoutExpired:
        return 24  # as mutmut counts a timeout: killed


def recheck(chosen: dict[str, tuple[list[str], int, int]], tests: list[str]) -> None:
    """Run every sampled mutant mutmut left alive against `tests`; keep the verdicts."""
    missing = [t for t in tests if not (ROOT / t).is_file()]
    if missing:
        sys.exit(f"no such test file: {', '.join(missing)} (paths are from {ROOT})")
    if _pytest(tests, "") != 0:
        sys.exit(f"the re-check tests fail without any mutant: {' '.join(tests)}")
    path = MUTANTS / "recheck.json"
    done = json.loads(path.read_text()) if path.exists() else {}
    for module, (names, _, _) in chosen.items():
        codes = load_meta(module)
        for name in names:
            if codes.get(name) is None or codes[name] in KILLED:
                continue
            code = _pytest(tests, name)
            done[f"{name}@{function_hash(name, module)}"] = code in KILLED
            print(f"re-check {name}: {'killed' if code in KILLED else 'survived'} "
                  f"(exit {code})", flush=True)
            path.write_text(json.dumps(done, indent=1))


def rechecked(name: str, module: str) -> bool:
    path = MUTANTS / "recheck.json"
    done = json.loads(path.read_text()) if path.exists() else {}
    return bool(done.get(f"{name}@{function_hash(name, module)}"))


def report(chosen: dict[str, tuple[list[str], int, int]], survivors: bool) -> None:
    from mutmut.mutation.diff_apply import get_diff_for_mutant

    print(f"{'module':28} {'killed/run':>14} {'score':>6}   (of N after the string filter; "
          "string mutants)")
    total_k = total_n = 0
    for group, modules in GROUPS.items():
        group_k = group_n = 0
        for module in modules:
            if module not in chosen:
                continue
            names, population, strings = chosen[module]
            codes = load_meta(module)
            tried = [n for n in names if codes.get(n) is not None]
            later = [n for n in tried if codes[n] not in KILLED and rechecked(n, module)]
            killed = [n for n in tried if codes[n] in KILLED] + later
            group_k, group_n = group_k + len(killed), group_n + len(tried)
            note = f" ({len(names) - len(tried)} not run yet)" if len(tried) < len(names) else ""
            note += f" ({len(later)} by re-check)" if later else ""
            print(f"  {module:26} {len(killed):>6}/{len(tried):<7} {_pct(len(killed), len(tried))}"
                  f"   (of {population}, {strings} string){note}")
            if survivors:
                for name in names:
                    if codes.get(name) not in KILLED and not rechecked(name, module):
                        print(f"    # {name}: exit {codes.get(name)}")
                        print(_indent(get_diff_for_mutant(name, path=CORE / module)))
        if group_n:
            print(f"{group:28} {group_k:>6}/{group_n:<7} {_pct(group_k, group_n)}")
        total_k, total_n = total_k + group_k, total_n + group_n
    print(f"{'overall':28} {total_k:>6}/{total_n:<7} {_pct(total_k, total_n)}")
    print("left out of the sample: string-literal mutants, EQUIVALENT and CUDA_ONLY ones, "
          "and mutants of functions that run only at import (see import_time_functions)")


def _pct(k: int, n: int) -> str:
    return f"{100 * k / n:5.1f}%" if n else "    -"


def _indent(text: str) -> str:
    return "\n".join("      " + line for line in text.splitlines()[2:])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--per-group", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--group", action="append", choices=list(GROUPS),
                        help="only these groups (repeatable); default all")
    parser.add_argument("--report", action="store_true", help="report, run nothing")
    parser.add_argument("--survivors", action="store_true", help="show survivors' diffs")
    parser.add_argument("--recheck", nargs="+", metavar="TEST",
                        help="run the survivors against these test files (implies --report)")
    args = parser.parse_args()
    work = ROOT / "mutants" / "head"
    args.report = args.report or bool(args.recheck)
    if not args.report:
        export_head(work)
    os.chdir(work)
    groups = args.group or list(GROUPS)
    if not args.report:
        sync_copy()
        generate()
    chosen = sample(groups, args.per_group, args.seed)
    names = [n for picked, _, _ in chosen.values() for n in picked]
    if not args.report and names:
        mutmut = Path(sys.executable).with_name("mutmut")
        subprocess.run([str(mutmut), "run", "--max-children", "1", *names], check=False)
    if args.recheck:
        recheck(chosen, args.recheck)
    report(chosen, args.survivors)
    return 0


if __name__ == "__main__":
    sys.exit(main())
