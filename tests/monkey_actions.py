"""The monkey's action table: what a person does in the window, each as real events on the
real widgets. Each action returns what it did (for the replay log), or None when it cannot
be done now (nothing to click, say); the runner then draws another."""

from __future__ import annotations

from collections.abc import Callable

from PySide6.QtCore import QPoint, QPointF, Qt, QTimer
from PySide6.QtGui import QContextMenuEvent
from PySide6.QtWidgets import (
    QApplication,
    QCheckBox,
    QComboBox,
    QGraphicsView,
    QLineEdit,
    QSpinBox,
    QWidget,
)

from layerlab.core.catalogue import CATALOGUE
from monkey import Action, Monkey
from monkey_files import (
    act_export,
    act_load_weights,
    act_new,
    act_open,
    act_open_example,
    act_open_recent,
    act_save,
    act_save_as,
)
from monkey_gestures import (
    CTRL,
    NO_MOD,
    SHIFT,
    click,
    drag,
    drop,
    focused,
    key,
    type_into,
    wait,
    wheel,
)

K = Qt.Key
GARBAGE = ("abc", "", " ", "-5", "-1", "0", "1e309", "-1e309", "99999999999999999999",
           "nan", "inf", "-inf", "1.5.3", "[1, 2", "1,,2", "😀", "None", "null", "true",
           "[]", "{}", "0x10", "1_000", "٣", "1e-320", "2.5", "=", "'x'", "[[1]]", "-0",
           "1e30", "x" * 300)
VALID_BY_KIND = {
    "int": ("1", "2", "4", "8", "16", "32"), "float": ("0", "0.1", "0.5", "1e-05", "0.9"),
    "shape": ("2", "64", "1, 8, 8", "784", "16, 4"), "size": ("1", "2", "3", "2, 2"),
    "padding": ("0", "1", "same", "valid"), "dims": ("1", "-1", "1, 2"),
    "text": ("x", "label"),
}
IDS = ("hidden", "fc_new", "a1", "x2", "2fast", "forward", "training", "", "a b", "fc1",
       "import", "é", "input", "loss")
TRAINING_VALID = {
    "validationSplit": ("0.1", "0.2", "0", "0.5", "0.9"),
    "learningRate": ("0.01", "0.001", "0.1", "1"),
    "optimizerArguments": ("", "momentum=0.5", "betas=(0.9, 0.99)",
                           "eps=1e-08, weight_decay=0.01", "weight_decay=0"),
    "l1": ("0", "0.001", "0.0001"), "l2": ("0", "0.001", "0.0001"),
    "batchSize": ("1", "16", "32", "64", "1000"), "epochs": ("1", "1", "2"),
    "seed": ("0", "42", "2147483647"),
}
ARG_GARBAGE = ("momentum=abc", "foo=1", "betas=(1,2,3)", "momentum=-1", "eps=", "lr=5",
               "name=sgd", "momentum=0.9, momentum=0.1", "betas=(0.9,", "weight_decay=-1")
FINISH = ("return", "return", "tab", "escape")


def _text(m: Monkey, valid: tuple[str, ...], extra: tuple[str, ...] = ()) -> str:
    return m.rng.choice(valid) if m.rng.random() < 0.55 else m.rng.choice(GARBAGE + extra)


# -- the canvas ---------------------------------------------------------------------------
def _view(m: Monkey) -> QGraphicsView:
    return m.win.view


def _viewport_point(m: Monkey) -> QPoint:
    rect = _view(m).viewport().rect()
    return QPoint(m.rng.randrange(5, max(6, rect.width() - 5)),
                  m.rng.randrange(5, max(6, rect.height() - 5)))


def _scene_point(m: Monkey, point: QPointF) -> QPoint | None:
    """The viewport point of a scene point, scrolled into view first (as a person would)."""
    view = _view(m)
    view.ensureVisible(point.x() - 5, point.y() - 5, 10, 10, 20, 20)
    p = view.mapFromScene(point)
    return p if view.viewport().rect().contains(p) else None


def _node(m: Monkey) -> str | None:
    nodes = sorted(m.win.scene.nodes)
    return m.rng.choice(nodes) if nodes else None


def act_drop(m: Monkey) -> str:
    type_name = m.rng.choice(sorted(CATALOGUE))
    point = _viewport_point(m)
    drop(_view(m), type_name, point)
    return f"{type_name} at ({point.x()}, {point.y()})"


def act_palette_double_click(m: Monkey) -> str | None:
    palette = m.win.palette_widget
    type_name = m.rng.choice(sorted(palette.items))
    item = palette.items[type_name]
    palette.tree.scrollToItem(item)
    rect = palette.tree.visualItemRect(item)
    if rect.isEmpty():
        return None  # filtered out by the search
    click(palette.tree.viewport(), rect.center(), double=True)
    return type_name


def act_palette_search(m: Monkey) -> str:
    text = m.rng.choice(("norm", "conv", "relu", "", "", "xyz", "😀", "lin"))
    type_into(m.win.palette_widget.search, text, m.rng.choice(FINISH))
    return repr(text)


def act_click_node(m: Monkey) -> str | None:
    node = _node(m)
    if node is None:
        return None
    item = m.win.scene.nodes[node]
    point = _scene_point(m, item.scenePos() + QPointF(60, 8))
    if point is None:
        return None
    mod = CTRL if m.rng.random() < 0.25 else NO_MOD
    click(_view(m).viewport(), point, mod)
    return f"{node}{' with Ctrl' if mod == CTRL else ''}"


def act_click_empty(m: Monkey) -> str:
    point = _viewport_point(m)
    click(_view(m).viewport(), point)
    return f"at ({point.x()}, {point.y()})"


def act_drag_node(m: Monkey) -> str | None:
    node = _node(m)
    if node is None:
        return None
    item = m.win.scene.nodes[node]
    start = _scene_point(m, item.scenePos() + QPointF(60, 8))
    if start is None:
        return None
    end = start + QPoint(m.rng.randint(-250, 250), m.rng.randint(-200, 200))
    drag(_view(m).viewport(), start, end)
    return f"{node} by ({end.x() - start.x()}, {end.y() - start.y()})"


def act_drag_port(m: Monkey) -> str | None:
    scene = m.win.scene
    sources = [n for n, item in sorted(scene.nodes.items()) if item.output is not None]
    if not sources:
        return None
    source = m.rng.choice(sources)
    m.win.view.fit()  # both ends on screen, as a person zooms out to wire far nodes
    start = _view(m).mapFromScene(scene.nodes[source].output.scenePos())
    targets = [(n, p) for n, item in sorted(scene.nodes.items()) for p in item.inputs]
    if targets and m.rng.random() < 0.85:
        target, port = m.rng.choice(targets)
        end = _view(m).mapFromScene(port.scenePos())
        what = f"{source} → {target}:{port.index}"
    else:
        end = _viewport_point(m)
        what = f"{source} → nowhere ({end.x()}, {end.y()})"
    drag(_view(m).viewport(), start, end)
    return what


def act_click_edge(m: Monkey) -> str | None:
    edges = sorted(m.win.scene.edges)
    if not edges:
        return None
    edge = m.rng.choice(edges)
    point = _scene_point(m, m.win.scene.edges[edge].path().pointAtPercent(0.5))
    if point is None:
        return None
    mod = CTRL if m.rng.random() < 0.3 else NO_MOD
    click(_view(m).viewport(), point, mod)
    return f"{edge[0]} → {edge[1]}"


def act_rubber_band(m: Monkey) -> str:
    a, b = _viewport_point(m), _viewport_point(m)
    drag(_view(m).viewport(), a, b)
    return f"({a.x()}, {a.y()}) to ({b.x()}, {b.y()})"


CANVAS_KEYS = (("Delete", K.Key_Delete, NO_MOD), ("Backspace", K.Key_Backspace, NO_MOD),
               ("Ctrl+A", K.Key_A, CTRL), ("Ctrl+C", K.Key_C, CTRL),
               ("Ctrl+V", K.Key_V, CTRL), ("Ctrl+X", K.Key_X, CTRL),
               ("Ctrl+D", K.Key_D, CTRL), ("Ctrl+L", K.Key_L, CTRL),
               ("Ctrl+Shift+L", K.Key_L, CTRL | SHIFT), ("Ctrl+T", K.Key_T, CTRL),
               ("Ctrl++", K.Key_Plus, CTRL), ("Ctrl+-", K.Key_Minus, CTRL),
               ("Ctrl+0", K.Key_0, CTRL), ("Escape", K.Key_Escape, NO_MOD),
               ("Delete", K.Key_Delete, NO_MOD))


def act_canvas_key(m: Monkey) -> str:
    name, code, mod = m.rng.choice(CANVAS_KEYS)
    _view(m).setFocus()
    key(_view(m), code, mod)
    return name


def act_context_menu(m: Monkey) -> str | None:
    """Right-click a node, then (once the menu is up, in its own event loop) Down a few
    times and Return, or Escape."""
    node = _node(m)
    if node is None:
        return None
    point = _scene_point(m, m.win.scene.nodes[node].scenePos() + QPointF(60, 8))
    if point is None:
        return None
    downs = m.rng.randrange(6)
    chosen: list[str] = []

    def answer() -> None:
        menu = QApplication.activePopupWidget()
        if menu is None:
            return
        for _ in range(downs):
            key(menu, K.Key_Down)
        active = menu.activeAction() if downs else None
        chosen.append(active.text() if active is not None else "dismissed")
        key(menu, K.Key_Return if active is not None else K.Key_Escape)

    QTimer.singleShot(30, answer)
    viewport = _view(m).viewport()
    QApplication.sendEvent(viewport, QContextMenuEvent(
        QContextMenuEvent.Reason.Mouse, point, viewport.mapToGlobal(point)))
    return f"{node} → {chosen[0] if chosen else 'no menu'}"


def act_wheel(m: Monkey) -> str:
    up = m.rng.random() < 0.5
    wheel(_view(m).viewport(), _viewport_point(m), up)
    return "up" if up else "down"


def act_pan(m: Monkey) -> str:
    a, b = _viewport_point(m), _viewport_point(m)
    drag(_view(m).viewport(), a, b, Qt.MouseButton.MiddleButton)
    return f"by ({b.x() - a.x()}, {b.y() - a.y()})"


# -- the inspector ------------------------------------------------------------------------
def _editors(parent: QWidget) -> list[QWidget]:
    found: list[QWidget] = []
    for kind in (QLineEdit, QSpinBox, QComboBox, QCheckBox):
        found += [w for w in parent.findChildren(kind)
                  if w.isVisible() and not w.objectName().startswith("qt_")
                  and w.objectName()]
    return sorted(found, key=lambda w: w.objectName())


def _edit(m: Monkey, widget: QWidget, valid: tuple[str, ...],
          extra: tuple[str, ...] = ()) -> str:
    """A change to a field as a person makes it; returns what was done."""
    name = widget.objectName()
    if isinstance(widget, QCheckBox):
        click(widget)
        return f"{name} toggled"
    if isinstance(widget, QComboBox):
        widget.setFocus()
        steps = m.rng.choice((-2, -1, 1, 1, 2, 3))
        for _ in range(abs(steps)):
            key(widget, K.Key_Down if steps > 0 else K.Key_Up)
        return f"{name} {steps:+d} → {widget.currentText()!r}"
    text = _text(m, valid, extra)
    finish = m.rng.choice(FINISH)
    type_into(widget, text, finish)
    return f"{name} ← {text[:40]!r} + {finish}"


def _select_a_layer_with_parameters(m: Monkey) -> str:
    """Click a node that has parameters to edit (most edits are of those)."""
    g = m.win.doc.graph
    nodes = [n for n in sorted(m.win.scene.nodes) if n in g and
             (CATALOGUE.get(g.nodes[n].get("type", "")) or CATALOGUE["Identity"]).params]
    if not nodes:
        return ""
    node = m.rng.choice(nodes)
    point = _scene_point(m, m.win.scene.nodes[node].scenePos() + QPointF(60, 8))
    if point is None:
        return ""
    click(_view(m).viewport(), point)
    return f"(clicked {node}) "


def act_inspector_field(m: Monkey) -> str | None:
    inspector = m.win.inspector
    clicked = ""
    params = [w for w in _editors(inspector.node_page) if w.objectName().startswith("param_")]
    if (inspector.node is None or not params) and m.rng.random() < 0.7:
        clicked = _select_a_layer_with_parameters(m)
    if inspector.node is None or not inspector.isEnabled():
        return None
    editors = _editors(inspector.node_page)
    if not editors:
        return None
    params = [w for w in editors if w.objectName().startswith("param_")]
    widget = m.rng.choice(params if params and m.rng.random() < 0.75 else editors)
    spec = CATALOGUE.get(m.win.doc.graph.nodes[inspector.node].get("type", "")) \
        if inspector.node in m.win.doc.graph else None
    if widget.objectName() == "nodeId":
        return f"{clicked}{inspector.node}: " + _edit(m, widget, IDS)
    name = widget.objectName().removeprefix("param_")
    param = next((p for p in spec.params if p.name == name), None) if spec else None
    valid = VALID_BY_KIND.get(param.kind, ("1",)) if param else ("1",)
    return f"{clicked}{inspector.node}: " + _edit(m, widget, valid)


def act_inspector_problem(m: Monkey) -> str | None:
    errors = m.win.inspector.errors
    if m.win.inspector.node is not None or not errors.isVisible() or not errors.count():
        return None
    row = m.rng.randrange(errors.count())
    rect = errors.visualItemRect(errors.item(row))
    click(errors.viewport(), rect.center())
    return errors.item(row).text()[:60] if errors.count() > row else str(row)


# -- the training form ----------------------------------------------------------------------
def _show_training(m: Monkey) -> str:
    if m.win.training.isVisible():
        return ""
    m.win.training_dock.show()
    m.win.training_dock.raise_()  # a click on its tab
    wait(5)
    return " (Training tab raised)"


def act_training_field(m: Monkey) -> str | None:
    raised = _show_training(m)
    form = m.win.training
    widgets = [w for w in _editors(form) if w.parentWidget() is not form.tabs and
               not form.tabs.isAncestorOf(w)]
    if not widgets:
        return None
    widget = m.rng.choice(widgets)
    extra = ARG_GARBAGE if widget.objectName() == "optimizerArguments" else ()
    valid = TRAINING_VALID.get(widget.objectName(), ("1",))
    return _edit(m, widget, valid, extra) + raised


def act_preview_sample(m: Monkey) -> str | None:
    """Click a point or an image of the dataset preview: step through that sample."""
    raised = _show_training(m)
    training = m.win.training
    tabs = training.tabs
    click(tabs.tabBar(), tabs.tabBar().tabRect(tabs.indexOf(training.preview)).center())
    preview = training.preview
    if preview.currentWidget() is preview.scatter:
        plot, points = preview.scatter, preview.points.points()
        if not len(points):
            return None
        point = points[m.rng.randrange(len(points))].pos()
    elif preview.currentWidget() is preview.images_plot:
        plot, image = preview.images_plot, preview.images
        if image.image is None:
            return None
        h, w = image.image.shape[:2]
        point = image.mapToView(QPointF(m.rng.uniform(0, h), m.rng.uniform(0, w)))
    else:
        return None
    where = plot.mapFromScene(plot.getPlotItem().vb.mapViewToScene(point))
    click(plot.viewport(), where)
    return f"at ({point.x():.2f}, {point.y():.2f}){raised}"


def act_results(m: Monkey) -> str | None:
    """Click a cell of the confusion matrix, or choose a layer's weight histogram."""
    raised = _show_training(m)
    training = m.win.training
    results = training.results
    tabs = training.tabs
    click(tabs.tabBar(), tabs.tabBar().tabRect(tabs.indexOf(results)).center())
    matrix = results.matrix
    if m.rng.random() < 0.3:
        return "histogram " + _edit(m, results.layer, ()) + raised
    if not matrix.rowCount():
        return None
    row, column = m.rng.randrange(matrix.rowCount()), m.rng.randrange(matrix.columnCount())
    matrix.scrollToItem(matrix.item(row, column))
    rect = matrix.visualItemRect(matrix.item(row, column))
    click(matrix.viewport(), rect.center())
    return f"cell ({row}, {column}){raised}"


def act_plots(m: Monkey) -> str | None:
    raised = _show_training(m)
    tabs = m.win.training.tabs
    tab = m.rng.randrange(tabs.count())
    click(tabs.tabBar(), tabs.tabBar().tabRect(tab).center())
    plots = m.win.training.plots
    if tab == 0 and m.rng.random() < 0.5:
        choice = m.rng.choice(("clear", "log", "run"))
        if choice == "clear":
            click(plots.clear_button)
        elif choice == "log":
            click(plots.log)
        elif plots.run_list.count():
            item = plots.run_list.item(m.rng.randrange(plots.run_list.count()))
            item.setCheckState(Qt.CheckState.Unchecked if item.checkState() ==
                               Qt.CheckState.Checked else Qt.CheckState.Checked)
        return f"tab {tabs.tabText(tab)!r}, {choice}{raised}"
    return f"tab {tabs.tabText(tab)!r}{raised}"


# -- runs and step-through ------------------------------------------------------------------
RUN_KEYS = {"train": (K.Key_F5, NO_MOD), "pause": (K.Key_F6, NO_MOD),
            "step": (K.Key_F10, NO_MOD), "stop": (K.Key_F5, SHIFT),
            "step through": (K.Key_F11, NO_MOD), "next event": (K.Key_Right, NO_MOD),
            "previous event": (K.Key_Left, NO_MOD), "play": (K.Key_K, NO_MOD)}
RUN_BUTTONS = {"train": "trainButton", "pause": "pauseButton", "step": "stepButton",
               "reset": "resetButton"}


def _run_key(m: Monkey, what: str) -> str:
    code, mod = RUN_KEYS[what]
    target = focused(m.win)
    key(target, code, mod)
    return f"{what} (key to {target.objectName() or type(target).__name__})"


def _run(what: str) -> Callable[[Monkey], str | None]:
    def act(m: Monkey) -> str | None:
        button = RUN_BUTTONS.get(what)
        if button and (what not in RUN_KEYS or m.rng.random() < 0.4):
            raised = _show_training(m)
            click(m.win.training.buttons[what.split()[0]])
            return f"{what} (button){raised}"
        return _run_key(m, what)
    return act


def act_stop(m: Monkey) -> str:
    if m.idle():
        return _run_key(m, "stop")
    return "Shift+F5 / Done: " + m.stop_everything()


def act_step_through(m: Monkey) -> str:
    return _run_key(m, "step through")


def act_stepper_control(m: Monkey) -> str | None:
    if not m.win.stepper.active:
        return None
    if m.rng.random() < 0.5:
        return _run_key(m, m.rng.choice(("next event", "next event", "previous event",
                                         "play")))
    panel = m.win.stepper_panel
    choice = m.rng.choice([*sorted(panel.buttons), "speed", "continuous", "sample"])
    if choice == "speed":
        return "speed " + _edit(m, panel.speed, ())
    if choice == "continuous":
        click(panel.continuous)
        return f"continuous {panel.continuous.isChecked()}"
    if choice == "sample":
        return "sample " + _edit(m, panel.sample, ("0", "1", "5"))
    if not panel.buttons[choice].isVisible():
        return None
    click(panel.buttons[choice])
    return f"button {choice}"


def act_undo(m: Monkey) -> str:
    target = focused(m.win)
    key(target, K.Key_Z, CTRL)
    return f"Ctrl+Z to {target.objectName() or type(target).__name__}"


def act_redo(m: Monkey) -> str:
    target = focused(m.win)
    key(target, K.Key_Z, CTRL | SHIFT)
    return f"Ctrl+Shift+Z to {target.objectName() or type(target).__name__}"


ACTIONS = [
    Action("drop", 6, act_drop), Action("palette double-click", 4, act_palette_double_click),
    Action("palette search", 1, act_palette_search), Action("click node", 8, act_click_node),
    Action("click empty", 2, act_click_empty), Action("drag node", 4, act_drag_node),
    Action("drag port", 6, act_drag_port), Action("click edge", 3, act_click_edge),
    Action("rubber band", 2, act_rubber_band), Action("canvas key", 7, act_canvas_key),
    Action("wheel", 1, act_wheel), Action("pan", 1, act_pan),
    Action("context menu", 2, act_context_menu),
    Action("inspector field", 12, act_inspector_field),
    Action("inspector problem", 1, act_inspector_problem),
    Action("training field", 8, act_training_field), Action("plots", 1, act_plots),
    Action("preview sample", 1, act_preview_sample, busy_weight=1),
    Action("results", 1, act_results),
    Action("train", 4, _run("train"), busy_weight=1, broken_weight=1),
    Action("pause", 1, _run("pause"), 3),
    Action("step", 2, _run("step"), 3), Action("reset weights", 1, _run("reset"), 1),
    Action("stop", 1, act_stop, busy_weight=9),
    Action("step through", 3, act_step_through, busy_weight=3, broken_weight=1),
    Action("step-through control", 0, act_stepper_control, busy_weight=30),
    Action("undo", 6, act_undo, broken_weight=14), Action("redo", 3, act_redo),
    Action("open example", 1, act_open_example, broken_weight=3), Action("new", 0.3, act_new),
    Action("save as", 1, act_save_as), Action("save", 1, act_save),
    Action("open", 1.5, act_open), Action("open recent", 0.5, act_open_recent),
    Action("export", 0.5, act_export), Action("load weights", 0.5, act_load_weights),
]
