"""`layerlab import SOURCE -o FILE [--input-shape C,H,W] [--weights-out W] [--args JSON]`:
a PyTorch or ONNX model onto the canvas, with its weights, checked against the original.

(`import` is a Python keyword, so the command's module is `import_model`.)"""

from __future__ import annotations

import argparse
from pathlib import Path

from layerlab.cli import CliError
from layerlab.cli.common import check_file, write_failed


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", metavar="SOURCE",
                        help="file.py:Name, package.module:factory (torchvision.models:"
                             "resnet18), a .pt2 exported program or an .onnx file")
    parser.add_argument("-o", "--output", required=True, metavar="FILE",
                        help="the project file to write (*.layerlab.json)")
    parser.add_argument("--input-shape", metavar="C,H,W",
                        help="one sample's shape, batch excluded (default 3,224,224; an "
                             ".onnx or .pt2 file gives its own)")
    parser.add_argument("--weights-out", metavar="W.safetensors",
                        help="also write the model's weights, keys named by node id")
    parser.add_argument("--args", metavar="JSON", default="{}",
                        help='keyword arguments for the class or factory, e.g. '
                             '\'{"num_classes": 10}\'')
    parser.add_argument("--force", action="store_true", help="replace FILE if it exists")


def run(args: argparse.Namespace) -> int:
    from layerlab.core.import_source import parse_kwargs, parse_shape
    from layerlab.core.importer import ImportRefused, import_model, save_import

    out = Path(args.output)
    weights = Path(args.weights_out) if args.weights_out else None
    for path in (out, weights):
        if path is not None and path.exists() and not args.force:
            raise CliError(f"{path} exists; use --force to replace it, or choose another")
        if path is not None:
            check_file(path)
    try:
        shape = parse_shape(args.input_shape)
    except ImportRefused as exc:
        raise CliError(f"{exc} (--input-shape)", 2) from None
    try:
        kwargs = parse_kwargs(args.args)
    except ImportRefused as exc:
        raise CliError(f"{exc} (--args)", 2) from None
    try:
        result = import_model(args.source, shape, kwargs)
    except ImportRefused as exc:
        raise CliError(str(exc)) from None
    try:
        save_import(result, out, weights)
    except OSError as exc:
        raise write_failed(Path(exc.filename or out), exc) from None
    graph = result.project.graph
    print(f"imported {args.source}: {graph.number_of_nodes()} nodes, "
          f"{len(result.project.groups)} groups")
    print(result.comparison.sentence())
    print(f"wrote {out}" + (f" and {weights}" if weights else ""))
    return 0

