"""Bundled data: example projects, icons and screenshots (shipped as layerlab.assets)."""
