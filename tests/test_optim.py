"""gankit's Adam: torch's fused Adam, stepping channels-last weights through contiguous views."""

from __future__ import annotations

import torch

from gankit.engine.optim import Adam, adam


def test_channels_last_weights_update_exactly_as_torch_adam_and_keep_their_layout():
    torch.manual_seed(0)
    w0 = torch.randn(8, 6, 3, 3).contiguous(memory_format=torch.channels_last)
    grads = [torch.randn_like(w0) for _ in range(3)]
    out = []
    for cls in (torch.optim.Adam, Adam):
        w, b = torch.nn.Parameter(w0.clone()), torch.nn.Parameter(torch.zeros(6))
        opt = cls([w, b], 1e-2, (0.5, 0.999), fused=True)
        for g in grads:
            w.grad, b.grad = g.clone(), torch.ones(6)
            opt.step()
        assert w.shape == w0.shape and w.is_contiguous(memory_format=torch.channels_last)
        assert opt.state[w]["exp_avg"].is_contiguous(memory_format=torch.channels_last)
        out.append((w.detach(), opt.state[w]["exp_avg"], opt.state_dict()))
    assert torch.equal(out[0][0], out[1][0]) and torch.equal(out[0][1], out[1][1])
    assert out[0][2]["state"][0]["step"] == out[1][2]["state"][0]["step"] == 3


def test_the_recipes_get_it():
    assert isinstance(adam([torch.nn.Parameter(torch.zeros(2))], 1e-3, (0.5, 0.999)), Adam)
