"""Qt-free core: project file, catalogue, shapes, compiler, training."""
