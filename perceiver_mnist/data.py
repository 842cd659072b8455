"""Input pipeline: MNIST-format IDX files -> uint8 tensors on the accelerator -> shuffled batches -> augmentation.

The whole dataset lives on the training device as one uint8 tensor (47 MB for MNIST): a batch is a single gather
there, not 64 PIL conversions and a host-to-device copy. Conversion to float, augmentation and normalisation happen
batched, on the accelerator (normalisation inside the model, so the model works on any [0, 1] picture).
"""
from __future__ import annotations

import contextlib
import gzip
import hashlib
import importlib
import io
import math
import os
import struct
from dataclasses import dataclass
from typing import Any, Iterator

import torch
import torch.nn.functional as F

from .config import IMAGE_SIZE, NUM_CLASSES, Recipe, RunOptions
from .datasets import DATASETS
from .errors import UserError
from .runs import atomic_path

FILES = {
    True: ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    False: ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
VAL_SPLIT_SEED = 20240601  # fixed, independent of --seed: the validation split never moves between runs
SELECTION_VAL_SIZE = 5000  # the --val-size of every model-selection run in bench/ and docs/model-selection.md


def raw_dir(data_dir: str, dataset: str) -> str:
    return os.path.join(data_dir, DATASETS[dataset].folder, "raw")


def _extract_gz(gz_path: str, dest: str, expected_sha256: str | None) -> None:
    """Decompress a shipped ``.gz`` next to itself, verifying its content, via a temp file + rename."""
    try:
        with gzip.open(gz_path, "rb") as f:
            content = f.read()
    except (OSError, EOFError) as err:
        raise UserError(f"{gz_path} is not a valid gzip file ({err}); delete it and restore or re-download it")
    digest = hashlib.sha256(content).hexdigest()
    if expected_sha256 and digest != expected_sha256:
        raise UserError(f"{gz_path} fails its checksum (sha256 {digest[:12]}..., expected "
                        f"{expected_sha256[:12]}...); delete it and restore it (git checkout) or re-download it")
    with atomic_path(dest) as tmp, open(tmp, "wb") as f:
        f.write(content)


def ensure_files(data_dir: str, dataset: str, train: bool = True, test: bool = True) -> None:
    """Make the uncompressed IDX files exist (the training pair if ``train``, the test pair if ``test``): extract
    shipped ``.gz`` files, else download with torchvision (which fetches all four)."""
    if dataset not in DATASETS:
        raise UserError(f"unknown dataset {dataset!r}; choose one of: {', '.join(DATASETS)}")
    info, folder = DATASETS[dataset], raw_dir(data_dir, dataset)
    names = (FILES[True] if train else ()) + (FILES[False] if test else ())
    for name in names:
        path = os.path.join(folder, name)
        if not os.path.exists(path) and os.path.exists(path + ".gz"):
            _extract_gz(path + ".gz", path, (info.sha256 or {}).get(name))
    missing = [n for n in names if not os.path.exists(os.path.join(folder, n))]
    if not missing:
        return
    # torchvision prints download progress and a multi-line error per mirror; keep only our one line.
    sink = io.StringIO()
    # Imported here only: torchvision's import pulls in torch._dynamo (1.5 s of every start-up on 2 cores).
    dataset_class = getattr(importlib.import_module("torchvision.datasets"), info.torchvision_name)
    try:
        with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            dataset_class(data_dir, train=True, download=True)
    except Exception as err:  # URLError, RuntimeError, OSError, ...: all mean "could not download"
        reason = str(err).strip().splitlines()[-1][:200] if str(err).strip() else type(err).__name__
        raise UserError(
            f"{dataset} data missing: {', '.join(missing)} not in {folder} and the download failed ({reason}). "
            f"Put the {len(names)} IDX files (plain or .gz) in {folder}, or run once with internet access"
        ) from None


IDX_UBYTE = 0x08  # the IDX type code of unsigned bytes, the only one MNIST-format files use


def write_idx(path: str | os.PathLike, array: Any) -> None:
    """Write an array of unsigned bytes (NumPy or torch) as an IDX file: two zero bytes, the type, the number of
    dimensions, each size (big-endian), then the bytes. What ``read_idx`` reads; the tests and benches make their
    synthetic data with it."""
    header = bytes([0, 0, IDX_UBYTE, array.ndim]) + b"".join(struct.pack(">I", d) for d in array.shape)
    with open(path, "wb") as f:
        f.write(header + torch.as_tensor(array).to(torch.uint8).contiguous().numpy().tobytes())


def read_idx(path: str, dims: int) -> torch.Tensor:
    """An IDX file of unsigned bytes with ``dims`` dimensions (3: images, 1: labels) as a uint8 tensor, its header
    checked: two zero bytes, the type, the number of dimensions, each size, then exactly that many bytes."""
    with open(path, "rb") as f:
        data = bytearray(os.fstat(f.fileno()).st_size)  # read once, into the buffer the tensor will share
        f.readinto(data)
    header = 4 + 4 * dims
    if len(data) < header:
        raise ValueError(f"{len(data)} bytes, shorter than the {header}-byte header")
    if data[:2] != b"\0\0" or data[2] != IDX_UBYTE or data[3] != dims:
        raise ValueError(f"magic number {data[:4].hex()}, expected 0000{IDX_UBYTE:02x}{dims:02x}")
    shape = struct.unpack(f">{dims}I", data[4:header])
    count = math.prod(shape)
    if len(data) != header + count:
        raise ValueError(f"{len(data) - header} bytes of data, the header says {count}")
    if not count:
        raise ValueError("it holds no items")
    return torch.frombuffer(data, dtype=torch.uint8, offset=header).view(*shape)


def _read_split(data_dir: str, dataset: str, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
    folder = raw_dir(data_dir, dataset)
    image_path, label_path = (os.path.join(folder, n) for n in FILES[train])
    # Per file, so that an error names the broken one.
    tensors = []
    for path, dims in ((image_path, 3), (label_path, 1)):
        try:
            tensors.append(read_idx(path, dims))
        except ValueError as err:
            raise UserError(f"{path} is not a valid IDX file ({err}); delete it and restore the original file") \
                from None
        except PermissionError:
            raise  # not a broken file: run_cli says "cannot access" (deleting it would be the wrong advice)
        except OSError as err:  # a folder of that name, an I/O error
            raise UserError(f"cannot read {path} ({err.strerror or err}); restore the original file") from None
    images, labels = tensors
    if images.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE):
        raise UserError(f"{image_path} holds images of shape {tuple(images.shape[1:])}, expected 28x28")
    if len(images) != len(labels):
        raise UserError(f"{image_path} has {len(images)} images but {label_path} has {len(labels)} labels; "
                        f"restore the matching pair of files")
    if len(labels) and (labels.min() < 0 or labels.max() >= NUM_CLASSES):
        raise UserError(f"{label_path} has labels outside 0..9; restore the original file")
    return images.contiguous(), labels.long()


class InMemoryDataset:
    """uint8 images ``(N, 28, 28)`` and int64 labels, whole (``DeviceBatches`` serves them in batches)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor):
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class Splits:
    train: InMemoryDataset
    test: InMemoryDataset | None  # None when not asked for (a model-selection run never reads it)
    val: InMemoryDataset | None


def load_datasets(data_dir: str, dataset: str, val_size: int = 0, test: bool = True) -> Splits:
    """Load train and, if ``test``, test (and a fixed validation split held out of train) into memory."""
    ensure_files(data_dir, dataset, test=test)
    train_x, train_y = _read_split(data_dir, dataset, train=True)
    test_set = InMemoryDataset(*_read_split(data_dir, dataset, train=False)) if test else None
    val = None
    if val_size:
        if val_size >= len(train_y):
            raise UserError(f"--val-size {val_size} leaves no training images (the training set has {len(train_y)})")
        perm = torch.randperm(len(train_y), generator=torch.Generator().manual_seed(VAL_SPLIT_SEED))
        keep, held = perm[:-val_size].sort().values, perm[-val_size:].sort().values
        val = InMemoryDataset(train_x[held], train_y[held])
        train_x, train_y = train_x[keep], train_y[keep]
    return Splits(InMemoryDataset(train_x, train_y), test_set, val)


def load_test_set(data_dir: str, dataset: str) -> InMemoryDataset:
    """Only the test split (for figures: the training files need not be there)."""
    ensure_files(data_dir, dataset, train=False)
    return InMemoryDataset(*_read_split(data_dir, dataset, train=False))


def run_test_set(config: dict[str, Any], data_dir: str | None = None) -> InMemoryDataset:
    """The test split of the dataset a run's ``config.json`` names: from ``data_dir``, else from the run's own
    ``--data-dir`` (when its saved options say one), else from train.py's default."""
    options = config.get("options") if isinstance(config.get("options"), dict) else {}
    saved_dir = options.get("data_dir") if isinstance(options.get("data_dir"), str) else None
    return load_test_set(data_dir or saved_dir or RunOptions().data_dir, config["recipe"]["dataset"])


def epoch_order(n: int, seed: int, epoch: int, shuffle: bool) -> torch.Tensor:
    """The order of an epoch's samples: a pure function of (seed, epoch), so every process, and a resumed run, sees
    the same one (drawn on the CPU: the same numbers whatever the device)."""
    if not shuffle:
        return torch.arange(n)
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))


class DeviceBatches:
    """Batches of a dataset that lives on the accelerator: its uint8 images and labels are moved there once, an
    epoch's order is drawn once per epoch, and a batch is one gather, so the host never waits on a copy.

    ``batch_size`` is global. With N processes each global batch is cut into N consecutive slices and process r
    takes slice r: disjoint shards whose union is the global batch (as accelerate's ``split_batches``); a last
    batch that N does not divide is cut as evenly as it can be, so no sample is repeated. For training
    (``shuffle``), a last batch of fewer than N samples is left out of its epoch: every process needs a sample for
    its step (60,000 images in batches of 128 leave 96).
    """

    def __init__(self, ds: InMemoryDataset, batch_size: int, shuffle: bool, seed: int, device: torch.device | str,
                 num_processes: int = 1, process_index: int = 0):
        self.images, self.labels = ds.images.to(device), ds.labels.to(device)
        self.batch_size, self.shuffle, self.seed, self.device = batch_size, shuffle, seed, device
        self.num_processes, self.process_index = num_processes, process_index
        self.epoch = 0
        short_last = 0 < len(ds) % batch_size < num_processes
        self._len = math.ceil(len(ds) / batch_size) - (1 if shuffle and short_last else 0)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self._len

    def batches(self, skip: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """This process's share of each batch of the epoch, after the first ``skip`` (a resumed epoch)."""
        order = epoch_order(len(self.labels), self.seed, self.epoch, self.shuffle).to(self.device)
        for i in range(skip, len(self)):
            index = order[i * self.batch_size:(i + 1) * self.batch_size]
            index = index.tensor_split(self.num_processes)[self.process_index]
            yield self.images[index], self.labels[index]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return self.batches()


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 ``(B, 28, 28)`` -> float ``(B, 1, 28, 28)`` in [0, 1]."""
    return images.unsqueeze(1).float().div_(255.0)


# The elastic displacement field is drawn on a coarse grid of control points and upsampled, which makes it smooth
# (neighbouring pixels move together, as in Simard et al. 2003's Gaussian-filtered field) with one interpolation
# instead of a blur over every pixel: about 3% of a training step (docs/model-selection.md, round 6).
# 5 x 5 points over 28 pixels: one every 7 pixels.
ELASTIC_GRID = 5


def augment(x: torch.Tensor, recipe: Recipe) -> torch.Tensor:
    """The recipe's random distortions of a float batch ``(B, 1, H, W)``, per image, on x's device, in this order:
    low-resolution scan, crop (whole-pixel shift), affine transform and elastic distortion, mirror, erasing. Each is
    skipped, drawing no random numbers, when its strength is zero (so adding one leaves the others' draws, and
    MNIST's runs, as they were); all zero returns ``x``."""
    if recipe.downscale:
        x = random_downscale(x, recipe.downscale)
    if recipe.crop:
        x = random_crop(x, recipe.crop)
    x = random_warp(x, recipe.translate, recipe.rotate, recipe.scale, recipe.elastic)
    if recipe.hflip:
        x = random_flip(x, recipe.hflip)
    if recipe.erase:
        x = random_erase(x, recipe.erase)
    return x


# The sides a low-resolution scan is averaged down to before it is scaled back up: from half the image's (14) to a
# quarter (7). A model whose stem learned MNIST's sharp strokes reads an 8x8 scan poorly (BENCHMARKS.md, "digits that
# are not drawn like MNIST's").
DOWNSCALE_SIDES = (7, 8, 10, 14)


def random_downscale(x: torch.Tensor, p: float) -> torch.Tensor:
    """Each image, with probability ``p``, averaged down to one of ``DOWNSCALE_SIDES`` pixels a side (drawn per image)
    and scaled back up bicubically, with its brightest pixel restored: a low-resolution scan as predict.py reads it
    (its preprocessing stretches the ink back to white). No host read.

    Both resamplings are linear and separable, so a scan is ``M @ image @ M.T`` with one 28x28 matrix ``M`` per
    side (``scan_matrices``): each image gets its own in two batched matmuls, a sixth of the time of resampling the
    whole batch at every side and picking one (which cost about 7% of a sprint step on the CPU)."""
    b, size = x.shape[0], x.shape[-1]
    hit = torch.rand(b, device=x.device) < p
    side = torch.randint(len(DOWNSCALE_SIDES), (b,), device=x.device)
    matrices = scan_matrices(size, x.device, x.dtype)                         # (sides + 1, H, H): the last, I
    m = matrices[torch.where(hit, side, len(DOWNSCALE_SIDES))]                # (B, H, H)
    back = (m @ x[:, 0] @ m.transpose(1, 2)).unsqueeze(1).clamp(0, 1)         # (B, 1, H, W)
    peak = x.amax(dim=(-2, -1), keepdim=True)
    back = (back * peak / back.amax(dim=(-2, -1), keepdim=True).clamp_min(1e-6)).clamp(0, 1)
    return torch.where(hit[:, None, None, None], back, x)


def scan_matrices(size: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Per axis, a low-resolution scan's linear map: area-average ``size`` pixels down to each of ``DOWNSCALE_SIDES``,
    then bicubic back up, ``(len(DOWNSCALE_SIDES) + 1, size, size)``, the identity last. Built by resampling the
    basis vectors with the same ``F.interpolate`` calls a whole image would get, so the two agree (to float
    rounding); a few tiny ops, so built where they are used rather than cached per device."""
    basis = torch.eye(size, device=device, dtype=dtype).reshape(size, 1, size, 1)  # image k: pixel k of a column
    maps = [F.interpolate(F.interpolate(basis, size=(s, 1), mode="area"), size=(size, 1), mode="bicubic",
                          align_corners=False).reshape(size, size).T for s in DOWNSCALE_SIDES]  # column k: M e_k
    return torch.stack([*maps, basis.reshape(size, size)])


def random_warp(x: torch.Tensor, translate: float, rotate: float, scale: float, elastic: float) -> torch.Tensor:
    """Random affine transform (shift of up to ``translate`` pixels, rotation of up to ``rotate`` degrees, zoom by
    up to ``scale``) and elastic distortion of ``elastic`` pixels, resampled bilinearly; all zero returns ``x``."""
    if not (translate or rotate or scale or elastic):
        return x
    b, device = x.shape[0], x.device
    uniform = lambda: torch.rand(b, device=device) * 2 - 1  # noqa: E731  in [-1, 1)
    angle = uniform() * math.radians(rotate)
    zoom = 1 + uniform() * scale
    pixel = 2.0 / x.shape[-1]  # affine_grid works in [-1, 1] coordinates: one pixel is 2/W
    shift = translate * pixel
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    theta = torch.stack([
        torch.stack([cos, -sin, uniform() * shift], dim=1),
        torch.stack([sin, cos, uniform() * shift], dim=1),
    ], dim=1)  # (B, 2, 3)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)  # (B, H, W, 2): where each output pixel reads
    if elastic:
        coarse = torch.randn(b, 2, ELASTIC_GRID, ELASTIC_GRID, device=device) * (elastic * pixel)
        field = F.interpolate(coarse, size=x.shape[-2:], mode="bicubic", align_corners=True)  # (B, 2, H, W)
        grid = grid + field.permute(0, 2, 3, 1)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def random_crop(x: torch.Tensor, pad: int) -> torch.Tensor:
    """A random ``H x W`` window of each image zero-padded by ``pad`` pixels per side: a shift by whole pixels in
    [-pad, pad] on each axis, no resampling (what a padded random crop does, batched)."""
    b, _, h, w = x.shape
    padded = F.pad(x[:, 0], (pad, pad, pad, pad))                                   # (B, H+2p, W+2p)
    dy, dx = torch.randint(0, 2 * pad + 1, (2, b, 1), device=x.device)
    rows = torch.arange(h, device=x.device) + dy                                    # (B, H)
    cols = torch.arange(w, device=x.device) + dx                                    # (B, W)
    index = torch.arange(b, device=x.device)[:, None, None]
    return padded[index, rows[:, :, None], cols[:, None, :]].unsqueeze(1)          # (B, 1, H, W)


def random_flip(x: torch.Tensor, p: float) -> torch.Tensor:
    """Each image mirrored left-right with probability ``p``."""
    mirror = torch.rand(x.shape[0], device=x.device) < p
    return torch.where(mirror[:, None, None, None], x.flip(-1), x)


# Random erasing's ranges, as Zhong et al. 2020 ("Random Erasing Data Augmentation") use them: the rectangle's share
# of the image, and its aspect ratio (height / width) drawn log-uniformly.
ERASE_AREA = (0.02, 0.4)
ERASE_ASPECT = (0.3, 1 / 0.3)


def random_erase(x: torch.Tensor, p: float) -> torch.Tensor:
    """With probability ``p`` per image, one random rectangle (ERASE_AREA of the image, ERASE_ASPECT) filled with
    uniform noise in [0, 1], as random erasing does; drawn for the whole batch at once, one mask, no loop."""
    b, _, h, w = x.shape
    device = x.device
    area = torch.empty(b, device=device).uniform_(*ERASE_AREA) * (h * w)
    aspect = torch.empty(b, device=device).uniform_(math.log(ERASE_ASPECT[0]), math.log(ERASE_ASPECT[1])).exp()
    eh = (area * aspect).sqrt().round().clamp(1, h)                                 # (B,) rectangle height
    ew = (area / aspect).sqrt().round().clamp(1, w)                                 # (B,) rectangle width
    top = (torch.rand(b, device=device) * (h - eh + 1)).floor()
    left = (torch.rand(b, device=device) * (w - ew + 1)).floor()
    inside = box_mask(top, top + eh, left, left + ew, h, w)                          # (B, H, W)
    inside &= (torch.rand(b, device=device) < p)[:, None, None]
    return torch.where(inside[:, None], torch.rand_like(x), x)


def box_mask(top: torch.Tensor, bottom: torch.Tensor, left: torch.Tensor, right: torch.Tensor, h: int,
             w: int) -> torch.Tensor:
    """``(B, H, W)``: the pixels of an ``H x W`` image whose centres (i + 0.5) lie strictly inside each image's box,
    given by its edges ``(B,)`` in pixel coordinates. Whole-pixel edges select whole pixels; pixel centres, not
    indices, so that a box placed anywhere in [0, H) leans to no side."""
    rows = torch.arange(h, device=top.device) + 0.5                                 # (H,)
    cols = torch.arange(w, device=top.device) + 0.5                                 # (W,)
    in_rows = (rows > top[:, None]) & (rows < bottom[:, None])                      # (B, H)
    in_cols = (cols > left[:, None]) & (cols < right[:, None])                      # (B, W)
    return in_rows[:, :, None] & in_cols[:, None, :]


def mix_pairs(x: torch.Tensor, labels: torch.Tensor,
              recipe: Recipe) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Mixup and CutMix of a float batch ``(B, 1, H, W)``: each image is mixed with its partner, the image at the
    mirrored place in the batch (``x.flip(0)``; the batch is already in random order). Returns the mixed images, the
    partners' labels and each image's share ``lam`` ``(B,)`` of its own label (the loss is ``lam`` of its own
    label's plus ``1 - lam`` of its partner's); when both are off, ``x`` and ``labels`` come back as they were and
    ``lam`` is None, and no random number is drawn. Per image, so one batch holds every mixing proportion;
    ``recipe.mix_prob`` of the images are mixed, the rest keep ``lam`` 1. No value is read on the host.
    """
    if not (recipe.mixup or recipe.cutmix):
        return x, labels, None
    b, _, h, w = x.shape
    partner = x.flip(0)
    if recipe.mixup:
        lam_blend = _beta(recipe.mixup, b, x.device)
        # lerp's weight goes to its second argument: lam of x, 1 - lam of its partner.
        blended = torch.lerp(partner, x, lam_blend[:, None, None, None])
    if recipe.cutmix:
        # A box of (1 - lam) of the image's area, centred anywhere and clipped at the edges; lam is then the share
        # of the image that stayed its own, which clipping raises.
        side = (1 - _beta(recipe.cutmix, b, x.device)).sqrt()                    # (B,) box side / image side
        cy, cx = torch.rand(b, device=x.device) * h, torch.rand(b, device=x.device) * w
        half_h, half_w = side * h / 2, side * w / 2
        box = box_mask(cy - half_h, cy + half_h, cx - half_w, cx + half_w, h, w)  # (B, H, W)
        pasted = torch.where(box[:, None], partner, x)
        lam_paste = 1 - box.flatten(1).float().mean(1)
    if recipe.mixup and recipe.cutmix:
        paste = torch.rand(b, device=x.device) < 0.5                              # (B,) which of the two
        out, lam = torch.where(paste[:, None, None, None], pasted, blended), torch.where(paste, lam_paste, lam_blend)
    else:
        out, lam = (blended, lam_blend) if recipe.mixup else (pasted, lam_paste)
    if recipe.mix_prob < 1:
        keep = torch.rand(b, device=x.device) >= recipe.mix_prob                 # (B,) images left as they were
        out, lam = torch.where(keep[:, None, None, None], x, out), torch.where(keep, 1.0, lam)
    return out, labels.flip(0), lam


def _beta(alpha: float, n: int, device: torch.device) -> torch.Tensor:
    """``n`` draws from Beta(alpha, alpha) on ``device``; without argument validation, which reads the host."""
    concentration = torch.full((n,), float(alpha), device=device)
    return torch.distributions.Beta(concentration, concentration, validate_args=False).sample()
