"""Samples and trained weights pinned bit for bit against digests taken before the redesign of issue 23.

Each case trains a few steps and samples a little with one engine (landing OLLA/ULLA/OLLA-P, the NAMM mirror
maps and mirror-space VP-SDE with mirror DPS, the dual DDPM), on the CPU with one thread. A moved function
whose maths did not change must give the same bytes. Floating-point kernels differ between CPU instruction
sets, so the exact digest is required on the capability it was taken on (``torch.backends.cpu``) and elsewhere
a few summary statistics must agree to 1e-5.

``CDCORE_PIN_PRINT=1 pytest tests/test_pinned_outputs.py -s`` prints fresh digests (only after a change that
is meant to alter the numbers, said so in its commit).
"""

from __future__ import annotations

import hashlib
import os

import numpy as np
import pytest
import torch

CAPABILITY = "AVX512"
PINNED: dict[str, tuple[str, list[float]]] = {  # taken at 1dd6972 on AVX512 (landing: at the EMA change)
    'dual': ('c1b6f78443dda2e4038b1a927e2875b8f15128277752961249592ee32c1cccf8', [-0.0505625869, 0.547723951, -0.0715111617, 0.582361238, -0.00218223016, 0.146273493, -0.00220862348, 0.167423765, -0.000956093687, 0.103335881, -0.00472245711, 0.105944961, 0.998413671, 0.0088156239, -0.00110154411, 0.00991767634, -0.000304657714, 0.100008678, -0.0129615794, 0.105062013, -0.0037092415, 0.100386255, -0.000725694161, 0.0878802716, 1.0002446, 0.00973646785, -0.000719583531, 0.00905193358, -0.000688057744, 0.101434832, 0.00819232292, 0.101007867, 0.000810740847, 0.102881083, -0.00182211665, 0.0922416743, 1.00096619, 0.0129880662, 0.000856290085, 0.0112709547, -0.0315994525, 0.108045486, 0.143495187, 0.0, 0.843142006, 0.661472722, -0.172619745, 5.81536708]),
    'landing': ('ea5601b03a3cbc8e76e5f675f9b9f4cf26e1f6ee0710f016492ca7620c4f9fdf', [-0.00421062058, 0.167298163, 0.0368071292, 0.168213405, -0.000948275333, 0.105383301, -0.0151479693, 0.092388268, 0.00084785647, 0.10573641, -0.0606995883, 0.0896906684, -0.0199413118, 0.577005808, 0.0, 0.0, 0.0, 0.0, -0.0183909567, 0.577058629, 0.1, 0.3, 34.84, 8.6425922, -0.00160699909, 0.00430672788, -0.00361090757, 0.151230363, 0.0260749472, 0.151258483, -0.00101869656, 0.104635763, -0.0108712896, 0.102401131, 0.00124832722, 0.096539419, -0.0264626058, 0.0843762682, 0.0869461007, 0.570765912, 0.0, 0.0, 0.0, 0.0, 0.0914500393, 0.570064014, 0.0, 0.0, 18.84, 2.04313485]),  # re-pinned: one EMA (its first update averages, lerp)
    'namm': ('c84233e409b407ff0eef49b523107e4f5a70d5699e1433e2190496fc823721b5', [-0.0121476207, 0.188277819, -0.00232626434, 0.194983718, -0.0341505033, 0.184638172, -0.000141992001, 0.214484298, -0.0191367484, 0.182472416, -0.0238059359, 0.160747361, 0.000497085934, 0.000654833009, 0.000592940596, 0.00077047762, -0.000376076682, 0.0198602287, -8.73854832e-05, 0.000203280711, 0.000146465346, 0.020025643, -6.72681388e-06, 8.72453966e-05, -3.45332845e-05, 0.0198614555, -5.89281392e-07, 5.91851916e-05, -0.00026414763, 0.020148847, 5.37680791e-06, 4.27243066e-05, 0.000204498408, 0.0200030668, 1.02655011e-06, 2.27374927e-05, -4.07047653e-05, 0.0201660262, 2.14354283e-05, 4.59076969e-05, -0.000173678682, 0.0202041459, -8.26240546e-05, 0.000164959121, -0.00128878024, 0.019575407, -0.00105351442, 0.0, 1.41295312, 0.209507749, 1.76980056, 48.9570636, 20.1575954, 28.6922104, 49.2694937, 85.4174834]),
}


def _digest(tensors: list[torch.Tensor]) -> tuple[str, list[float]]:
    h = hashlib.sha256()
    stats: list[float] = []
    for t in tensors:
        a = t.detach().cpu().contiguous().numpy()
        h.update(str(a.dtype).encode() + str(a.shape).encode() + a.tobytes())
        f = a.astype(np.float64).ravel()
        stats += [float(f'{f.mean():.9g}'), float(f'{f.std():.9g}')]
    return h.hexdigest(), stats


def _landing() -> list[torch.Tensor]:
    from cdcore.config import DynamicsCfg, ModelCfg, ScheduleCfg, TrainCfg
    from cdcore.constraints import Sphere
    from cdcore.data.synthetic import vmf_mixture
    from cdcore.methods.landing import sample_landing, schedule_from, train_landing

    x, _ = vmf_mixture(300, 2, 20.0, seed=0)
    x = torch.tensor(x, dtype=torch.float32)
    s2 = Sphere(3)
    sched = schedule_from(ScheduleCfg(N=20))
    out = []
    for kind in ("overdamped", "underdamped"):
        dyn = DynamicsCfg(kind=kind)
        res = train_landing(s2, x[:240], x[240:], sched, dyn, ModelCfg(hidden=32, depth=2, time_features=4),
                            TrainCfg(steps=12, batch_size=64, refresh_every=6, val_every=6, val_paths=16,
                                     checkpoint_every=100), seed=0)
        out += [p for p in res.model.state_dict().values()]
        for handling in ("landing", "projection"):
            r = sample_landing(res.model, s2, sched, dyn, 50, handling=handling, seed=3)
            out += [r.x, r.dropped, r.newton_iters]
    return out


def _namm() -> list[torch.Tensor]:
    from cdcore.config.namm import MdmCfg
    from cdcore.methods.namm.train import fit_mdm, mirror_data
    from cdcore.methods.namm.sample import mirror_dps, sample_mdm
    from cdcore.methods.namm.fit import fit_namm
    from cdcore.config.namm import task_cfg
    from cdcore.data.images import make_problem

    p = make_problem("total_brightness", n=16, image=16)
    cfg = task_cfg("total_brightness", "ci", steps=6, batch_size=4, log_every=3)
    g, f, hist = fit_namm(p.x, p.constraint, cfg, seed=0)
    y = mirror_data(g, p.x)
    net, _ = fit_mdm(y, MdmCfg(steps=6, batch_size=8, nf=8, log_every=3), seed=0)
    ys, xs = sample_mdm(net, (1, 16, 16), n=3, steps=8, f=f, seed=1)
    obs = torch.from_numpy(p.x[:1]).permute(0, 3, 1, 2)[..., :4]
    post = mirror_dps(net, f, lambda z: z[..., :4], obs, (1, 16, 16), n=2, steps=6, seed=2)
    return [*g.state_dict().values(), *f.state_dict().values(), torch.tensor(hist["loss"]), ys, xs, post]


def _dual() -> list[torch.Tensor]:
    from cdcore.methods.dual import (DDPMCfg, DenoiserCfg, DualAscentCfg, DualCfg, DualData, DualTrainCfg,
                                     SamplerCfg, sample_ddpm, train_dual)

    rng = np.random.default_rng(0)
    lab = rng.choice(3, size=300, p=(0.8, 0.1, 0.1))
    x = (np.array([-1.5, 0.0, 1.5])[lab] + 0.1 * rng.normal(size=300))[:, None].astype(np.float32)
    cfg = DualCfg(schedule=DDPMCfg(T=30, beta_start=1e-3, beta_end=0.3, t_min=1),
                  model=DenoiserCfg(hidden=32, depth=2, time_features=8),
                  train=DualTrainCfg(steps=12, primal_batch=64, lr=3e-3, warmup=2, ema=0.9, log_every=4),
                  dual=DualAscentCfg(), sampler=SamplerCfg(clip=None))
    out = train_dual(DualData.from_labelled(x, lab, [1, 2]), cfg, seed=0)
    s = sample_ddpm(out.model, 40, seed=7, cfg=cfg.sampler)
    return [*out.model.state_dict().values(), torch.as_tensor(np.asarray(out.lambdas)), s]


CASES = {"landing": _landing, "namm": _namm, "dual": _dual}


@pytest.mark.parametrize("case", sorted(CASES))
def test_outputs_match_the_digests_taken_before_the_redesign(case):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            digest, stats = _digest(CASES[case]())
    finally:
        torch.set_num_threads(threads)
    if os.environ.get("CDCORE_PIN_PRINT"):
        print(f"\n{case!r}: ({digest!r}, {stats!r}),  # {torch.backends.cpu.get_cpu_capability()}")
        return
    want_digest, want_stats = PINNED[case]
    if torch.backends.cpu.get_cpu_capability() == CAPABILITY:
        assert digest == want_digest
    else:
        np.testing.assert_allclose(stats, want_stats, rtol=1e-5, atol=1e-7)
