"""The monkey's file actions: New, Open (saved files, files a person opens by mistake,
cancelled), Save and Save As (to good and unwritable places), recent files, examples,
export and loading weights. File dialogs answer what each action planned."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt

from layerlab.core.examples import example_names
from monkey import Monkey
from monkey_gestures import CTRL, SHIFT, focused, key
from monkey_support import bad_files

K = Qt.Key


def _menu_item(m: Monkey, name: str) -> bool:
    """Choose a menu item, as a click does: only when it and its menu are enabled."""
    action = m.win.actions[name]
    menus = [w for w in action.associatedObjects() if hasattr(w, "menuAction")]
    if not action.isEnabled() or not all(menu.isEnabled() for menu in menus):
        return False
    action.trigger()
    return True


def act_open_example(m: Monkey) -> str | None:
    name = m.rng.choice(example_names())
    return name if _menu_item(m, f"actionExample_{name.replace('-', '_')}") else None


def act_new(m: Monkey) -> str:
    key(focused(m.win), K.Key_N, CTRL)
    return "Ctrl+N"


def _save_target(m: Monkey) -> str:
    roll = m.rng.random()
    if roll < 0.1:
        return ""  # cancelled
    if roll < 0.2:
        return str(m.folder / "plain-file" / "under-a-file.layerlab.json")  # not writable
    return str(m.folder / f"saved{m.rng.randrange(4)}{m.rng.choice(('.layerlab.json', ''))}")


def _remember_save(m: Monkey) -> str:
    path = m.win.doc.project.path
    if path is None or not m.win.doc.undo_stack.isClean() or not Path(path).exists():
        return ""
    text = Path(path).read_text(encoding="utf-8")
    if text != m.win.doc.project.to_json():
        m.fail(f"the saved file {path} is not the document's JSON", "save")
    return f" → {Path(path).name}"


def act_save_as(m: Monkey) -> str:
    m.file_answers = {"save": _save_target(m)}
    key(focused(m.win), K.Key_S, CTRL | SHIFT)
    return f"Ctrl+Shift+S{_remember_save(m)}"


def act_save(m: Monkey) -> str:
    m.file_answers = {"save": _save_target(m)}
    key(focused(m.win), K.Key_S, CTRL)
    return f"Ctrl+S{_remember_save(m)}"


def act_open(m: Monkey) -> str:
    choices = [*sorted(m.written), *sorted(str(p) for p in bad_files(m.folder)), "",
               str(m.folder / "missing.layerlab.json"), str(m.folder)]
    chosen = m.rng.choice(choices)
    m.file_answers = {"open": chosen}
    key(focused(m.win), K.Key_O, CTRL)
    return f"Ctrl+O {Path(chosen).name if chosen else 'cancelled'}"


def act_open_recent(m: Monkey) -> str | None:
    actions = [a for a in m.win.recent_menu.actions() if a.isEnabled()]
    if not actions or not m.win.recent_menu.isEnabled():
        return None
    action = m.rng.choice(actions)
    text = action.text()
    action.trigger()  # may rebuild the menu, deleting this action
    return text


def act_export(m: Monkey) -> str | None:
    fmt = m.rng.choice(("python", "safetensors"))
    m.file_answers = {"save": m.rng.choice((
        str(m.folder / f"model.{'py' if fmt == 'python' else fmt}"),
        str(m.folder / "plain-file" / "x"), ""))}
    return fmt if _menu_item(m, f"actionExport_{fmt}") else None


def act_load_weights(m: Monkey) -> str | None:
    chosen = m.rng.choice((str(m.folder / "model.safetensors"), str(m.folder / "garbage.txt"),
                           ""))
    m.file_answers = {"open": chosen}
    if not _menu_item(m, "actionLoadWeights"):
        return None
    return Path(chosen).name if chosen else "cancelled"
