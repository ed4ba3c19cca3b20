"""The wire protocol between validators and miners (original SN34 names, unchanged).

A validator sends ``ImageSynapse(image=<base64 JPEG>)``; the miner fills ``prediction``
with a probability in [0, 1] (> 0.5 means AI-generated), or leaves -1.0 when it could
not make one.
"""
from __future__ import annotations

import bittensor as bt
import pydantic
import torch
from PIL import Image

from bitmind.image_io import DecodeLimits, decode_image, encode_image


class ImageSynapse(bt.Synapse):
    """One image challenge and the miner's answer."""

    image: str = pydantic.Field(
        title="Image",
        description="A base64-encoded image (validators send JPEG, quality 75).",
        default="",
        frozen=False,
    )
    prediction: float = pydantic.Field(
        title="Prediction",
        description="Probability in [0, 1] that the image is AI-generated; -1.0 if none was made.",
        default=-1.0,
        frozen=False,
    )

    def deserialize(self) -> float:
        return self.prediction


def prepare_image_synapse(image: Image.Image | torch.Tensor, quality: int = 75) -> ImageSynapse:
    """Build a challenge from a PIL image or a (3,H,W) tensor in [0, 1], JPEG-encoded as validators do."""
    if isinstance(image, torch.Tensor):
        from torchvision.transforms.functional import to_pil_image

        image = to_pil_image(image.detach().cpu().clamp(0, 1))
    return ImageSynapse(image=encode_image(image, "JPEG", quality))


def decode_synapse_image(synapse: ImageSynapse, limits: DecodeLimits = DecodeLimits()) -> Image.Image:
    """The synapse's image as an RGB PIL image (raises ``ImageDecodeError`` on bad input)."""
    return decode_image(synapse.image, limits)
