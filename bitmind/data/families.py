"""Source families: which sources of the pools come from the same kind of generator (or camera).

Why: two SD 1.x folders are not two generators, and neither are FLUX.1 [dev] and
[schnell]. Leave-one-family-out folds hold out a whole family (so a fold tests a
generator the model has never seen anything like), and the family-balanced sampler
gives each family, not each folder, its share of an epoch (so SDXL's 1,139 crops do not
drown the 16 BigGAN ones, and no single big source decides what "fake" means).

Sources are named ``CLASS/NAME`` (``fake/sdxl``, ``real/faces``), as every data source
of the project names them. Aligned round trips (``fake/aligned-<decoder>``) form one
family per decoder design: ``aligned-taef2``, ``aligned-zoo-nearest8-c16`` ->
``aligned-nearest``, and so on.
"""
from __future__ import annotations

import math
import random
import re
from collections import Counter, defaultdict
from typing import Iterable, Sequence

#: Generator families of the SN34 pools (sn34-mini, sn34-wide, sn34-validator), by source folder.
GENERATOR_FAMILIES: dict[str, tuple[str, ...]] = {
    "sd1-2": ("sd1x", "sd15", "sd2"),
    "sdxl": ("sdxl",),
    "flux1": ("flux1-dev", "flux1-schnell"),
    "sd3.5": ("sd35",),
    "midjourney": ("midjourney-v3",),
    "gans": ("stylegan-family", "biggan-progan", "pix2pixhd-spade", "vqgan"),
}
_BY_FOLDER = {folder: fam for fam, folders in GENERATOR_FAMILIES.items() for folder in folders}
#: Small GANs trained here on the pools' photos (``bitmind.training.mini_gan``): one family
#: whatever their up-sampling design, so together they take one family's share of an epoch.
MINIGAN_PREFIX = "minigan-"
#: Up-sampling designs in the decoder names of the removed decoder zoo (``aligned-zoo-<design>...``):
#: committed LOGO scores hold such sources, and their families must read as they did.
_ZOO_DESIGNS = ("nearest", "convt", "transposed", "shuffle", "pixelshuffle", "bilinear")


def family_of(source: str) -> str:
    """``fake/sd15`` -> ``sd1-2``; ``fake/aligned-zoo-shuffle8-c16`` -> ``aligned-shuffle``;
    ``real/faces`` -> ``real/faces`` (each real kind is its own family);
    ``fake/minigan-nearest`` -> ``minigan``; an unknown fake folder is its own family."""
    cls, _, name = source.partition("/")
    if cls != "fake":
        return source
    if name.startswith("aligned-"):
        rest = name[len("aligned-"):]
        if rest.startswith("zoo-"):
            design = rest[len("zoo-"):]
            for d in _ZOO_DESIGNS:
                if design.startswith(d):
                    return "aligned-" + ("convt" if d == "transposed" else "shuffle" if d == "pixelshuffle" else d)
            return "aligned-" + re.split(r"[-_\d]", design, maxsplit=1)[0]
        return "aligned-" + rest
    if name.startswith(MINIGAN_PREFIX):
        return "minigan"
    return _BY_FOLDER.get(name, name)


def is_aligned(source: str) -> bool:
    """A round trip of a real photo through a decoder (``fake/aligned-*``)."""
    return source.startswith("fake/aligned-")


def sources_of_family(family: str, sources: Iterable[str]) -> list[str]:
    """The sources among ``sources`` that belong to ``family`` (``aligned`` alone matches every aligned family)."""
    if family == "aligned":
        return sorted({s for s in sources if is_aligned(s)})
    return sorted({s for s in sources if family_of(s) == family})


#: Synthetic fakes (a random up-sampler's trace added to a photo, ``bitmind.training.upsampling_traces``):
#: aligned with their photo like a round trip, but sampled as a family of their own.
SYNTHETIC_PREFIX = "fake/aligned-synth"


def sampling_family(source: str) -> str:
    """The family a source is sampled as: ``family_of``, except that all aligned round
    trips count as ONE family (``aligned``), whatever their decoder: they are training
    material for traces, not generators the miner is challenged with, and must not
    outweigh the real generators. Synthetic up-sampling traces (``fake/aligned-synth*``)
    are one more such family (``synthetic``): one decoder's round trips and many random
    up-samplers are different lessons, and neither should take the other's share."""
    if source.startswith(SYNTHETIC_PREFIX):
        return "synthetic"
    return "aligned" if is_aligned(source) else family_of(source)


def parse_family_share(items: Iterable[str]) -> dict[str, float]:
    """``["minigan=0.25", "gans=2"]`` -> ``{"minigan": 0.25, "gans": 2.0}``: how much of its
    class's draws each named sampling family gets, relative to an unnamed family (1).

    Why: a family the pools lack but training adds (small GANs, synthetic traces, round
    trips) takes a whole family's share by default, and by LOGO a whole share of small-GAN
    pictures crowds out the diffusion traces (docs/Generalisation_record.md, "The
    nearest-design small GANs alone"); a smaller share is the knob between none and all.
    A ValueError names a malformed pair, a weight that is not a finite number >= 0, or a
    family named twice."""
    out: dict[str, float] = {}
    for item in items:
        name, sep, value = str(item).partition("=")
        name = name.strip()
        if not sep or not name:
            raise ValueError(f"--family_share {item!r}: FAMILY=WEIGHT, e.g. minigan=0.25")
        try:
            weight = float(value)
        except ValueError:
            raise ValueError(f"--family_share {item!r}: the weight {value!r} is not a number") from None
        if not (math.isfinite(weight) and weight >= 0):
            raise ValueError(f"--family_share {item!r}: the weight must be a finite number >= 0")
        if name in out:
            raise ValueError(f"--family_share names {name!r} twice")
        out[name] = weight
    return out


def family_weights(labels: Sequence[int], sources: Sequence[str],
                   share: dict[str, float] | None = None) -> list[float]:
    """Per-item sampling weights: each class gets half the draws; within a class each
    family (``sampling_family``) an equal share, or, with ``share`` (``parse_family_share``),
    a share in proportion to its weight there (1 for a family not named); within a family
    each source an equal share; within a source each item an equal share. The weights sum
    to 1 over all items.

    A named family absent from the data is ignored (a LOGO fold lacks its held-out family);
    a class whose families all weigh 0 is a ValueError (it would never be drawn)."""
    if len(labels) != len(sources):
        raise ValueError("labels and sources differ in length")
    share = share or {}
    count = Counter(sources)
    fams_of_class: dict[int, set[str]] = defaultdict(set)
    srcs_of_fam: dict[tuple[int, str], set[str]] = defaultdict(set)
    for y, s in zip(labels, sources):
        fams_of_class[y].add(sampling_family(s))
        srcs_of_fam[(y, sampling_family(s))].add(s)
    n_classes = len(fams_of_class)
    class_total = {y: sum(share.get(f, 1.0) for f in fams) for y, fams in fams_of_class.items()}
    for y, total in class_total.items():
        if total <= 0:
            raise ValueError(f"--family_share gives every family of class {y} ({', '.join(sorted(fams_of_class[y]))}) "
                             "weight 0: that class would never be drawn")
    out = []
    for y, s in zip(labels, sources):
        f = sampling_family(s)
        out.append(share.get(f, 1.0) / class_total[y] / n_classes / len(srcs_of_fam[(y, f)]) / count[s])
    return out


def class_family_shares(labels: Sequence[int], sources: Sequence[str], weights: Sequence[float]) -> dict[int, dict[str, float]]:
    """Per class, each sampling family's share of that class's draws under ``weights``
    (what a person checks after ``--family_share``: the log line of the training sampler)."""
    by: dict[int, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for y, s, w in zip(labels, sources, weights):
        by[y][sampling_family(s)] += float(w)
    out = {}
    for y, fams in by.items():
        total = sum(fams.values()) or 1.0
        out[y] = {f: v / total for f, v in sorted(fams.items())}
    return out


#: The auxiliary head's class of every real photo (``aux_classes``).
AUX_REAL = "real"
#: The seed of ``aux_classes(by="shuffled")``'s draws: fixed, so every process draws the same.
SHUFFLED_SEED = 0
#: How finely the auxiliary head splits the generated pictures (``aux_class_of``, ``--aux_by``).
AUX_GROUPINGS = ("family", "generator", "source", "shuffled")
#: Families whose folders are different generator networks, each up-sampling with its own
#: layers: the GAN folders (StyleGAN, BigGAN / ProGAN, pix2pixHD / SPADE, VQGAN). The folders
#: of every other family share one decoder (SD 1.x and 2 the same VAE, FLUX.1 [dev] and
#: [schnell] one), so they differ by prompts and sampling, not by how pixels are made.
SPLIT_BY_GENERATOR = ("gans",)


def aux_class_of(source: str, by: str = "family") -> str:
    """The auxiliary class of one source: ``real`` for every real photo; for a generated
    picture its ``sampling_family`` (``by="family"``: all round trips one class, the small GANs
    one), or with ``by="generator"`` the GAN family split into its four generator designs
    (``SPLIT_BY_GENERATOR``), or with ``by="source"`` every generator folder its own class
    (``sd1x``, ``sd15``, ``flux1-dev``, ...; round trips, synthetic traces and small GANs
    stay one class each: they are training material, not generators). ``by="shuffled"``
    names the family classes (its pictures' classes are drawn at random, ``aux_classes``). A
    ValueError names an unknown grouping."""
    if by not in AUX_GROUPINGS:
        raise ValueError(f"aux grouping {by!r}: one of {', '.join(AUX_GROUPINGS)}")
    if not source.startswith("fake/"):
        return AUX_REAL
    fam = sampling_family(source)
    folder = source.partition("/")[2]
    if fam != family_of(source) or fam == "minigan":  # round trips, synthetic traces, small GANs
        return fam
    if by == "source" or (by == "generator" and fam in SPLIT_BY_GENERATOR):
        return folder
    return fam


def content_classes(sources: Sequence[str], keep: Sequence[bool] | None = None) -> tuple[list[str], list[int]]:
    """The classes of the content adversary (``TrainConfig.adv_weight``) and each item's class:
    the real photo kinds of the training set (``real/faces``, ``real/coco``, ..., sorted) and, per
    item of ``sources``, its kind's place, or -1 for a generated picture (never a target).

    Why real kinds: they differ by what the pictures show (faces, cities, low light, ImageNet
    objects) and were all made by cameras, so what tells them apart is content, the one thing a
    detector must not lean on (it learned "faces look real, art looks fake"). An adversary that
    tries to name the kind from the detector's pooled features, with its gradient reversed into
    the network, pushes those features to carry less of it. Generated pictures have no content
    label here (a generator folder mixes what it shows), so they are left out. ``keep`` (one flag
    per item; a sweep variant's training mask): items not kept are no target and their kinds
    no class, so a LOGO fold that holds a real kind out trains against the other kinds only."""
    kept = [True] * len(sources) if keep is None else [bool(k) for k in keep]
    if len(kept) != len(sources):
        raise ValueError(f"keep has {len(kept)} flags for {len(sources)} items")
    kinds = sorted({s for s, k in zip(sources, kept) if k and not s.startswith("fake/")})
    place = {k: i for i, k in enumerate(kinds)}
    return kinds, [place.get(s, -1) if k else -1 for s, k in zip(sources, kept)]


def aux_classes(sources: Sequence[str], by: str = "family") -> tuple[list[str], list[int]]:
    """The classes of an auxiliary head that tells the fake families apart, and each item's
    class: ``["real", <fake classes, sorted>]`` and, per item of ``sources``, 0 for a real
    photo or 1 + its class's place among the fake classes (``aux_class_of``; by family, all
    round trips are one class, ``aligned``, and the small GANs one, ``minigan``; ``by``
    splits the generators more finely).

    Why families by default and not sources: two SD 1.x folders are one generator, and a head
    asked to tell them apart may learn their content (``by="source"`` is the test of that);
    ``by="generator"`` splits only the family whose folders are different generator networks,
    the GANs, whose up-sampling differs from one design to the next. ``by="shuffled"`` keeps
    the family classes and gives each generated picture one of them at random (drawn once, from
    a fixed seed, in the order of ``sources``: the same on every rank and on resume): the head's
    shape and loss without what made the picture, to ask whether the family head's held-out
    gain comes from its classes at all. Why one class for all real photos: real kinds
    differ by what they show (faces, cities, low light), the one thing the detector must not
    learn. The head asks the network to keep apart the traces of the generators it trains
    on, which a single real/fake logit lets it merge. A family held out of a LOGO fold has no
    picture among that fold's training items, so its class is never that fold's target."""
    keys = [aux_class_of(s, by) for s in sources]
    fams = sorted({k for k, s in zip(keys, sources) if s.startswith("fake/")})
    place = {f: i + 1 for i, f in enumerate(fams)}
    labels = [place[k] if s.startswith("fake/") else 0 for k, s in zip(keys, sources)]
    if by == "shuffled":  # the same classes and loss, no generator information: a probe
        rng = random.Random(SHUFFLED_SEED)
        labels = [rng.randint(1, len(fams)) if y else 0 for y in labels]
    return [AUX_REAL, *fams], labels
