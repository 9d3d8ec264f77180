"""Augmentation of training images read as pixel sequences (sCIFAR): the flips and shifts
against a plain per-image reference, draws that depend on the batch key alone, the [data]
fields and their rules, and an augmented run that resumes exactly."""
import numpy as np
import pytest
import torch

import edgessm as es
from edgessm.data import load_task
from edgessm.data.fsdd import Augment
from edgessm.data.images import ImageAugment, augment_images
from edgessm.train import from_dict, train

from conftest import needs_cifar


def _images(B=24, side=8, C=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, side * side, C, generator=g)


def _reference(x, a, key):
    """Each image on its own: mirrored when its flip is drawn, then padded by `shift` with
    zeros and cut at (shift - dy, shift - dx), with the draws in the documented order."""
    B, L, C = x.shape
    side = int(round(L ** 0.5))
    rng = np.random.default_rng(list(key))
    flip = rng.random(B) < 0.5 if a.flip else np.zeros(B, bool)
    d = rng.integers(-a.shift_px, a.shift_px + 1, size=(B, 2)) if a.shift_px else np.zeros((B, 2), int)
    out = []
    s = a.shift_px
    for b in range(B):
        img = x[b].numpy().reshape(side, side, C)
        if flip[b]:
            img = img[:, ::-1]
        p = np.pad(img, ((s, s), (s, s), (0, 0)))
        dy, dx = d[b]
        out.append(p[s - dy:s - dy + side, s - dx:s - dx + side].reshape(L, C))
    return torch.from_numpy(np.stack(out)), flip, d


@pytest.mark.parametrize("flip, shift", [(True, 0), (False, 3), (True, 2), (True, 7)])
def test_flips_and_shifts_match_a_per_image_reference(flip, shift):
    x = _images()
    before = x.clone()
    a = ImageAugment(flip=flip, shift_px=shift)
    out = augment_images(x, a, (5, 1, 2, 0))
    ref, flips, d = _reference(x, a, (5, 1, 2, 0))
    assert torch.equal(out, ref)
    assert torch.equal(x, before)                        # the input is not changed
    if flip:
        assert 0 < flips.sum() < len(flips)              # some mirrored, some not
        for b in np.flatnonzero(flips & (d == 0).all(1)):  # unshifted and mirrored: rows reversed
            assert torch.equal(out[b].view(8, 8, 3), x[b].view(8, 8, 3).flip(1))
    if shift:
        assert (d != 0).any() and np.abs(d).max() <= shift
        b = int(np.flatnonzero(d[:, 0] > 0)[0])          # moved down: the top rows are the mean colour
        assert torch.all(out[b].view(8, 8, 3)[:d[b, 0]] == 0)


def test_draws_depend_on_the_key_only_and_off_is_the_identity():
    x = _images()
    a = ImageAugment(flip=True, shift_px=2)
    state = np.random.get_state()[1].copy(), torch.get_rng_state().clone()
    y = augment_images(x, a, (0, 3, 4, 0))
    assert np.array_equal(np.random.get_state()[1], state[0]) and torch.equal(torch.get_rng_state(), state[1])
    assert torch.equal(y, augment_images(x.clone(), a, (0, 3, 4, 0)))
    assert not torch.equal(y, augment_images(x, a, (0, 3, 5, 0)))
    assert torch.equal(augment_images(x, ImageAugment(), (0, 3, 4, 0)), x)
    assert not ImageAugment().active and ImageAugment(shift_px=1).active and ImageAugment(flip=True).active


@pytest.mark.parametrize("kw, match", [
    ({"shift_px": -1}, r"shift_px must be an integer number of pixels in \[0, 16\]"),
    ({"shift_px": 17}, r"shift_px must be"),
    ({"shift_px": 2.0}, r"shift_px must be"),
    ({"shift_px": True}, r"shift_px must be"),
    ({"flip": 1}, r"flip must be true or false"),
])
def test_bad_augmentation_fields(kw, match):
    with pytest.raises(es.ConfigError, match=match):
        ImageAugment(**kw)


def test_bad_batches():
    with pytest.raises(es.ConfigError, match="not a square image"):
        augment_images(torch.zeros(2, 10, 3), ImageAugment(flip=True), (0,))
    with pytest.raises(es.ConfigError, match=r"\(B, side \* side, C\)"):
        augment_images(torch.zeros(2, 16), ImageAugment(flip=True), (0,))
    with pytest.raises(es.ConfigError, match="empties a 4x4 image"):
        augment_images(torch.zeros(2, 16, 1), ImageAugment(shift_px=4), (0,))


@pytest.mark.parametrize("key, value, match", [
    ("aug_shift_px", 17, r"aug_shift_px must be a non-negative integer <= 16"),
    ("aug_shift_px", -1, r"aug_shift_px must be a non-negative integer"),
    ("aug_shift_px", 2.5, r"aug_shift_px"),
    ("aug_flip", "yes", r"aug_flip must be of type bool"),
])
def test_config_rules(key, value, match):
    with pytest.raises(es.ConfigError, match=match):
        from_dict({"data": {"task": "scifar", key: value}})


def test_config_fields_are_the_augmentation_classes_fields():
    import dataclasses
    from edgessm.data.tasks import augmentation_class
    from edgessm.train.config import DATA_RULES, DataConfig, aug_fields
    assert aug_fields("image") == ("aug_flip", "aug_shift_px")
    assert aug_fields("audio") == ("aug_snr_db", "aug_gain_db", "aug_shift_ms", "aug_stretch", "aug_time_masks",
                                   "aug_time_mask_frames", "aug_freq_masks", "aug_freq_mask_channels", "aug_warp")
    assert aug_fields("") == ()
    fields = {f.name for f in dataclasses.fields(DataConfig)}
    assert {f for f in fields if f.startswith("aug_")} == set(aug_fields("audio") + aug_fields("image"))
    assert all(f in DATA_RULES for f in aug_fields("audio") + aug_fields("image"))
    with pytest.raises(es.ConfigError, match="unknown kind of augmentation 'video'; known: audio, image"):
        augmentation_class("video")


def test_config_fields_go_with_their_kind_of_task():
    d = from_dict({"data": {"task": "scifar", "aug_flip": True, "aug_shift_px": 4}}).data
    assert d.augment() == ImageAugment(flip=True, shift_px=4)
    assert from_dict({"data": {"task": "scifar-gray", "aug_shift_px": 2}}).data.augment() == ImageAugment(shift_px=2)
    assert from_dict({"data": {"task": "scifar"}}).data.augment() is None
    assert from_dict({"data": {"task": "fsdd", "aug_gain_db": 3.0}}).data.augment() == Augment(gain_db=3.0)
    with pytest.raises(es.ConfigError, match="aug_flip apply to the tasks scifar, scifar-gray only, not 'smnist'"):
        from_dict({"data": {"task": "smnist", "aug_flip": True}})
    with pytest.raises(es.ConfigError, match="aug_shift_px apply to the tasks scifar, scifar-gray only, not 'fsdd'"):
        from_dict({"data": {"task": "fsdd", "aug_shift_px": 2}})
    with pytest.raises(es.ConfigError, match="aug_snr_db apply to the tasks fsdd, fsdd-01 only, not 'scifar'"):
        from_dict({"data": {"task": "scifar", "aug_snr_db": 20.0}})
    with pytest.raises(es.ConfigError, match=r"aug_snr_db, aug_flip apply to the tasks \(none\) only"):
        from_dict({"data": {"task": "smnist", "aug_flip": True, "aug_snr_db": 20.0}})


@needs_cifar
def test_load_task_batches_and_refusals():
    a = ImageAugment(flip=True, shift_px=4)
    ds = load_task("scifar", "train", limit=64, augment=a)
    rows = torch.tensor([3, 0, 17, 63, 5])
    assert torch.equal(ds.batch(rows, (0, 1, 2, 0)), augment_images(ds.x[rows], a, (0, 1, 2, 0)))
    assert not torch.equal(ds.batch(rows, (0, 1, 2, 0)), ds.x[rows])
    assert torch.equal(load_task("scifar", "train", limit=64).batch(rows, (0, 1, 2, 0)), ds.x[rows])
    with pytest.raises(es.ConfigError, match="image augmentation applies to the train split of the tasks "
                                             "scifar, scifar-gray only, not the 'val' split"):
        load_task("scifar", "val", limit=8, augment=a)
    with pytest.raises(es.ConfigError, match="audio augmentation applies to the train split of the tasks fsdd"):
        load_task("scifar", "train", limit=8, augment=Augment(gain_db=3.0))
    with pytest.raises(es.ConfigError, match="image augmentation applies .* not the 'train' split of 'smnist'"):
        load_task("smnist", "train", limit=8, augment=a)
    with pytest.raises(es.ConfigError, match="augment must be an edgessm.data.fsdd.Augment"):
        load_task("scifar", "train", limit=8, augment={"flip": True})


TINY = {"model": {"preset": "neuromorphic", "d_model": 4, "d_state": 4, "n_layers": 1},
        "data": {"task": "scifar-gray", "limit_train": 64, "limit_val": 16, "limit_test": 16,
                 "aug_flip": True, "aug_shift_px": 4},
        "train": {"epochs": 2, "batch_size": 32, "seed": 1, "warmup_epochs": 0.5}}


@needs_cifar
def test_augmented_run_resumes_exactly_and_differs_from_plain(tmp_path):
    full = train(from_dict(TINY), tmp_path / "full", progress=False)
    stopped = train(from_dict(TINY), tmp_path / "part", max_minutes=1e-6, progress=False)
    assert stopped["stopped"] and stopped["step_in_epoch"] == 1
    train(from_dict(TINY), tmp_path / "part", resume=True, progress=False)
    a, b = es.load(tmp_path / "full" / "last").state_dict(), es.load(tmp_path / "part" / "last").state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    plain = {**TINY, "data": {k: v for k, v in TINY["data"].items() if not k.startswith("aug_")}}
    train(from_dict(plain), tmp_path / "plain", progress=False)
    c = es.load(tmp_path / "plain" / "last").state_dict()
    assert not all(torch.equal(a[k], c[k]) for k in a)
