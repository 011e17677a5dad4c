"""Test-time augmentation: average the softmax over flipped and shifted copies of each image.

A `TestTimeAugmentation` is a part the LightningModule is built with (`tta=` in its
constructor, from the `tta` config): its predict step calls it with the network and a batch.

Flip x small-translation TTA is the CIFAR recipe of airbench (Jordan, 2024) and of the course
reference (Moore neighbourhood at distances 1 and 2 = 16 shifted views). All views of a batch
go through the network as one batch of size views x batch, so TTA costs one forward pass.

Hand-written rather than taken from `ttach`: that library loops one forward per view and has no
neighbourhood shifts; the view generator here is a few tensor slices.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import torch
import torch.nn.functional as F

from cifar_lab.errors import CifarLabError

# Unit steps (dy, dx) of the two grid neighbourhoods, scaled by each distance.
NEIGHBOURHOODS: dict[str, tuple[tuple[int, int], ...]] = {
    "moore": ((-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1)),
    "neumann": ((-1, 0), (0, -1), (0, 1), (1, 0)),
}
# How pixels shifted in from outside the image are filled: `reflect` mirrors the border (as the
# training crop's reflect padding does), `zeros` fills with 0 after normalisation (the dataset
# mean colour), `roll` wraps the opposite edge around (torch.roll).
PADDINGS = ("reflect", "zeros", "roll")

View = tuple[bool, tuple[int, int]]  # (horizontal flip, (dy, dx) shift)


def shift_offsets(pattern: str | None, distances: Sequence[int]) -> list[tuple[int, int]]:
    """(dy, dx) offsets of `pattern` at each distance: moore = 8 per distance, neumann = 4."""
    if pattern is None:
        return []
    if pattern not in NEIGHBOURHOODS:
        raise CifarLabError(
            f"tta.pattern={pattern!r} is unknown; expected one of {sorted(NEIGHBOURHOODS)} or null"
        )
    whole = all(isinstance(d, int) and not isinstance(d, bool) for d in distances)
    if not distances or not whole or any(d < 1 for d in distances):
        raise CifarLabError(
            f"tta.distances={list(distances)} is invalid; expected a non-empty list of integers "
            f">= 1, e.g. [1, 2]"
        )
    return [(int(d) * dy, int(d) * dx) for d in distances for dy, dx in NEIGHBOURHOODS[pattern]]


def pad_border(images: torch.Tensor, pad: int, padding: str) -> torch.Tensor:
    """`images` with `pad` pixels of border on each side. The first k border pixels are the same
    for any pad >= k (reflect mirrors from the edge, zeros are zeros), so one padding by the
    largest shift serves every view."""
    mode = "reflect" if padding == "reflect" else "constant"
    return F.pad(images, (pad, pad, pad, pad), mode=mode)


def crop(padded: torch.Tensor, pad: int, dy: int, dx: int) -> torch.Tensor:
    """The view shifted by (dy, dx) out of images padded by `pad`."""
    height, width = padded.shape[-2] - 2 * pad, padded.shape[-1] - 2 * pad
    return padded[..., pad - dy : pad - dy + height, pad - dx : pad - dx + width]


def shift(images: torch.Tensor, dy: int, dx: int, padding: str = "reflect") -> torch.Tensor:
    """Move the content of (N, C, H, W) `images` down by `dy` and right by `dx` pixels:
    out[..., i, j] = images[..., i - dy, j - dx], filled at the border as `padding` says."""
    if padding == "roll":
        return torch.roll(images, shifts=(dy, dx), dims=(-2, -1))
    pad = max(abs(dy), abs(dx))
    if pad == 0:
        return images
    return crop(pad_border(images, pad, padding), pad, dy, dx)


class TestTimeAugmentation:
    """The views of one TTA setting and the averaged prediction over them.

    `flip` adds horizontally flipped copies, `pattern`/`distances` add shifted copies
    (`flip` and a pattern together give every flip x shift pair); `include_identity` adds the
    unmodified image when the other views do not contain it. No flip and no pattern = no TTA.
    """

    __test__ = False  # not a pytest test class despite the name

    def __init__(
        self,
        name: str = "none",
        flip: bool = False,
        pattern: str | None = None,
        distances: Sequence[int] = (),
        padding: str = "reflect",
        include_identity: bool = False,
    ):
        if padding not in PADDINGS:
            raise CifarLabError(f"tta.padding={padding!r} is unknown; expected one of {PADDINGS}")
        self.name, self.padding = name, padding
        offsets = shift_offsets(pattern, distances) or [(0, 0)]
        flips = (False, True) if flip else (False,)
        self.view_specs: list[View] = [(f, offset) for f in flips for offset in offsets]
        identity: View = (False, (0, 0))
        if include_identity and identity not in self.view_specs:
            self.view_specs.insert(0, identity)

    def check_fits(self, size: int) -> None:
        """Raise a one-line error if a shift is as large as the `size` x `size` input: such a
        view holds none of the image (reflect cannot pad that far, zeros leave a blank view,
        roll wraps back to the image)."""
        largest = max((max(abs(dy), abs(dx)) for _, (dy, dx) in self.view_specs), default=0)
        if largest >= size:
            raise CifarLabError(
                f"tta.distances shift by up to {largest} pixels but the model's input is {size} x "
                f"{size}; expected distances < {size} (in pixels of the model's input): lower "
                f"tta.distances, e.g. tta.distances=[1,2]"
            )

    @property
    def num_views(self) -> int:
        return len(self.view_specs)

    def each_view(self, images: torch.Tensor) -> Iterator[torch.Tensor]:
        """Every view of (N, C, H, W) `images`, in `view_specs` order; the border is padded once
        per flip, by the largest shift, and each shifted view is a crop of it."""
        pad = max((max(abs(dy), abs(dx)) for _, (dy, dx) in self.view_specs), default=0)
        sources: dict[bool, torch.Tensor] = {}
        for flipped, (dy, dx) in self.view_specs:
            if flipped not in sources:
                source = images.flip(-1) if flipped else images
                use_pad = pad and self.padding != "roll"
                sources[flipped] = pad_border(source, pad, self.padding) if use_pad else source
            if self.padding == "roll" or not pad:
                yield shift(sources[flipped], dy, dx, self.padding)
            else:
                yield crop(sources[flipped], pad, dy, dx)

    def views(self, images: torch.Tensor) -> torch.Tensor:
        """(views x N, C, H, W): view-major, so row v*N + i is view v of image i."""
        return torch.cat(list(self.each_view(images)))

    def __call__(
        self, model: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor
    ) -> torch.Tensor:
        """Class probabilities of `images`: the softmax of every view, averaged per image. Each
        view is its own forward pass of N images, so a view costs what an image does (one pass
        over views x N images was 1.3-1.5x slower per image on a CPU: `bench=predict`'s
        `tta_overhead`)."""
        total: torch.Tensor | None = None
        for view in self.each_view(images):
            probs = model(view).float().softmax(dim=1)
            total = probs if total is None else total + probs
        assert total is not None  # there is always at least one view
        return total / self.num_views

    def __repr__(self) -> str:
        views, padding = self.num_views, self.padding
        return f"TestTimeAugmentation(name={self.name!r}, {views=}, {padding=})"
