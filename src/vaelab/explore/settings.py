"""The explorer's settings: one pydantic model, from which `vaelab explore`'s flags are generated.

Kept apart from the server so that building the command line imports no web framework.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from vaelab.config import Count, Flag, Options, Samples, Seed

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


class ExploreSettings(Options):
    """How the explorer serves: where, how it batches, what it accepts."""

    host: Annotated[
        str,
        Field(
            min_length=1,
            max_length=255,
            description="address to listen on; anything but a loopback address serves the page, and "
            "your model, to the network (a warning says so)",
        ),
        Flag(metavar="ADDR"),
    ] = "127.0.0.1"
    port: Annotated[
        int, Field(ge=0, le=65535, description="TCP port; 0 picks a free one"), Flag(metavar="PORT")
    ] = 8765
    k: Annotated[Samples, Field(le=100_000, description="importance samples for an input's log p(x)")] = 1000
    seed: Annotated[
        Seed, Field(description="seed of the importance samples (the same input, the same estimate)")
    ] = 0
    max_batch: Annotated[
        Count,
        Field(
            le=4096,
            description="most decode requests gathered into one forward pass (micro-batching); 1 turns "
            "micro-batching off",
        ),
    ] = 64
    batch_wait_ms: Annotated[
        float,
        Field(
            ge=0,
            le=1000,
            description="how long a decode request waits for others to share its forward pass, in ms",
        ),
        Flag(metavar="MS"),
    ] = 1.0
    threads: Annotated[Count, Field(le=256, description="PyTorch threads per forward pass")] = 1
    max_upload_bytes: Annotated[
        Count, Field(le=2**30, description="largest image file the page may send, in bytes")
    ] = 4 * 2**20
    max_upload_pixels: Annotated[
        Count, Field(le=2**28, description="largest image the page may send, in pixels (width x height)")
    ] = 2**24

    @property
    def loopback(self) -> bool:
        """Whether `host` is reachable from this machine only."""
        return self.host in LOOPBACK_HOSTS or self.host.startswith("127.")
