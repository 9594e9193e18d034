"""`vaelab explore RUN [RUN_B]`: a local web page to move through a model's latent space by hand.

    space.py     what the page shows, as arrays: prior-standardized coordinates, the map's plane
                 (two latent dims, or PCA), the prior's contours, encodings with their ellipses,
                 log p(x) against the test set's, interpolation strips and prior samples
    layers.py    which latent the map shows: the whole z, or a hierarchical model's top layer z_L
                 (its closed-form prior; lower layers decoded at their conditional prior means)
    images.py    images in and out: an uploaded or drawn PNG checked and framed as a model input,
                 decoder means as PNG bytes
    batching.py  micro-batching: concurrent decode requests gathered into one forward pass
    server.py    the Starlette application (JSON and PNG endpoints, bounded inputs, 4xx JSON errors)
                 and `serve`, which runs it under uvicorn
    static/      the page, its script and its style (no CDN: it works offline)

This layer sits beside `vaelab.experiments`: it reads runs through `vaelab.viz.run.Run` and the
library's estimators, and writes nothing into a run.
"""
