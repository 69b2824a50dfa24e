"""The window: PySide6 and pyqtgraph views over layerlab.core."""
