"""The main window: canvas in the middle, palette left, inspector right, menus, status bar,
files (open, save, recent, examples, crash recovery) and the document's undo stack."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QByteArray, QSettings, Qt, QTimer
from PySide6.QtGui import QAction, QCloseEvent, QKeySequence
from PySide6.QtWidgets import (
    QDockWidget,
    QFileDialog,
    QLabel,
    QMainWindow,
    QMenu,
    QMessageBox,
    QWidget,
)

from layerlab import __version__
from layerlab.app import (
    attention_ops,
    compare_ops,
    edit_ops,
    generate_ops,
    import_ops,
    layout_ops,
    new_from_data,
    parts_ops,
    picture,
    runs_ops,
    stages_view,
)
from layerlab.app.canvas.scene import GraphScene
from layerlab.app.canvas.view import GraphView
from layerlab.app.commands import SetAttribute
from layerlab.app.document import Document
from layerlab.app.file_ops import FilesMixin, example_project, recovery_path
from layerlab.app.health_view import HealthBadges
from layerlab.app.inspector import Inspector
from layerlab.app.model_size import parameter_line
from layerlab.app.palette import Palette
from layerlab.app.stepper import Stepper
from layerlab.app.stepper_dock import StepperDock
from layerlab.app.training_dock import TrainingDock
from layerlab.core.examples import DEFAULT_EXAMPLE, example_names
from layerlab.core.layout import place_if_unplaced
from layerlab.core.project import Project
from layerlab.core.runtime import pick_device

AUTOSAVE_MS = 60_000
MAX_RECENT = 8
FILE_FILTER = "LayerLab projects (*.layerlab.json *.json);;All files (*)"
EXPORTS = (("onnx", "ONNX", ".onnx"), ("pt2", "torch.export (.pt2)", ".pt2"),
           ("python", "Standalone Python", ".py"), ("safetensors", "safetensors", ".safetensors"))


class MainWindow(FilesMixin, QMainWindow):
    def __init__(self, project: Project | None = None, offer_recovery: bool = True) -> None:
        super().__init__()
        self.setObjectName("mainWindow")
        self.setAccessibleName("LayerLab")
        self.settings = QSettings()
        self.recording = False  # a step-through recording is under way
        self.actions: dict[str, QAction] = {}
        project = project or example_project(DEFAULT_EXAMPLE)
        place_if_unplaced(project)
        self.doc = Document(project, self)
        self.scene = GraphScene(self.doc)
        self.view = GraphView(self.scene)
        self.setCentralWidget(self.view)
        self.palette_widget = Palette()
        self.inspector = Inspector(self.doc)
        self.palette_dock = self.add_dock("paletteDock", "Layers", self.palette_widget,
                                       Qt.DockWidgetArea.LeftDockWidgetArea)
        self.inspector_dock = self.add_dock("inspectorDock", "Inspector", self.inspector,
                                         Qt.DockWidgetArea.RightDockWidgetArea)
        self.training = TrainingDock(self.doc)
        self.inspector.statistics = self.training.statistics
        self.training_dock = self.add_dock("trainingDock", "Training", self.training,
                                        Qt.DockWidgetArea.BottomDockWidgetArea)
        self.stepper = Stepper(self.scene)
        self.stepper_panel = StepperDock(self.stepper)
        self.stepper_dock = self.add_dock("stepperDock", "Step-through", self.stepper_panel,
                                       Qt.DockWidgetArea.BottomDockWidgetArea)
        self.tabifyDockWidget(self.training_dock, self.stepper_dock)
        self.stepper_dock.hide()  # shown when step-through starts
        self.health = HealthBadges(self.scene, self.training.controller, self.doc)
        self.runs = runs_ops.install(self)  # the runs table and the run folders
        self._status_bar()
        self._menus()
        self._wire()
        self.compare = compare_ops.install(self)  # Run ▸ Compare…, Help ▸ Lessons
        import_ops.install(self)  # File ▸ Import Model…
        self.stages = stages_view.install(self)  # View ▸ Pipeline Stages, Start Stage Here
        parts_ops.install(self, generate_ops.install(self).carry)  # Generate…; Open Block
        self.attention = attention_ops.install(self)  # Run ▸ Show Attention…
        self._attach(self.doc)
        self.autosave = QTimer(self)
        self.autosave.setObjectName("autosaveTimer")
        self.autosave.timeout.connect(self.write_recovery)
        self.autosave.start(AUTOSAVE_MS)
        self.resize(1400, 900)
        geometry = self.settings.value("window/geometry")
        if isinstance(geometry, QByteArray):
            self.restoreGeometry(geometry)
            self.restoreState(self.settings.value("window/state", QByteArray()))
            self.stepper_dock.hide()  # step-through starts from the Run menu, not from memory
        else:
            QTimer.singleShot(0, self._default_layout)
        self.update_title()
        QTimer.singleShot(0, self.view.show_opening)
        if offer_recovery:
            QTimer.singleShot(0, self.offer_recovery)

    # -- construction -----------------------------------------------------------------
    def add_dock(self, name: str, title: str, widget: QWidget,
                 area: Qt.DockWidgetArea) -> QDockWidget:
        """A dock with its object and accessible names, added to the window."""
        dock = QDockWidget(title, self)
        dock.setObjectName(name)
        dock.setAccessibleName(title)
        dock.setWidget(widget)
        self.addDockWidget(area, dock)
        return dock

    def _status_bar(self) -> None:
        bar = self.statusBar()
        bar.setObjectName("statusBar")
        self.file_label = QLabel()
        self.valid_label = QLabel()
        self.params_label = QLabel()
        self.device_label = QLabel(f"device: {pick_device('auto').type}")
        bar.addPermanentWidget(self.health.label)  # a run's verdict, when one stands
        for name, widget in (("statusFile", self.file_label), ("statusValidity",
                                                                self.valid_label),
                             ("statusParameters", self.params_label),
                             ("statusDevice", self.device_label)):
            widget.setObjectName(name)
            widget.setAccessibleName(name)
            bar.addPermanentWidget(widget)

    def action(self, name: str, text: str, slot: object, shortcut: object = None,
               tip: str = "") -> QAction:
        act = QAction(text, self)
        act.setObjectName(name)
        if shortcut is not None:
            act.setShortcut(QKeySequence(shortcut))
            act.setShortcutContext(Qt.ShortcutContext.WindowShortcut)
        act.setStatusTip(tip or text.replace("&", "").rstrip("…"))
        act.setToolTip(tip or text.replace("&", "").rstrip("…"))
        act.triggered.connect(slot)
        self.addAction(act)
        self.actions[name] = act
        return act

    def _menus(self) -> None:
        bar = self.menuBar()
        bar.setObjectName("menuBar")
        k = QKeySequence.StandardKey
        file = bar.addMenu("&File")
        file.setObjectName("fileMenu")
        file.addAction(self.action("actionNew", "&New", self.new_file, k.New))
        file.addAction(self.action(
            "actionNewFromData", "New from &Data…", lambda: new_from_data.run_dialog(self),
            "Ctrl+Shift+N", "A starter project sized to your own table or image folder"))
        file.addAction(self.action("actionOpen", "&Open…", self.open_dialog, k.Open))
        self.examples_menu = file.addMenu("Open &Example")
        self.examples_menu.setObjectName("examplesMenu")
        for name in example_names():
            self.examples_menu.addAction(self.action(
                f"actionExample_{name.replace('-', '_')}", name,
                lambda checked=False, n=name: self.open_example(n)))
        self.recent_menu = file.addMenu("Open &Recent")
        self.recent_menu.setObjectName("recentMenu")
        file.addSeparator()
        file.addAction(self.action("actionSave", "&Save", self.save, k.Save))
        file.addAction(self.action("actionSaveAs", "Save &As…", self.save_as, k.SaveAs))
        file.addSeparator()
        file.addAction(self.action("actionLoadWeights", "&Load Weights…", self.load_weights_dialog,
                                   tip="Fine-tune: load trained weights by name and shape"))
        export = file.addMenu("&Export")
        export.setObjectName("exportMenu")
        for fmt, title, suffix in EXPORTS:
            export.addAction(self.action(f"actionExport_{fmt}", f"{title}…",
                                         lambda checked=False, f=fmt, s=suffix, t=title:
                                         self.export_dialog(f, s, t)))
        file.addAction(self.action("actionExportPicture", "Export &Picture…",
                                   lambda: picture.export_dialog(self),
                                   tip="Save a picture of the graph (PNG, or SVG for papers)"))
        file.addSeparator()
        # k.Quit has no keys outside GNOME, KDE and macOS: Ctrl+Q (Cmd+Q on macOS) everywhere
        file.addAction(self.action("actionQuit", "&Quit", self.close, "Ctrl+Q"))
        edit = bar.addMenu("&Edit")
        edit.setObjectName("editMenu")
        undo = self.doc.undo_stack.createUndoAction(self, "&Undo")
        redo = self.doc.undo_stack.createRedoAction(self, "&Redo")
        for act, name, key in ((undo, "actionUndo", k.Undo), (redo, "actionRedo", k.Redo)):
            act.setObjectName(name)
            act.setShortcut(QKeySequence(key))
            self.actions[name] = act
            self.addAction(act)
            edit.addAction(act)
        edit.addSeparator()
        edit.addAction(self.action("actionCut", "Cu&t", self.cut, k.Cut))
        edit.addAction(self.action("actionCopy", "&Copy", self.copy, k.Copy))
        edit.addAction(self.action("actionPaste", "&Paste", self.paste, k.Paste))
        edit.addAction(self.action("actionDuplicate", "D&uplicate", self.duplicate, "Ctrl+D"))
        edit.addAction(self.action("actionDelete", "&Delete", self.delete, k.Delete))
        edit.addAction(self.action("actionSelectAll", "Select &All", self.select_all,
                                   k.SelectAll))
        edit.addAction(self.action("actionFreeze", "&Freeze / Unfreeze", self.toggle_freeze,
                                   "Ctrl+L", "Keep the selected layers out of training"))
        edit.addSeparator()
        edit.addAction(self.action(
            "actionGroup", "&Group", lambda: edit_ops.group_selection(self.scene), "Ctrl+G",
            "Collapse the selected layers into one named block (double-click to expand)"))
        edit.addAction(self.action(
            "actionUngroup", "U&ngroup", lambda: edit_ops.ungroup_selection(self.scene),
            "Ctrl+Shift+G", "Dissolve the selected groups; their layers stay"))
        view = bar.addMenu("&View")
        view.setObjectName("viewMenu")
        view.addAction(self.action("actionZoomIn", "Zoom &In", self.view.zoom_in, "Ctrl++"))
        view.addAction(self.action("actionZoomOut", "Zoom &Out", self.view.zoom_out, "Ctrl+-"))
        view.addAction(self.action("actionFit", "&Fit to Window", self.view.fit, "Ctrl+0"))
        view.addAction(self.action("actionAutoLayout", "&Auto-Layout",
                                   lambda: layout_ops.auto_layout(self.doc), "Ctrl+Shift+L",
                                   "Lay the graph out in layers, crossings kept few"))
        flow = self.action("actionLeftToRight", "Flow &Left to Right",
                           lambda on: layout_ops.auto_layout(self.doc, "LR" if on else "TB"),
                           tip="Lay the graph out left to right instead of top to bottom")
        flow.setCheckable(True)
        flow.setChecked(self.doc.project.direction == "LR")
        view.addAction(flow)
        self.thumbs = self.action("actionThumbnails", "Node &Thumbnails", self._thumbnails,
                                  "Ctrl+T", "Show each node's output over the input plane "
                                  "(2-D datasets, while training)")
        self.thumbs.setCheckable(True)
        view.addAction(self.thumbs)
        view.addSeparator()
        for dock in (self.palette_dock, self.inspector_dock, self.training_dock,
                     self.stepper_dock):
            toggle = dock.toggleViewAction()
            toggle.setObjectName(f"action{dock.objectName()[0].upper()}{dock.objectName()[1:]}")
            view.addAction(toggle)
        self.run_menu = bar.addMenu("&Run")
        self.run_menu.setObjectName("runMenu")
        t = self.training
        run_actions = {
            "train": self.action("actionTrain", "&Train", t.start, "F5",
                                 "Train the network (continues a stopped run)"),
            "pause": self.action("actionPause", "&Pause", t.toggle_pause, "F6",
                                 "Pause or resume training"),
            "step": self.action("actionStep", "&Step", t.step, "F10",
                                "Train on one batch, then pause"),
            "stop": self.action("actionStop", "St&op", t.controller.stop, "Shift+F5",
                                "Stop after this batch"),
            "reset": self.action("actionReset", "&Reset Weights", self._reset_weights,
                                 tip="Forget the trained weights: the next run starts fresh"),
        }
        for act in run_actions.values():
            self.run_menu.addAction(act)
        t.bind(run_actions)
        self.run_menu.addSeparator()
        self.run_menu.addAction(self.action(
            "actionStepThrough", "Step &Through", self.step_through, "F11",
            "Record the next training step and walk through it node by node"))
        panel = self.stepper_panel
        for name, text, slot, key in (
                ("actionStepNext", "Next Event", self.stepper.forward, "Right"),
                ("actionStepBack", "Previous Event", self.stepper.back, "Left"),
                ("actionStepPlay", "Play / Pause", panel.toggle_play, "K")):
            act = self.action(name, text, slot, key)
            act.setEnabled(False)
            self.run_menu.addAction(act)
        toolbar = self.addToolBar("Run")
        toolbar.setObjectName("runToolbar")
        for name in ("actionTrain", "actionPause", "actionStep", "actionStop",
                     "actionStepThrough"):
            act = self.actions[name]
            toolbar.addAction(act)
            button = toolbar.widgetForAction(act)
            button.setObjectName(f"tool_{name}")
            button.setAccessibleName(act.text().replace("&", ""))
        help_menu = bar.addMenu("&Help")
        help_menu.setObjectName("helpMenu")
        help_menu.addAction(self.action("actionAbout", "&About LayerLab", self.about))
        self._fill_recent()
        for menu in bar.findChildren(QMenu):
            menu.menuAction().setObjectName(f"{menu.objectName()}Action")

    def toggle_freeze(self) -> None:
        nodes = [n for n in self.scene.selected_nodes() if self.doc.counts.get(n)]
        if not nodes or self.doc.structure_locked:
            return
        freeze = not all(self.doc.graph.nodes[n].get("frozen") for n in nodes)
        self.doc.undo_stack.beginMacro(f"{'Freeze' if freeze else 'Unfreeze'} "
                                       f"{', '.join(nodes)}")
        for node in nodes:
            old = self.doc.graph.nodes[node].get("frozen")
            self.doc.undo_stack.push(SetAttribute(self.doc, node, "frozen", old,
                                                  True if freeze else None, "Freeze"))
        self.doc.undo_stack.endMacro()

    def export_dialog(self, fmt: str, suffix: str, title: str) -> None:
        stem = Path(self.doc.project.path.name.split(".")[0]) if self.doc.project.path \
            else Path("model")
        path, _ = QFileDialog.getSaveFileName(self, f"Export as {title}",
                                              str(Path(self._last_dir()) / f"{stem}{suffix}"))
        if path:
            self.statusBar().showMessage(f"Exporting {title}…")
            self.training.controller.export(fmt, path)

    def load_weights_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self, "Load weights", self._last_dir(),
            "Weights (*.safetensors *.pt *.pth);;All files (*)")
        if path:
            self.training.controller.load_weights(path)

    def _job_done(self, kind: str, report: str) -> None:
        self.statusBar().showMessage(report.splitlines()[0], 10_000)
        self.show_report("Export" if kind == "export" else "Load weights", report)

    def show_report(self, title: str, text: str) -> None:
        QMessageBox.information(self, title, text)

    def _wire(self) -> None:
        self.training.controller.worker.traced.connect(self._traced)
        self.actions["actionStop"].triggered.connect(self.cancel_recording)
        self.training.preview.sampleChosen.connect(self.step_through_sample)
        self.training.controller.worker.failed.connect(self._worker_failed)
        self.stepper.modeChanged.connect(self._step_mode)
        self.stepper.finished.connect(self._step_finished)
        self.view.context_actions = [self.actions[n] for n in (
            "actionFreeze", "actionDuplicate", "actionCopy", "actionDelete", "actionGroup",
            "actionUngroup")]
        self.training.controller.worker.done.connect(self._job_done)
        self.training.controller.started.connect(self.write_recovery)  # a crash loses nothing
        self.training.boundaryChanged.connect(self._thumbnails)
        self.scene.message.connect(self._scene_message)
        self.scene.selectionChanged.connect(self._selection_changed)
        self.inspector.selectNode.connect(self.select_node)
        self.palette_widget.activated.connect(self.add_from_palette)

    def _default_layout(self) -> None:
        self.resizeDocks([self.training_dock], [max(300, self.height() * 2 // 5)],
                         Qt.Orientation.Vertical)
        self.resizeDocks([self.palette_dock, self.inspector_dock], [200, 300],
                         Qt.Orientation.Horizontal)

    def _thumbnails(self) -> None:
        latest = self.training.latest_boundary
        self.training.watch_boundary(thumbnails=self.thumbs.isChecked())
        on = self.thumbs.isChecked() and latest is not None
        self.scene.show_thumbnails(latest.nodes if on else None)

    def step_through(self) -> None:
        """Enter step-through mode on the next batch, or leave it (or cancel its recording)."""
        if self.recording:
            self.cancel_recording()
            return
        if self.stepper.active:
            self.stepper.leave()
            return
        batch = int(self.doc.project.training.get("batch_size", 32))
        if self.doc.analysis.errors:
            self.statusBar().showMessage("Fix the graph's problems first.", 5000)
            return
        self._recording(self.training.controller.trace(keep=min(batch, 256)),
                        "Recording one training step… (Shift+F5 or F11 cancels)")

    def step_through_sample(self, index: int) -> None:
        """Step through one chosen sample of the dataset preview (no update is applied)."""
        if self.stepper.active:
            self.stepper.leave()
        if self.doc.analysis.errors:
            self.statusBar().showMessage("Fix the graph's problems first.", 5000)
            return
        self._recording(self.training.controller.trace_sample(index),
                        f"Recording sample {index}…")

    def _recording(self, started: bool, message: str) -> None:
        """A recording under way locks the graph; Stop (or F11 again) cancels it."""
        if started:
            self.recording = True
            self.doc.set_locked(True)
            self.actions["actionStop"].setEnabled(True)
            self.statusBar().showMessage(message)

    def cancel_recording(self) -> None:
        """Stop during a recording: its result is dropped when it arrives."""
        if self.recording and not self.stepper.active:
            self.recording = False
            self.actions["actionStop"].setEnabled(self.training.controller.state != "idle")
            self.doc.set_locked(False)
            self.statusBar().showMessage("Recording cancelled.", 5000)

    def _traced(self, trace: object) -> None:
        if not self.recording:
            return  # cancelled while it was recorded
        self.recording = False
        self.actions["actionStop"].setEnabled(self.training.controller.state != "idle")
        self.stepper.load(trace, self.doc.graph)  # type: ignore[arg-type]
        self.stepper_dock.show()
        self.stepper_dock.raise_()
        self.statusBar().showMessage("Step-through: Right/Left to step, K to play, "
                                     "F11 to leave.", 8000)

    def _step_mode(self, active: bool) -> None:
        for name in ("actionStepNext", "actionStepBack", "actionStepPlay"):
            self.actions[name].setEnabled(active)
        self.actions["actionStepThrough"].setText("Leave Step &Through" if active
                                                  else "Step &Through")
        if not active:
            self.doc.set_locked(False)
            self.health.redraw()  # step-through's badges are gone: the run's come back

    def _worker_failed(self, message: str) -> None:
        """A failed recording must not leave the graph locked (a failed run unlocks itself)."""
        if not self.stepper.active and self.training.controller.state == "idle":
            self.recording = False
            self.doc.set_locked(False)

    def _step_finished(self) -> None:
        if self.stepper.continuous:
            self.recording = self.training.controller.trace(
                keep=self.stepper.trace.kept["samples"])  # type: ignore[attr-defined]

    def _reset_weights(self) -> None:
        self.training.controller.reset()
        self.statusBar().showMessage("Weights reset: the next run starts from a fresh "
                                     "initialisation.", 5000)

    def _locked(self, locked: bool) -> None:
        self.inspector.setEnabled(not locked)
        self.palette_widget.setEnabled(not locked)
        for name in ("actionCut", "actionPaste", "actionDuplicate", "actionDelete",
                     "actionNew", "actionNewFromData", "actionOpen", "actionAutoLayout",
                     "actionLeftToRight"):
            self.actions[name].setEnabled(not locked)
        self.examples_menu.setEnabled(not locked)
        self.recent_menu.setEnabled(not locked and bool(self.recent_files()))
        if locked:
            self.statusBar().showMessage("Training: the graph is locked until the run stops.")
        else:
            self.statusBar().clearMessage()

    def _attach(self, doc: Document) -> None:
        # bound methods, not lambdas: Qt drops them with the window, so the undo stack's last
        # signal, sent while the window is being destroyed, reaches nothing
        doc.undo_stack.cleanChanged.connect(self._clean_changed)
        doc.analysisChanged.connect(self.update_status)
        doc.locked.connect(self._locked)
        doc.directionChanged.connect(self._flow_changed)
        self.update_status()

    def _flow_changed(self, direction: str) -> None:
        self.actions["actionLeftToRight"].setChecked(direction == "LR")

    def _clean_changed(self, clean: bool) -> None:
        self.update_title()

    def _scene_message(self, text: str) -> None:
        self.statusBar().showMessage(text, 6000)

    # -- document replacement ---------------------------------------------------------
    def set_project(self, project: Project) -> None:
        """Show another project; the document object stays, its undo history is cleared."""
        place_if_unplaced(project)
        self.doc.replace_project(project)
        self._flow_changed(project.direction)
        self.update_title()
        QTimer.singleShot(0, self.view.show_opening)

    # -- status and title -------------------------------------------------------------
    def update_title(self) -> None:
        path = self.doc.project.path
        name = path.name if path else "untitled"
        self.setWindowModified(not self.doc.undo_stack.isClean())
        self.setWindowTitle(f"{self.doc.project.name} — {name}[*] — LayerLab")
        self.file_label.setText(str(path) if path else "not saved")

    def update_status(self) -> None:
        errors = len(self.doc.analysis.errors)
        self.valid_label.setText("✓ valid" if not errors else f"✗ {errors} problem(s)")
        self.params_label.setText(parameter_line(self.doc))  # trainable of all, if not all

    def _selection_changed(self) -> None:
        nodes = self.scene.selected_nodes()
        group = self.scene.groups.group_of_selection(nodes)
        if group is not None:
            self.inspector.show_group(group)
        else:
            self.inspector.show_node(nodes[0] if len(nodes) == 1 else None)

    def select_node(self, node: str) -> None:
        self.scene.select_only([node])
        self.scene.groups.select_blocks([node])  # a node in a collapsed group: its block
        item = self.scene.nodes.get(node)
        if item is not None:
            self.view.centerOn(item)

    # -- edit -------------------------------------------------------------------------
    def add_from_palette(self, type_name: str) -> None:
        selected = self.scene.selected_nodes()
        if len(selected) == 1:  # spliced into its outgoing edges
            node = edit_ops.insert_after(self.scene, type_name, selected[0])
        else:
            node = self.scene.add_layer(
                type_name, self.view.mapToScene(self.view.viewport().rect().center()))
        if node:
            self.scene.select_only([node])

    def copy(self) -> None:
        edit_ops.copy_selection(self.scene)

    def cut(self) -> None:
        if edit_ops.copy_selection(self.scene):
            edit_ops.delete_selection(self.scene)

    def paste(self) -> None:
        edit_ops.paste(self.scene)

    def duplicate(self) -> None:
        if edit_ops.copy_selection(self.scene):
            edit_ops.paste(self.scene)

    def delete(self) -> None:
        edit_ops.delete_selection(self.scene)

    def select_all(self) -> None:
        for item in self.scene.nodes.values():
            item.setSelected(True)

    def closeEvent(self, event: QCloseEvent) -> None:
        if not self.confirm_discard():
            event.ignore()
            return
        self.autosave.stop()
        self.stepper.leave()
        self.training.controller.shutdown()
        recovery_path().unlink(missing_ok=True)
        self.settings.setValue("window/geometry", self.saveGeometry())
        self.settings.setValue("window/state", self.saveState())
        event.accept()

    def about(self) -> None:
        QMessageBox.about(self, "About LayerLab",
                          f"<b>LayerLab {__version__}</b><br>Design, train and understand "
                          "neural networks visually.")


