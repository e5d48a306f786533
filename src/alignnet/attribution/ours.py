"""``ours``: the exact dynamic-linear contributions of :func:`alignnet.explain` (docs/algorithms.md#dynamic-linear-models).

For a model starting with ``AddInverse`` the explanation lives on the 6 encoded channels; the
contribution of an RGB pixel's colour channel ``c`` is ``W[c] x[c] + W[c+3] (1 - x[c])`` (the sum
over its two encoded channels of ``W(x) * x``), so the per-pixel map (the sum over the 3 channels)
is exactly the dynamic-linear contribution map and, with the logit bias, sums to the logit.
"""

from __future__ import annotations

from torch import Tensor, nn

from ..explanation import explain
from ._base import Attributor, register_attributor

__all__ = ["OursAttributor"]


@register_attributor("ours")
class OursAttributor(Attributor):
    """Contributions ``W(x)[c] * x`` mapped to the image's channels; one forward + one backward pass."""

    def __init__(self, model: nn.Module, batch_size: int = 64) -> None:
        super().__init__(model, batch_size=batch_size)

    def _attribute(self, images: Tensor, targets: Tensor) -> Tensor:
        e = explain(self.model, images, targets)
        contributions = e.channel_contributions  # (n, C_in, H, W) on the model's input encoding
        if contributions.shape[1] == images.shape[1]:
            return contributions
        return self.encoded.decode_attribution(contributions)

    def _attribute_maps(self, images: Tensor, targets: Tensor) -> Tensor:
        """K classes per image from one forward pass (batched gradients, see :func:`alignnet.explain`)."""
        return explain(self.model, images, targets).contributions
