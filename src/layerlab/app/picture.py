"""Pictures of the graph, PNG or SVG, drawn by the canvas's own items: `layerlab render` and
File ▸ Export Picture both come here. In SVG the text stays text (QSvgGenerator writes
<text> elements), so a paper's reader can search and select it."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtCore import QRectF, QSize, Qt
from PySide6.QtGui import QColor, QImage, QPainter
from PySide6.QtSvg import QSvgGenerator
from PySide6.QtWidgets import QFileDialog, QMessageBox

from layerlab.app.canvas.scene import GraphScene
from layerlab.app.document import Document
from layerlab.core.layout import NODE_SIZE, apply, layered, place_if_unplaced
from layerlab.core.project import Project

if TYPE_CHECKING:
    from layerlab.app.main_window import MainWindow

MARGIN = 40.0
FORMATS = (".png", ".svg")


def save_picture(scene: GraphScene, path: Path, size: tuple[int, int] | None = None) -> None:
    """Draw the whole graph into `path` (.png or .svg): at its own size (100 %), or fitted
    and centred in `size` (width, height). Nothing is shown selected."""
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise ValueError(f"{path.name}: a picture is .png or .svg, not {suffix or 'nothing'}")
    source = scene.itemsBoundingRect().adjusted(-MARGIN, -MARGIN, MARGIN, MARGIN)
    width, height = size or (math.ceil(source.width()), math.ceil(source.height()))
    scale = min(width / source.width(), height / source.height())
    target = QRectF((width - source.width() * scale) / 2,
                    (height - source.height() * scale) / 2,
                    source.width() * scale, source.height() * scale)
    selected = scene.selectedItems()
    scene.clearSelection()
    try:
        if suffix == ".svg":
            _svg(scene, path, QSize(width, height), source)
        else:
            _png(scene, path, QSize(width, height), source, target)
    finally:
        for item in selected:
            item.setSelected(True)


def _png(scene: GraphScene, path: Path, size: QSize, source: QRectF, target: QRectF) -> None:
    image = QImage(size, QImage.Format.Format_ARGB32_Premultiplied)
    image.fill(QColor("white"))
    painter = QPainter(image)
    painter.setRenderHints(QPainter.RenderHint.Antialiasing
                           | QPainter.RenderHint.TextAntialiasing)
    scene.render(painter, target, source, Qt.AspectRatioMode.KeepAspectRatio)
    painter.end()
    if not image.save(str(path)):
        raise OSError(f"{path}: cannot be written")


def _svg(scene: GraphScene, path: Path, size: QSize, source: QRectF) -> None:
    """Drawn at 100 % (every node in full, as a reader zooms in), shown at `size`: the
    viewer scales the drawing to fit, centred (SVG's default preserveAspectRatio)."""
    generator = QSvgGenerator()
    generator.setFileName(str(path))
    generator.setSize(size)
    generator.setResolution(96)  # CSS pixels: a browser shows it at `size`
    generator.setViewBox(QRectF(0, 0, source.width(), source.height()))
    generator.setTitle(scene.doc.project.name)
    generator.setDescription("A network drawn by LayerLab")
    painter = QPainter()
    if not painter.begin(generator):
        raise OSError(f"{path}: cannot be written")
    target = QRectF(0, 0, source.width(), source.height())
    painter.fillRect(target, QColor("white"))
    scene.render(painter, target, source)
    painter.end()


def picture_of_project(project: Project, path: Path, size: tuple[int, int] | None = None,
                       direction: str | None = None) -> None:
    """A picture of `project` as the window draws it on opening: laid out if its nodes were
    never placed, or again flowing `direction` when one is given. Needs a QApplication."""
    if direction is not None:
        project.view["direction"] = direction
        apply(project, layered(project.graph, direction, NODE_SIZE))
    else:
        place_if_unplaced(project)
    doc = Document(project)
    scene = GraphScene(doc)
    try:
        save_picture(scene, path, size)
    finally:
        scene.clear()
        doc.deleteLater()


def export_dialog(window: MainWindow) -> None:
    """File ▸ Export Picture: ask where, then draw the window's graph there."""
    doc = window.doc
    stem = doc.project.path.name.split(".")[0] if doc.project.path else "graph"
    path, _ = QFileDialog.getSaveFileName(window, "Export picture", f"{stem}.png",
                                          "PNG picture (*.png);;SVG drawing (*.svg)")
    if not path:
        return
    target = Path(path) if Path(path).suffix.lower() in FORMATS else Path(f"{path}.png")
    try:
        save_picture(window.scene, target)
    except OSError as exc:
        QMessageBox.warning(window, "Cannot export picture", str(exc))
        return
    window.statusBar().showMessage(f"Saved a picture of the graph: {target}", 6000)
