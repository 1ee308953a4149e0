"""Model families. Each module provides the same small interface:

* ``Options``: pydantic model of its ``model_args`` in params.yaml;
* ``check_shape(channels, resolution) -> str | None``: why it cannot make such images, if so;
* ``build(opts, *, z_dim, channels, resolution, num_classes) -> (G, D)`` with
  ``G(z, y=None) -> images in [-1, 1]`` and ``D(x, y=None) -> logits of shape (N,)``.
"""
from pipeline.nets import dcgan, mlp

FAMILIES = {"mlp": mlp, "dcgan": dcgan}
