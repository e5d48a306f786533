"""LIME (Ribeiro et al., 2016) through captum's ``Lime``, with the papers' superpixel setting.

Setting (docs/metrics.md#post-hoc-baselines: "500 samples, superpixels of size 4, 5 features"): superpixels
are scikit-image's quickshift segments with the LIME package's defaults ``kernel_size=4,
max_dist=200, ratio=0.2``; 500 random subsets of superpixels are kept (removed ones are zeroed in
the encoding) and a weighted ridge regression (``alpha=1``, as the LIME package) of the target
logit on the kept/removed indicators is fitted, with LIME's exponential kernel of width 0.25 on
the cosine distance. The attribution of a pixel is the coefficient of its superpixel; only the
``num_features`` (5) superpixels with the largest coefficients keep theirs, the others are 0
(``num_features=None`` keeps all). The 500 samples of one image are evaluated in batched forward
passes; images are handled one after the other, as LIME fits one model per image. The samples of image ``i``
come from a local generator seeded with ``seed + i``: the caller's random state is left as it was.

Needs ``scikit-image`` and ``scikit-learn`` (``pip install 'alignnet[lime]'``).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from .._optional import require
from ..errors import InputError
from ._base import Attributor, check_forward_batch, copies_per_pass, register_attributor

__all__ = ["LimeAttributor", "quickshift_segments"]


def quickshift_segments(image: Tensor, kernel_size: float = 4, max_dist: float = 200, ratio: float = 0.2) -> Tensor:
    """``(C, H, W)`` image in [0, 1] -> ``(H, W)`` long tensor of superpixel ids 0..S-1 (quickshift)."""
    quickshift = require("skimage.segmentation", "the lime method").quickshift
    arr = image.detach().cpu().double().permute(1, 2, 0).numpy()
    if arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    seg = quickshift(arr, kernel_size=kernel_size, max_dist=max_dist, ratio=ratio, rng=0)
    _, seg = np.unique(seg, return_inverse=True)
    return torch.from_numpy(seg.reshape(arr.shape[:2])).long()


@register_attributor("lime")
class LimeAttributor(Attributor):
    """LIME with quickshift superpixels; see the module docstring for the exact setting."""

    per_pixel = True

    def __init__(
        self,
        model: nn.Module,
        batch_size: int = 64,
        n_samples: int = 500,
        kernel_size: float = 4,
        num_features: int | None = 5,
        seed: int = 0,
        forward_batch: int | None = None,
    ) -> None:
        super().__init__(model, batch_size=batch_size)
        if int(n_samples) < 2:
            raise InputError(f"n_samples must be >= 2, got {n_samples}")
        if num_features is not None and int(num_features) < 1:
            raise InputError(f"num_features must be >= 1 or None, got {num_features}")
        self.n_samples, self.kernel_size, self.seed = int(n_samples), float(kernel_size), int(seed)
        self.num_features = None if num_features is None else int(num_features)
        self.forward_batch = check_forward_batch(forward_batch)  # perturbed copies per pass; None: copies_per_pass

    def config(self) -> dict:
        return {
            "n_samples": self.n_samples,
            "segmentation": f"quickshift(kernel_size={self.kernel_size:g}, max_dist=200, ratio=0.2)",
            "num_features": self.num_features,
            "model": "ridge(alpha=1)",
            "kernel_width": 0.25,
            "seed": self.seed,
        }

    def _attribute(self, images: Tensor, targets: Tensor) -> Tensor:
        try:
            from captum._utils.models.linear_model import SkLearnRidge
            from captum.attr import Lime
            from captum.attr._core.lime import get_exp_kernel_similarity_function
        except ImportError as exc:  # pragma: no cover
            raise ImportError("the lime method needs captum and scikit-learn: pip install 'alignnet[lime]'") from exc

        class Ridge(SkLearnRidge):
            def fit(self, train_data, **kwargs):
                # captum's fit draws from torch's global generator without using the draws (the DataLoader's
                # base seed, the random init of the nn.Linear that then receives the ridge coefficients):
                # the caller's random state is put back
                with torch.random.fork_rng(devices=[]):
                    return super().fit(train_data, **kwargs)

        generator = torch.Generator()

        def perturb(_inputs: Tensor, num_interp_features: int, **_kwargs) -> Tensor:
            """captum's default sampling (each superpixel kept with probability 1/2), from ``generator``."""
            keep = torch.bernoulli(torch.full((1, num_interp_features), 0.5), generator=generator)
            return keep.to(_inputs.device).long()

        lime = Lime(
            self.encoded,
            interpretable_model=Ridge(alpha=1.0),
            similarity_func=get_exp_kernel_similarity_function("cosine", kernel_width=0.25),
            perturb_func=perturb,
        )
        maps = []
        for i in range(images.shape[0]):
            generator.manual_seed(self.seed + i)  # image i's samples: the same whatever the batch around it
            segments = quickshift_segments(images[i], kernel_size=self.kernel_size).to(images.device)
            x = self.encoded.encode(images[i : i + 1])
            mask = segments[None, None].expand_as(x)
            with torch.no_grad():
                coef = lime.attribute(
                    x,
                    target=targets[i : i + 1],
                    feature_mask=mask,
                    baselines=0.0,
                    n_samples=self.n_samples,
                    perturbations_per_eval=min(
                        copies_per_pass(self.forward_batch, *x.shape[-2:], x.device), self.n_samples
                    ),
                    return_input_shape=False,
                )[0]  # (n_superpixels,)
            if self.num_features is not None and coef.numel() > self.num_features:
                keep = coef.topk(self.num_features).indices
                sparse = torch.zeros_like(coef)
                sparse[keep] = coef[keep]
                coef = sparse
            maps.append(coef[segments])
        return self._spread(torch.stack(maps).to(images.dtype), images.shape[1])
