"""Batch norms folded into convolutions for frozen classifiers (gankit.attacks.fold)."""

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from gankit.attacks import FGSM, ImageClassifier
from gankit.attacks.base import attack_mode
from gankit.attacks.fold import fold_for_inference


class SamePadConv(nn.Conv2d):
    """A TensorFlow-'same' convolution as EfficientNet ports write it: explicit pad, then F.conv2d."""

    def __init__(self, cin, cout, k, stride=1, groups=1):
        super().__init__(cin, cout, k, stride, groups=groups, bias=False)
        total = k - stride
        self.pad = nn.ZeroPad2d((total // 2, total - total // 2, total // 2, total - total // 2))

    def forward(self, x):
        return F.conv2d(self.pad(x), self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem, self.bn0 = SamePadConv(3, 8, 3, stride=2), nn.BatchNorm2d(8)  # asymmetric pad
        self.dw, self.bn1 = SamePadConv(8, 8, 3, groups=8), nn.BatchNorm2d(8)  # symmetric pad
        self.pw, self.bn2 = nn.Conv2d(8, 16, 1), nn.BatchNorm2d(16)  # a module conv with a bias
        self.side, self.bn3 = nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16, affine=False)
        self.fc = nn.Linear(16, 5)

    def forward(self, x):
        x = F.relu6(self.bn0(self.stem(x)))
        x = F.relu6(self.bn1(self.dw(x)))
        x = self.bn2(self.pw(x))
        y = self.side(x)
        x = self.bn3(y) + y  # the convolution's raw output is used twice: not folded
        return self.fc(x.mean((2, 3)))


def trained_net():
    torch.manual_seed(0)
    net = Net()
    with torch.no_grad():  # running statistics and affine parameters away from their defaults
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                if m.affine:
                    m.weight.uniform_(0.5, 1.5)
                    m.bias.uniform_(-0.2, 0.2)
    return net.eval()


def test_folded_graph_computes_the_same_function_with_fewer_layers():
    net = trained_net()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    x = torch.rand(4, 3, 16, 16)
    folded = fold_for_inference(net, probe=x)
    assert folded is not None
    called = [n.target for n in folded.graph.nodes if n.op == "call_module"]
    assert "bn0" not in called and "bn1" not in called and "bn2" not in called
    assert "bn3" in called  # its convolution's output has another user
    assert "dw.pad" not in called and "stem.pad" in called  # symmetric pads folded, asymmetric kept
    xg = x.clone().requires_grad_()
    xf = x.clone().requires_grad_()
    torch.autograd.grad(net(xg).logsumexp(1).sum(), xg)[0]
    g_net = torch.autograd.grad(net(xg).logsumexp(1).sum(), xg)[0]
    g_fold = torch.autograd.grad(folded(xf).logsumexp(1).sum(), xf)[0]
    assert torch.allclose(folded(x), net(x), atol=1e-5)
    assert torch.allclose(g_fold, g_net, atol=1e-5)  # the input gradients attacks take
    assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items())  # the user's model as it was
    assert not net.training


def test_a_model_without_batch_norm_or_untraceable_is_not_folded():
    assert fold_for_inference(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())) is None

    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.bn = nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)

        def forward(self, x):
            if x.sum() > 0:  # data-dependent control flow: fx cannot trace it
                x = -x
            return self.bn(self.conv(x))

    assert fold_for_inference(Branchy().eval()) is None


def test_classifier_folds_only_when_frozen_in_eval_mode_and_refolds_after_a_weight_change():
    net = trained_net()
    clf = ImageClassifier(net, [0.5] * 3, [0.5] * 3, 16, 3)
    x = torch.rand(2, 3, 16, 16)
    assert clf._runner(x) is clf.model  # eval, but weights still trainable: the model itself
    with attack_mode(clf):
        runner = clf._runner(x)
        assert runner is not clf.model and clf._runner(x) is runner  # built once, then reused
        ref = clf(x)
    with torch.no_grad():
        net.bn1.running_mean.add_(0.3)  # an in-place change of a statistic
    with attack_mode(clf):
        assert clf._runner(x) is not runner
        assert not torch.allclose(clf(x), ref)
        with torch.no_grad():
            assert torch.allclose(clf(x), clf.model((x - 0.5) / 0.5), atol=1e-5)
    clf.train()
    assert clf._runner(x) is clf.model


@pytest.mark.parametrize("fold", [True, False])
def test_fgsm_on_a_batch_norm_classifier_is_the_same_folded_or_not(fold):
    clf = ImageClassifier(trained_net(), [0.5] * 3, [0.5] * 3, 16, 3, fold=fold)
    ref = ImageClassifier(trained_net(), [0.5] * 3, [0.5] * 3, 16, 3, fold=False)
    x = torch.rand(6, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    a, b = FGSM(clf, 4 / 255)(x), FGSM(ref, 4 / 255)(x)
    # equal but where a gradient component is within rounding of zero (its sign may flip)
    assert (a - b).abs().gt(1e-6).float().mean() < 0.01
    assert (a - x).abs().max() <= 4 / 255 + 1e-6
