"""`vaelab explore RUN [RUN_B]`: the latent space in a web page, served on this machine.

vaelab explore runs/demo/vae                   # http://127.0.0.1:8765/
vaelab explore runs/demo/vae runs/demo/ae      # two runs side by side, one pointer
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Annotated

from pydantic import Field

from vaelab.cli.options import add_command, build
from vaelab.cli.run import RunDir
from vaelab.config import Flag
from vaelab.errors import UserError
from vaelab.explore.settings import ExploreSettings


class ExploreOptions(ExploreSettings):
    run: RunDir
    run_b: Annotated[
        Path | None,
        Field(description="a second run shown beside the first, decoded at the same pointer position"),
        Flag(name="RUN_B", positional=True),
    ] = None


def add_subcommands(sub) -> None:
    add_command(
        sub,
        "explore",
        ExploreOptions,
        cmd_explore,
        help="move through a run's latent space in a local web page (decode, draw, interpolate)",
        description="Serve a page on this machine that decodes any point of the latent map as the "
        "pointer moves, encodes a digit you draw (with its log p(x)), interpolates and samples; "
        "with RUN_B, two runs side by side. Reads the runs, writes nothing. Needs the `explore` "
        "extra (pip install 'vaelab[explore]'); Ctrl-C stops it.",
    )


def cmd_explore(args: argparse.Namespace) -> int:
    options: ExploreOptions = build(ExploreOptions, args, args.own)
    try:
        from vaelab.explore import server
    except ImportError as err:
        raise UserError(
            f"explore needs the web server packages: pip install 'vaelab[explore]' ({err.name})"
        ) from None
    settings = ExploreSettings(**{name: getattr(options, name) for name in ExploreSettings.model_fields})
    if not settings.loopback:
        print(
            f"vaelab: warning: --host {settings.host} serves the explorer, and your model, to every machine "
            "that can reach this address; there is no authentication",
            file=sys.stderr,
        )
    run_dirs = [options.run] + ([options.run_b] if options.run_b is not None else [])
    spaces = server.load_spaces(run_dirs, settings)
    sock = server.bind(settings)
    print(f"explore: {server.url_of(sock)}  (Ctrl-C stops it)", flush=True)
    server.serve(spaces, settings, sock)
    return 0
