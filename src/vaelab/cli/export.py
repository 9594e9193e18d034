"""`vaelab export`: a run's encoder and decoder as ONNX graphs, with a JSON description.

vaelab export runs/vae --format onnx                  # -> runs/vae/export/
vaelab export runs/vae --format onnx --out shipped/   # encoder.onnx, decoder.onnx, model.json
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field

from vaelab.cli.options import add_command, build
from vaelab.cli.run import RunDir
from vaelab.config import Flag, Options


class ExportOptions(Options):
    run: RunDir
    format: Annotated[Literal["onnx"], Field(description="the export format")] = "onnx"
    out: Annotated[
        Path | None,
        Field(
            description="directory of the export (default RUN/export; an earlier export there is replaced)"
        ),
        Flag(metavar="DIR"),
    ] = None
    check_rows: Annotated[
        int,
        Field(
            ge=0,
            le=10**6,
            description="test rows on which ONNX Runtime must match PyTorch (0: no check, and the run's "
            "data are not read)",
        ),
        Flag(metavar="N"),
    ] = 100


def add_subcommands(sub) -> None:
    add_command(
        sub,
        "export",
        ExportOptions,
        cmd_export,
        help="export a run's encoder and decoder (ONNX) with a JSON description",
        description="Write the encoder (x -> the parameters of q(z|x)) and the decoder (z -> the "
        "parameters of p(x|z)) of a run's best weights as ONNX graphs with a dynamic batch axis, and "
        "model.json describing their inputs, outputs, shapes, the likelihood and the prior.",
    )


def cmd_export(args: argparse.Namespace) -> int:
    from vaelab.export import export_run

    options: ExportOptions = build(ExportOptions, args, args.own)
    result = export_run(options.run, options.format, options.out, check_rows=options.check_rows)
    check = result.description.get("check")
    if check is not None:
        worst = max(check["max_abs_difference"].values())
        print(f"checked on {check['rows']} test rows: ONNX Runtime within {worst:.2g} of PyTorch")
    for path in result.files:
        print(f"written: {path}")
    return 0
