"""Attribution methods behind one registry: ``get_attributor(name, model, **config).attribute(images, targets)``.

``ours`` is the exact dynamic-linear explanation; ``grad``, ``ixg``, ``intgrad``, ``deeplift``,
``guided_backprop``, ``gradcam``, ``occlusion5``, ``occlusion9`` and ``lime`` run through captum;
``rise`` is written here. All return ``(N, C, H, W)``; the per-pixel map is the sum over channels.
"""

from ._base import (
    AUTO_PIXELS,
    Attributor,
    EncodedModel,
    attributor_parameters,
    check_forward_batch,
    copies_per_pass,
    get_attributor,
    list_attributors,
    register_attributor,
)
from .captum_methods import last_spatial_layer
from .lime import quickshift_segments
from .rise import rise_masks

__all__ = [
    "AUTO_PIXELS",
    "Attributor",
    "EncodedModel",
    "attributor_parameters",
    "check_forward_batch",
    "copies_per_pass",
    "get_attributor",
    "last_spatial_layer",
    "list_attributors",
    "quickshift_segments",
    "register_attributor",
    "rise_masks",
]
