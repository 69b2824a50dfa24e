"""`layerlab render` and File ▸ Export Picture: PNG and SVG of every example, text kept as
text in SVG, a project with problems drawn with them (exit 0)."""

import json
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from PySide6.QtGui import QImage
from PySide6.QtSvg import QSvgRenderer
from PySide6.QtWidgets import QFileDialog

from layerlab.app.style import ERROR_COLOUR
from layerlab.cli import main
from layerlab.core.project import load_project

from conftest import EXAMPLES

EXAMPLE_FILES = sorted(EXAMPLES.glob("*.layerlab.json"))
SVG = "{http://www.w3.org/2000/svg}"


def pixels(path) -> np.ndarray:
    image = QImage(str(path)).convertToFormat(QImage.Format.Format_RGB888)
    assert not image.isNull()
    raw = np.frombuffer(image.constBits(), np.uint8, image.sizeInBytes())
    rows = raw.reshape(image.height(), image.bytesPerLine())[:, :image.width() * 3]
    return rows.reshape(image.height(), image.width(), 3).copy()  # the image goes


def svg_texts(path) -> list[str]:
    return [(t.text or "").strip() for t in ET.parse(path).getroot().iter(f"{SVG}text")]


@pytest.mark.parametrize("path", EXAMPLE_FILES, ids=lambda p: p.name.split(".")[0])
def test_every_example_renders_to_png_and_to_svg_with_its_node_ids_as_text(path, tmp_path,
                                                                          qapp, capsys):
    png, svg = tmp_path / "graph.png", tmp_path / "graph.svg"
    assert main(["render", str(path), "-o", str(png)]) == 0
    assert main(["render", str(path), "-o", str(svg), "--size", "1600x1000"]) == 0
    assert capsys.readouterr().out.splitlines() == [f"wrote {png}", f"wrote {svg}"]
    image = pixels(png)
    assert (image < 128).any(axis=2).mean() > 0.01  # something is drawn, not a blank page
    renderer = QSvgRenderer(str(svg))
    assert renderer.isValid()
    root = ET.parse(svg).getroot()  # shown at 1600 x 1000 CSS pixels (96 dpi)
    assert (root.get("width"), root.get("height")) == ("423.333mm", "264.583mm")
    texts = svg_texts(svg)
    project = load_project(path)
    for node, data in project.graph.nodes(data=True):
        assert node in texts and data["type"] in texts  # searchable, selectable text


def test_size_and_direction_shape_the_picture(tmp_path, qapp):
    lenet = str(EXAMPLES / "lenet5.layerlab.json")
    tall, wide = tmp_path / "tb.png", tmp_path / "lr.png"
    assert main(["render", lenet, "-o", str(tall), "--direction", "TB"]) == 0
    assert main(["render", lenet, "-o", str(wide), "--direction", "LR"]) == 0
    h, w, _ = pixels(tall).shape
    assert h > 3 * w  # a column of layers
    h, w, _ = pixels(wide).shape
    assert w > 3 * h  # a row of layers
    fitted = tmp_path / "fitted.png"
    assert main(["render", lenet, "-o", str(fitted), "--size", "800x500"]) == 0
    assert pixels(fitted).shape == (500, 800, 3)


def test_a_project_with_problems_is_drawn_with_them_and_exits_0(tmp_path, qapp):
    data = json.loads((EXAMPLES / "spiral.layerlab.json").read_text())
    data["graph"]["nodes"][1]["type"] = "NoSuchLayer"
    data["training"]["batch_size"] = -3
    for node in data["graph"]["nodes"]:
        node.pop("pos")  # never placed: laid out on the way
    path = tmp_path / "broken.layerlab.json"
    path.write_text(json.dumps(data))
    out = tmp_path / "broken.png"
    assert main(["render", str(path), "-o", str(out)]) == 0
    red = np.array(ERROR_COLOUR.getRgb()[:3])
    assert (np.abs(pixels(out).astype(int) - red).sum(axis=2) < 30).sum() > 200
    assert json.loads(path.read_text()) == data  # the file is only read


@pytest.mark.parametrize(("args", "message"), [
    (["-o", "graph.pdf"], "graph.pdf: the picture must end in .png or .svg"),
    (["-o", "graph.png", "--size", "big"], "--size big: give width x height in pixels, "
                                           "e.g. 1600x1000 (each 1 to 16384)"),
])
def test_a_bad_picture_name_or_size_is_refused_in_one_sentence(args, message, tmp_path,
                                                               capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["render", str(EXAMPLES / "spiral.layerlab.json"), *args]) == 2
    assert capsys.readouterr().err.strip() == message
    assert not list(tmp_path.iterdir())


def test_export_picture_in_the_window_writes_what_render_writes(window, tmp_path,
                                                               monkeypatch):
    target = tmp_path / "mine.svg"
    monkeypatch.setattr(QFileDialog, "getSaveFileName",
                        staticmethod(lambda *a, **k: (str(target), "")))
    window.scene.select_only(["fc1"])
    window.actions["actionExportPicture"].trigger()
    assert set(window.doc.graph) <= set(svg_texts(target))
    assert window.scene.selected_nodes() == ["fc1"]  # drawn unselected, selection kept
    png = tmp_path / "mine.png"
    monkeypatch.setattr(QFileDialog, "getSaveFileName",
                        staticmethod(lambda *a, **k: (str(tmp_path / "mine"), "")))
    window.actions["actionExportPicture"].trigger()
    assert png.exists()
    from layerlab.app.picture import picture_of_project

    again = tmp_path / "render.png"
    picture_of_project(window.doc.project, again)
    assert np.array_equal(pixels(png), pixels(again))
