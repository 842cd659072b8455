"""The input pipeline: IDX loading, shipped .gz extraction, checks, sampler, augmentation."""
from __future__ import annotations

import dataclasses
import errno
import gzip
import hashlib
from pathlib import Path

import pytest
import torch

from perceiver_mnist import data
from perceiver_mnist.config import Recipe
from perceiver_mnist.errors import UserError

from .conftest import N_TEST, N_TRAIN, NO_NETWORK, make_dataset, write_idx


@pytest.fixture
def fresh_data(tmp_path: Path) -> Path:
    return make_dataset(tmp_path / "data")


def raw(root: Path, name: str) -> Path:
    return root / "MNIST" / "raw" / name


def test_loads_idx_files_into_memory_with_a_fixed_validation_split(fresh_data):
    splits = data.load_datasets(str(fresh_data), "mnist")
    assert splits.train.images.shape == (N_TRAIN, 28, 28) and splits.train.images.dtype == torch.uint8
    assert len(splits.test) == N_TEST and splits.val is None
    held = data.load_datasets(str(fresh_data), "mnist", val_size=32)
    again = data.load_datasets(str(fresh_data), "mnist", val_size=32)
    assert len(held.train) == N_TRAIN - 32 and len(held.val) == 32
    assert torch.equal(held.val.images, again.val.images)  # the split never moves
    # validation images are not in the training split
    train_rows = {bytes(x.numpy()) for x in held.train.images}
    assert not any(bytes(x.numpy()) in train_rows for x in held.val.images)


def offline(monkeypatch) -> None:
    for var, value in NO_NETWORK.items():
        monkeypatch.setenv(var, value)


def test_fashion_mnist_is_read_from_its_own_torchvision_folder(tmp_path, monkeypatch):
    root = make_dataset(tmp_path / "data", n_train=20, n_test=10, folder="FashionMNIST")
    splits = data.load_datasets(str(root), "fashion-mnist")
    assert (len(splits.train), len(splits.test)) == (20, 10)
    offline(monkeypatch)
    with pytest.raises(UserError, match="fashion-mnist data missing: .* not in .*FashionMNIST/raw"):
        data.load_datasets(str(tmp_path / "elsewhere"), "fashion-mnist")


def numbered_dataset(n: int) -> data.InMemoryDataset:
    """Sample i: an image whose first pixel is i, and the label i (not a class; what a batch holds shows)."""
    images = torch.randint(0, 256, (n, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    images[:, 0, 0] = torch.arange(n, dtype=torch.uint8)
    return data.InMemoryDataset(images, torch.arange(n))


# (samples, processes, shuffle): 90 = 5 x 16 + 10, cut into 1 to 4 shards; 82 = 5 x 16 + 2, a last batch that 3
# training processes cannot share (left out of the epoch) but 3 evaluating ones can (one of them gets none).
@pytest.mark.parametrize("n, processes, shuffle", [(90, 1, True), (90, 2, True), (90, 3, True), (90, 4, False),
                                                   (82, 3, True), (82, 3, False)])
def test_an_epoch_serves_every_sample_once_in_whole_batches_across_processes(n, processes, shuffle):
    """Every batch of an epoch, on every process: together the processes' shares are the global batch, cut into
    consecutive slices in process order; over the epoch every sample comes exactly once (in training, all but a last
    batch too small to share)."""
    batch = 16
    ds = numbered_dataset(n)
    shards = [data.DeviceBatches(ds, batch, shuffle=shuffle, seed=7, device="cpu", num_processes=processes,
                                 process_index=r) for r in range(processes)]
    full, rest = divmod(n, batch)
    left_out = shuffle and 0 < rest < processes
    orders = []
    for epoch in (0, 1):
        for shard in shards:
            shard.set_epoch(epoch)
        served = [list(shard) for shard in shards]
        steps = full + (1 if rest and not left_out else 0)
        assert [len(shard) for shard in shards] == [len(s) for s in served] == [steps] * processes
        order: list[int] = []
        for step in range(steps):
            parts = [s[step] for s in served]
            for images, labels in parts:
                assert images.shape == (len(labels), 28, 28) and images.dtype == torch.uint8
                assert images[:, 0, 0].tolist() == labels.tolist()  # each image with its own label
            sizes = [len(labels) for _, labels in parts]
            assert sum(sizes) == (batch if step < full else rest), step
            assert max(sizes) - min(sizes) <= 1 and sizes == sorted(sizes, reverse=True), step  # evenly cut
            order += [i for _, labels in parts for i in labels.tolist()]
        expected = data.epoch_order(n, seed=7, epoch=epoch, shuffle=shuffle).tolist()
        assert order == expected[:len(order)]  # batch after batch, process 0's slice first
        assert sorted(order) == (sorted(expected[:full * batch]) if left_out else list(range(n)))
        orders.append(order)
    assert (orders[0] != orders[1]) == shuffle  # a new order each epoch in training only


def test_shipped_gz_is_extracted_after_its_checksum_is_verified(fresh_data, monkeypatch):
    sums = {}
    for name in data.FILES[True] + data.FILES[False]:
        path = raw(fresh_data, name)
        sums[name] = hashlib.sha256(path.read_bytes()).hexdigest()
        path.with_name(name + ".gz").write_bytes(gzip.compress(path.read_bytes()))
        path.unlink()
    monkeypatch.setitem(data.DATASETS, "mnist", dataclasses.replace(data.DATASETS["mnist"], sha256=sums))
    assert len(data.load_datasets(str(fresh_data), "mnist").train) == N_TRAIN
    assert raw(fresh_data, "train-images-idx3-ubyte").exists()


def test_a_gz_with_the_wrong_content_fails_its_checksum(fresh_data):
    path = raw(fresh_data, "t10k-labels-idx1-ubyte")
    path.with_name(path.name + ".gz").write_bytes(gzip.compress(path.read_bytes()))
    path.unlink()  # the real MNIST checksum cannot match the synthetic file
    with pytest.raises(UserError, match="t10k-labels-idx1-ubyte.gz fails its checksum"):
        data.load_datasets(str(fresh_data), "mnist")
    assert not path.exists()


def test_missing_data_without_network_is_one_clear_error(tmp_path, monkeypatch):
    offline(monkeypatch)
    with pytest.raises(UserError) as err:
        data.load_datasets(str(tmp_path / "nowhere"), "mnist")
    message = str(err.value)
    assert "download failed" in message and "train-images-idx3-ubyte" in message and "\n" not in message


@pytest.mark.parametrize("damage, message", [
    ("truncate", "train-images-idx3-ubyte is not a valid IDX file"),
    ("magic", "train-images-idx3-ubyte is not a valid IDX file"),
    ("short_labels", "has 192 images but"),
    ("bad_labels", "labels outside 0..9"),
])
def test_corrupt_idx_files_are_named(fresh_data, damage, message):
    images, labels = raw(fresh_data, "train-images-idx3-ubyte"), raw(fresh_data, "train-labels-idx1-ubyte")
    if damage == "truncate":
        images.write_bytes(images.read_bytes()[:5000])
    elif damage == "magic":
        images.write_bytes(b"\x00\x00\x99\x99" + images.read_bytes()[4:])
    elif damage == "short_labels":
        write_idx(labels, torch.zeros(100, dtype=torch.uint8).numpy())
    else:
        write_idx(labels, torch.full((N_TRAIN,), 11, dtype=torch.uint8).numpy())
    with pytest.raises(UserError, match=message):
        data.load_datasets(str(fresh_data), "mnist")


def test_epoch_order_is_a_function_of_seed_and_epoch():
    first = data.epoch_order(50, seed=3, epoch=0, shuffle=True).tolist()
    assert sorted(first) == list(range(50)) and data.epoch_order(50, seed=3, epoch=0, shuffle=True).tolist() == first
    assert data.epoch_order(50, seed=3, epoch=1, shuffle=True).tolist() != first
    assert data.epoch_order(50, seed=3, epoch=0, shuffle=False).tolist() == list(range(50))


def test_device_batches_are_the_data_loaders_batches_shards_and_resume_points():
    """The batches a DataLoader over the epoch's order gave (the pipeline before the data moved to the device), for
    the same (seed, epoch); on N processes disjoint shards whose union is each global batch; skipping k batches
    gives the rest of the same epoch."""
    from torch.utils.data import DataLoader

    n, batch = 90, 16
    images = torch.zeros(n, 28, 28, dtype=torch.uint8)
    images[:, 0, 0] = torch.arange(n, dtype=torch.uint8)  # each image carries its index
    ds = data.InMemoryDataset(images, torch.arange(n) % 10)
    seen = lambda part: part[0][:, 0, 0].tolist()  # noqa: E731
    for epoch in (0, 3):
        one = data.DeviceBatches(ds, batch, shuffle=True, seed=7, device="cpu")
        one.set_epoch(epoch)
        order = data.epoch_order(n, seed=7, epoch=epoch, shuffle=True).tolist()
        expected = [b.tolist() for b in DataLoader(range(n), batch_size=batch, sampler=order)]
        got = list(one)
        assert len(one) == 6 and [seen(part) for part in got] == expected
        assert [seen(part) for part in one.batches(skip=2)] == expected[2:]
        for processes in (2, 3):
            shards = [data.DeviceBatches(ds, batch, shuffle=True, seed=7, device="cpu", num_processes=processes,
                                         process_index=r) for r in range(processes)]
            for shard in shards:
                shard.set_epoch(epoch)
            for step, parts in enumerate(zip(*(s.batches() for s in shards))):
                indices = [seen(p) for p in parts]
                assert sorted(sum(indices, [])) == sorted(expected[step])  # disjoint, and together the batch
                assert max(map(len, indices)) - min(map(len, indices)) <= 1  # evenly cut


def test_augment_is_identity_when_off_and_moves_pixels_when_on():
    torch.manual_seed(0)
    x = torch.zeros(4, 1, 28, 28)
    x[:, :, 10:18, 10:18] = 1
    off = Recipe(translate=0, rotate=0.0, scale=0.0, elastic=0.0)
    assert torch.equal(data.augment(x, off), x)
    shifted = data.augment(x, dataclasses.replace(off, translate=3))
    assert shifted.shape == x.shape and not torch.allclose(shifted, x)
    assert torch.allclose(shifted.sum(dim=(1, 2, 3)), x.sum(dim=(1, 2, 3)), rtol=0.05)  # a shift keeps the ink
    assert 0 <= shifted.min() and shifted.max() <= 1


def test_elastic_distortion_bends_an_image_smoothly_and_differently_per_image():
    torch.manual_seed(0)
    # A pattern in which every pixel is distinct reveals where each output pixel was read from.
    ramp = torch.linspace(0, 1, 28)
    x = (ramp[:, None] * 0.5 + ramp[None, :] * 0.25).expand(3, 1, 28, 28).contiguous()
    elastic = Recipe(translate=0, rotate=0.0, scale=0.0, elastic=1.0)
    bent = data.augment(x, elastic)
    inner = (slice(None), slice(None), slice(4, 24), slice(4, 24))  # away from the border, where zeros come in
    change = (bent - x)[inner]
    assert change.abs().mean() > 0.005  # it moved pixels by about a pixel (one pixel is a 0.009-0.027 step) ...
    assert not torch.allclose(change[0], change[1], atol=1e-3)  # ... with a field of its own for each image ...
    rough = lambda t: (t[..., 1:, :] - t[..., :-1, :]).abs().mean()  # noqa: E731
    assert rough(change) < change.abs().mean() / 2  # ... that varies slowly across the image (not pixel noise)
    assert torch.equal(data.augment(x, dataclasses.replace(elastic, elastic=0.0)), x)


def test_crop_shifts_each_image_by_whole_pixels_with_zeros_coming_in():
    torch.manual_seed(0)
    x = torch.zeros(200, 1, 28, 28)
    x[:, 0, 13, 9] = 1.0  # one lit pixel: where it lands is the shift
    x[:, 0, 5, 20] = 0.5
    out = data.random_crop(x, 3)
    assert set(out.unique().tolist()) == {0.0, 0.5, 1.0}  # moved, not resampled: no value in between
    shifts = set()
    for image in out[:, 0]:
        (r, c), = (image == 1.0).nonzero().tolist()
        assert image[r - 8, c + 11] == 0.5  # the whole image moved together
        assert image.count_nonzero() == 2
        shifts.add((r - 13, c - 9))
    assert shifts == {(dy, dx) for dy in range(-3, 4) for dx in range(-3, 4)}  # every shift of up to 3 pixels
    edge = torch.ones(50, 1, 28, 28)
    cropped = data.random_crop(edge, 2)
    # What comes in at the edge is the zero padding: at most 2 rows and 2 columns, as many as the shift.
    assert ((cropped == 0).sum(dim=(1, 2, 3)) <= 2 * 28 + 2 * 28).all() and (cropped == 0).any()


def test_flip_mirrors_each_image_left_right_with_its_probability():
    torch.manual_seed(0)
    x = torch.rand(400, 1, 28, 28)
    assert torch.equal(data.random_flip(x, 1.0), x.flip(-1))
    assert torch.equal(data.random_flip(x, 0.0), x)
    out = data.random_flip(x, 0.5)
    mirrored = (out == x.flip(-1)).flatten(1).all(1)
    assert ((out == x).flatten(1).all(1) ^ mirrored).all()  # each one whole: as it was, or mirrored
    assert 160 < int(mirrored.sum()) < 240  # about half of 400


def test_erasing_fills_one_rectangle_of_2_to_40_percent_with_noise():
    torch.manual_seed(0)
    x = -torch.ones(300, 1, 28, 28)  # the noise is in [0, 1]: what was erased shows
    out = data.random_erase(x, 1.0)
    erased = out[:, 0] >= 0
    for mask in erased:
        rows, cols = mask.any(1).nonzero()[:, 0], mask.any(0).nonzero()[:, 0]
        box = torch.zeros_like(mask)
        box[rows.min():rows.max() + 1, cols.min():cols.max() + 1] = True
        assert torch.equal(mask, box)  # one solid rectangle
        height, width = len(rows), len(cols)
        assert 0.3 / 2 <= height / width <= 2 / 0.3  # its aspect, up to rounding
        assert 0.02 * 784 * 0.7 <= mask.sum() <= 0.4 * 784 * 1.3  # its area, up to rounding and the clamp to 28
    areas = erased.sum((1, 2)).float() / 784
    assert areas.min() < 0.05 and areas.max() > 0.3  # the whole range is drawn
    noise = out[:, 0][erased]
    assert 0.45 < float(noise.mean()) < 0.55 and noise.std() > 0.2  # uniform noise, not a constant fill
    assert torch.equal(data.random_erase(x, 0.0), x)
    some = (data.random_erase(x, 0.5) >= 0).flatten(1).any(1)
    assert 110 < int(some.sum()) < 190  # about half of 300


def _numbered_images(n: int) -> torch.Tensor:
    """Image i filled with the value i: every pixel of a mix shows which images it came from."""
    return torch.arange(n, dtype=torch.float32)[:, None, None, None].expand(n, 1, 28, 28).clone()


def test_mixup_blends_each_image_with_its_partner_by_the_share_it_reports():
    torch.manual_seed(0)
    x, labels = _numbered_images(400), torch.arange(400) % 10
    out, partner_labels, lam = data.mix_pairs(x, labels, Recipe(mixup=1.0))
    assert torch.equal(partner_labels, labels.flip(0))  # the partner: the image at the mirrored place
    own, partner = torch.arange(400.0), torch.arange(400.0).flip(0)
    expected = lam * own + (1 - lam) * partner
    assert torch.allclose(out.flatten(1), expected[:, None].expand(400, 784), atol=1e-4)  # one blend per image
    assert ((lam >= 0) & (lam <= 1)).all()
    assert 0.45 < float(lam.mean()) < 0.55 and lam.min() < 0.05 and lam.max() > 0.95  # Beta(1, 1): uniform
    _, _, peaked = data.mix_pairs(x, labels, Recipe(mixup=0.2))
    assert float(((peaked > 0.1) & (peaked < 0.9)).float().mean()) < 0.5  # a small alpha: mostly near 0 or 1


def test_cutmix_pastes_one_rectangle_of_its_partner_and_reports_the_share_kept():
    torch.manual_seed(0)
    x, labels = _numbered_images(300), torch.arange(300) % 10
    out, partner_labels, lam = data.mix_pairs(x, labels, Recipe(cutmix=1.0))
    assert torch.equal(partner_labels, labels.flip(0))
    touches_edge = 0
    for i, image in enumerate(out[:, 0]):
        pasted = image == 299 - i
        assert ((image == i) | pasted).all()  # every pixel its own or its partner's, unblended
        if pasted.any():
            rows, cols = pasted.any(1).nonzero()[:, 0], pasted.any(0).nonzero()[:, 0]
            box = torch.zeros_like(pasted)
            box[rows.min():rows.max() + 1, cols.min():cols.max() + 1] = True
            assert torch.equal(pasted, box)  # one solid rectangle
            touches_edge += int(rows.min() == 0 or cols.min() == 0 or rows.max() == 27 or cols.max() == 27)
        assert float(lam[i]) == pytest.approx(1 - float(pasted.float().mean()))  # the share that stayed its own
    assert lam.min() < 0.2 and lam.max() > 0.95 and 0.4 < float(lam.mean()) < 0.75  # clipping only raises it
    assert touches_edge > 30  # boxes are centred anywhere, and clipped where they cross the edge


def test_mixup_and_cutmix_together_give_each_image_one_of_the_two():
    torch.manual_seed(0)
    x, labels = _numbered_images(400), torch.arange(400) % 10
    out, _, lam = data.mix_pairs(x, labels, Recipe(mixup=1.0, cutmix=1.0))
    blended = (out.flatten(1) == out.flatten(1)[:, :1]).all(1)  # one value all over: a blend (or nothing pasted)
    pasted = ~blended
    for i in pasted.nonzero()[:, 0].tolist():
        assert ((out[i] == i) | (out[i] == 399 - i)).all()
        assert float(lam[i]) == pytest.approx(1 - float((out[i] == 399 - i).float().mean()))
    assert 150 < int(pasted.sum()) < 250  # about half of 400
    own, partner = torch.arange(400.0), torch.arange(400.0).flip(0)
    assert torch.allclose(out[blended, 0, 0, 0], (lam * own + (1 - lam) * partner)[blended], atol=1e-4)


def test_mix_prob_leaves_the_other_images_as_they_were():
    torch.manual_seed(0)
    x, labels = _numbered_images(400), torch.arange(400) % 10
    out, _, lam = data.mix_pairs(x, labels, Recipe(cutmix=1.0, mix_prob=0.5))
    untouched = (out == x).flatten(1).all(1)
    assert (lam[untouched] == 1).all() and (lam[~untouched] < 1).all()  # lam says which were mixed
    assert 160 < int((~untouched).sum()) < 240  # about half of 400 (a box too small for a pixel is rare)


def test_mixing_that_is_off_returns_the_batch_untouched_and_draws_nothing():
    x, labels = torch.rand(8, 1, 28, 28), torch.arange(8)
    state = torch.get_rng_state()
    out, partner_labels, lam = data.mix_pairs(x, labels, Recipe())
    assert out is x and partner_labels is labels and lam is None
    assert torch.equal(torch.get_rng_state(), state)  # so a recipe without mixing draws as if it did not exist


def test_augment_applies_only_the_distortions_a_recipe_asks_for():
    torch.manual_seed(0)
    x = torch.rand(64, 1, 28, 28)
    off = Recipe(translate=0, rotate=0.0, scale=0.0, elastic=0.0)
    torch.manual_seed(1)
    flipped = data.augment(x, dataclasses.replace(off, dataset="fashion-mnist", hflip=1.0))
    assert torch.equal(flipped, x.flip(-1))
    torch.manual_seed(1)
    both = data.augment(x, dataclasses.replace(off, dataset="fashion-mnist", crop=2, hflip=1.0, erase=1.0))
    torch.manual_seed(1)
    cropped = data.random_crop(x, 2).flip(-1)  # the crop is drawn first, with the same random numbers
    kept = both == cropped
    assert not kept.all() and kept.float().mean() > 0.5  # all that was not erased is the cropped mirror


def test_an_unreadable_idx_file_is_reported_as_a_permission_problem_not_as_corrupt(fresh_data, monkeypatch):
    def forbidden(path, dims):
        raise PermissionError(errno.EACCES, "Permission denied", path)

    monkeypatch.setattr(data, "read_idx", forbidden)  # root ignores file modes: simulate the refusal
    with pytest.raises(PermissionError):  # run_cli turns it into "cannot access PATH (Permission denied); ..."
        data.load_datasets(str(fresh_data), "mnist")


def test_the_idx_reader_reads_what_torchvision_reads_and_checks_the_header(tmp_path):
    """Our reader replaced torchvision's (whose import costs 1.5 s of every start-up): the same tensors from the
    real test set shipped with the repository, and a clear reason for each kind of broken file."""
    from torchvision.datasets.mnist import read_image_file, read_label_file

    from .conftest import ROOT
    for name, dims, reference in (("t10k-images-idx3-ubyte", 3, read_image_file),
                                  ("t10k-labels-idx1-ubyte", 1, read_label_file)):
        path = tmp_path / name
        path.write_bytes(gzip.decompress((ROOT / "data" / "MNIST" / "raw" / f"{name}.gz").read_bytes()))
        ours = data.read_idx(str(path), dims)
        assert ours.dtype == torch.uint8 and torch.equal(ours, reference(str(path)))
    good = (tmp_path / "t10k-labels-idx1-ubyte").read_bytes()  # 10,000 labels after an 8-byte header
    for broken, reason in ((good[:6], "6 bytes, shorter than the 8-byte header"),
                           (b"\x00\x00\x0d\x01" + good[4:], "magic number 00000d01, expected 00000801"),
                           (good[:-1], "9999 bytes of data, the header says 10000"),
                           (good + b"\x00", "10001 bytes of data, the header says 10000")):
        (tmp_path / "broken").write_bytes(broken)
        with pytest.raises(ValueError, match=reason):
            data.read_idx(str(tmp_path / "broken"), 1)
    with pytest.raises(ValueError, match="magic number 00000801, expected 00000803"):  # labels read as images
        data.read_idx(str(tmp_path / "t10k-labels-idx1-ubyte"), 3)


def test_a_folder_in_place_of_an_idx_file_is_one_clear_error(fresh_data):
    path = raw(fresh_data, "train-labels-idx1-ubyte")
    path.unlink()
    path.mkdir()
    with pytest.raises(UserError, match="cannot read .*train-labels-idx1-ubyte .*restore the original file"):
        data.load_datasets(str(fresh_data), "mnist")


def test_an_unknown_dataset_is_refused_by_both_loaders(fresh_data):
    for load in (data.load_datasets, data.load_test_set):
        with pytest.raises(UserError, match="unknown dataset 'cifar'; choose one of: mnist, fashion-mnist"):
            load(str(fresh_data), "cifar")


def test_downscale_makes_some_images_low_resolution_scans_and_leaves_the_rest():
    torch.manual_seed(0)
    x = torch.zeros(400, 1, 28, 28)
    x[:, :, 6:22, 13:15] = torch.linspace(0.5, 1.0, 400)[:, None, None, None]  # a 2-pixel stroke, each its own level
    out = data.random_downscale(x, 0.5)
    changed = (out != x).flatten(1).any(dim=1)
    assert 150 < int(changed.sum()) < 250  # about half, per image
    assert torch.equal(out[~changed], x[~changed])
    # each changed image is exactly one of the scans of its own original, with its brightest pixel kept
    scans = []
    for side in data.DOWNSCALE_SIDES:
        back = torch.nn.functional.interpolate(torch.nn.functional.interpolate(x, size=(side, side), mode="area"),
                                               size=(28, 28), mode="bicubic", align_corners=False).clamp(0, 1)
        scans.append((back * x.amax((-2, -1), keepdim=True) / back.amax((-2, -1), keepdim=True)).clamp(0, 1))
    for i in torch.nonzero(changed).flatten().tolist():
        matches = [s for s, scan in zip(data.DOWNSCALE_SIDES, scans) if torch.allclose(out[i], scan[i], atol=1e-6)]
        assert len(matches) == 1, i
        assert out[i].max() == pytest.approx(x[i].max().item(), abs=1e-6)
        assert (out[i] > 0.05).sum() > (x[i] > 0.05).sum()  # blurred wider than the sharp stroke
    sides = {next(s for s, scan in zip(data.DOWNSCALE_SIDES, scans) if torch.allclose(out[i], scan[i], atol=1e-6))
             for i in torch.nonzero(changed).flatten().tolist()}
    assert sides == set(data.DOWNSCALE_SIDES)  # every side is drawn


def test_downscale_off_draws_nothing():
    """Off, it draws no random number: every recipe without it trains exactly as before it existed."""
    x = torch.rand(8, 1, 28, 28)
    still = dataclasses.replace(Recipe(), translate=0, rotate=0.0, scale=0.0)
    for downscale, draws in ((0.0, False), (0.5, True)):
        torch.manual_seed(1)
        out = data.augment(x, dataclasses.replace(still, downscale=downscale))
        after = torch.rand(1)
        torch.manual_seed(1)
        assert torch.equal(after, torch.rand(1)) != draws
        assert (out is x) != draws
