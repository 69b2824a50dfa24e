"""`layerlab generate`: a trained next-token model continues a prompt, one character at a
time, each with the probability the model gave it. The characters are those of the
project's text dataset (addition, reverse, text)."""

from __future__ import annotations

import argparse

from layerlab.cli import CliError
from layerlab.cli.common import graph_problems, print_table, read_project
from layerlab.core.compiler import build_model, checked
from layerlab.core.datasets import DatasetError, load_dataset, project_folder
from layerlab.core.errors import GraphError
from layerlab.core.generate import GenerateError, generate
from layerlab.core.text_data import TextDataError, decode, encode
from layerlab.core.weights import WeightsError, load_weights


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file")
    parser.add_argument("--weights", metavar="W", required=True,
                        help="the trained weights (weights.safetensors of a run)")
    parser.add_argument("--prompt", required=True, metavar="TEXT",
                        help="the text to continue, e.g. '38+47='")
    parser.add_argument("-n", type=int, default=10, metavar="N",
                        help="characters to write (default 10)")
    parser.add_argument("--temperature", type=float, default=0.0, metavar="T",
                        help="0 (default): the most likely character each time; above 0: "
                             "drawn from softmax(scores / T)")
    parser.add_argument("--seed", type=int, default=0, metavar="N",
                        help="seed of the draws (the same seed writes the same text)")


def run(args: argparse.Namespace) -> int:
    project = read_project(args.file)
    try:
        analysis = checked(project.graph)
        model = build_model(project.graph)
    except GraphError as exc:
        raise graph_problems(args.file, exc) from None
    dataset = project.training["dataset"]
    try:
        data = load_dataset(dataset["name"], dataset.get("options", {}),
                            base=project_folder(project.path))
    except DatasetError as exc:
        raise CliError(f"{args.file}: {exc}") from None
    if not data.vocab:
        raise CliError(f"{args.file}: dataset {data.name} is not text, so there are no "
                       "characters to write; generate needs addition, reverse or text")
    try:
        load_weights(model, args.weights)
        prompt = encode(args.prompt, data.vocab)
        assert analysis.input_node is not None
        context = analysis.shapes[analysis.input_node][0]
        made = generate(model, prompt, args.n, seed=args.seed,
                        temperature=args.temperature, context=context)
    except (WeightsError, GenerateError) as exc:
        raise CliError(str(exc)) from None
    except TextDataError as exc:
        raise CliError(f"--prompt: {exc}") from None
    print(args.prompt + decode(list(made.tokens), data.vocab))
    print_table([("character", "probability")] +
                [(repr(data.vocab[t]), f"{p:.3f}")
                 for t, p in zip(made.tokens, made.probabilities, strict=True)], left=1)
    return 0
