"""The transformer denoiser: shapes, masks, condition dropout, gradients (no data, no text encoder)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from easytune.errors import UserError
from models.denoiser import DenoiserConfig, MotionDenoiser, timestep_embedding

CFG = DenoiserConfig(d_model=32, layers=2, heads=2, ff_mult=2, dropout=0.0, frames_per_token=2)


def _model(cfg: DenoiserConfig = CFG) -> MotionDenoiser:
    torch.manual_seed(0)
    m = MotionDenoiser(cfg).eval()
    torch.nn.init.normal_(m.motion_out.weight, std=0.05)  # the zero-init head would hide every difference
    if cfg.input_skip:
        torch.nn.init.normal_(m.skip.weight, std=0.02)
    return m


def _inputs(B=2, T=11, L=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, T, 263, generator=g)
    t = torch.tensor([10, 900])[:B]
    tok = torch.randn(B, L, 384, generator=g)
    tmask = torch.ones(B, L, dtype=torch.bool)
    tmask[-1, 2:] = False
    return x, t, tok, tmask


def test_default_size_and_timestep_embedding():
    m = MotionDenoiser()
    assert sum(p.numel() for p in m.parameters()) == 3_661_582  # default (cpu preset) size, pinned
    skip = MotionDenoiser(DenoiserConfig(input_skip=True))
    assert sum(p.numel() for p in skip.parameters()) == 3_661_582 + (263 * 263 + 263) + (256 * 263 + 263)
    emb = timestep_embedding(torch.tensor([0, 5]), 8)
    assert emb.shape == (2, 8)
    torch.testing.assert_close(emb[0], torch.tensor([1.0, 1, 1, 1, 0, 0, 0, 0]))
    assert emb[1, 0].item() == pytest.approx(torch.cos(torch.tensor(5.0)).item(), abs=1e-6)


@pytest.mark.parametrize("k, skip", [(1, False), (2, True), (4, False)])
def test_shapes_and_padding_masks(k, skip):
    m = _model(DenoiserConfig(d_model=32, layers=2, heads=2, ff_mult=2, dropout=0.0, frames_per_token=k,
                              input_skip=skip))
    x, t, tok, tmask = _inputs(T=11)  # 11 frames: not a multiple of k
    mask = torch.ones(2, 11, dtype=torch.bool)
    mask[1, 7:] = False
    with torch.no_grad():
        out = m(x, t, tok, tmask, mask)
        assert out.shape == (2, 11, 263)
        assert torch.all(out[1, 7:] == 0)  # padded frames output zero
        # the content of padded frames and of masked text tokens changes nothing
        x2, tok2 = x.clone(), tok.clone()
        x2[1, 7:] = 100.0
        tok2[1, 2:] = -50.0
        torch.testing.assert_close(m(x2, t, tok2, tmask, mask), out)
        # a sample padded with extra frames gives the same output as the same sample alone, unpadded
        alone = m(x[1:, :7], t[1:], tok[1:, :2], tmask[1:, :2])
        torch.testing.assert_close(alone[0], out[1, :7], atol=1e-5, rtol=1e-4)


def test_text_and_timestep_condition_the_output():
    m = _model()
    x, t, tok, tmask = _inputs()
    with torch.no_grad():
        base = m(x, t, tok, tmask)
        assert not torch.allclose(base, m(x, t, tok.flip(0), tmask.flip(0)))
        assert not torch.allclose(base, m(x, t.flip(0), tok, tmask))
        drop = m(x, t, tok, tmask, drop_text=torch.tensor([True, False]))
        # dropping sample 0's text changes only sample 0, and makes it text-independent
        torch.testing.assert_close(drop[1], base[1])
        assert not torch.allclose(drop[0], base[0])
        other = m(x, t, torch.randn_like(tok), tmask, drop_text=torch.tensor([True, False]))
        torch.testing.assert_close(other[0], drop[0])


@pytest.mark.parametrize("skip", [False, True])
def test_gradients_reach_all_trainable_parameters(skip):
    m = _model(dataclasses.replace(CFG, input_skip=skip)).train()
    x, t, tok, tmask = _inputs()
    out = m(x, t, tok, tmask, drop_text=torch.tensor([True, False]))
    out.pow(2).mean().backward()
    missing = [n for n, p in m.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert missing == []


def test_bad_config():
    with pytest.raises(UserError, match="divisible"):
        MotionDenoiser(DenoiserConfig(d_model=30, heads=4))


def test_out_smooth_starts_as_the_identity_and_respects_masks():
    from easytune.checkpoints import load_weights

    plain = _model(CFG)
    smooth = MotionDenoiser(dataclasses.replace(CFG, out_smooth=5)).eval()
    kept = load_weights(smooth, plain.state_dict(), may_lack=MotionDenoiser.IDENTITY_INIT)
    assert kept == ["smooth.bias", "smooth.weight"]
    x, t, tok, tmask = _inputs(T=11)
    mask = torch.ones(2, 11, dtype=torch.bool)
    mask[1, 7:] = False
    with torch.no_grad():
        torch.testing.assert_close(smooth(x, t, tok, tmask, mask), plain(x, t, tok, tmask, mask))
        torch.nn.init.normal_(smooth.smooth.weight, std=0.05)
        out = smooth(x, t, tok, tmask, mask)
        assert not torch.allclose(out, plain(x, t, tok, tmask, mask))
        assert torch.all(out[1, 7:] == 0)
        x2 = x.clone()
        x2[1, 7:] = 100.0  # frames past the end must not leak into the last valid ones through the conv
        torch.testing.assert_close(smooth(x2, t, tok, tmask, mask), out)
        alone = smooth(x[1:, :7], t[1:], tok[1:, :2], tmask[1:, :2])
        torch.testing.assert_close(alone[0], out[1, :7], atol=1e-5, rtol=1e-4)
    with pytest.raises(UserError, match="out_smooth"):
        MotionDenoiser(dataclasses.replace(CFG, out_smooth=4))
    with pytest.raises(UserError, match="missing"):  # without may_lack the load stays strict
        load_weights(MotionDenoiser(dataclasses.replace(CFG, out_smooth=3)), plain.state_dict())
