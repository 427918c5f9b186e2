import torch
from torch import nn

from models import CustomResNet, count_parameters


def test_parameter_count_is_the_assignments():
    assert count_parameters(CustomResNet()) == 6_573_130


def test_layer_order_and_shapes():
    model = CustomResNet()
    assert [name for name, _ in model.named_children()] == \
        ["prep", "layer1", "layer2", "layer3", "pool", "fc", "softmax"]
    # Layer1/Layer3: Conv >> MaxPool >> BN >> ReLU, then a residual block; Layer2 has no residual.
    for layer, c_out in ((model.layer1.conv, 128), (model.layer2, 256), (model.layer3.conv, 512)):
        assert [type(m) for m in layer] == [nn.Conv2d, nn.MaxPool2d, nn.BatchNorm2d, nn.ReLU]
        assert layer[0].out_channels == c_out and layer[0].bias is None
    assert [type(m) for m in model.prep] == [nn.Conv2d, nn.BatchNorm2d, nn.ReLU]
    assert model.prep[0].out_channels == 64
    assert model.pool.kernel_size == 4
    assert (model.fc.in_features, model.fc.out_features) == (512, 10)
    body = [type(m) for block in model.layer1.res.body for m in block]
    assert body == [nn.Conv2d, nn.BatchNorm2d, nn.ReLU] * 2


def test_residual_adds_its_input():
    block = CustomResNet().layer1.res
    for p in block.body.parameters():
        nn.init.zeros_(p)  # body outputs ReLU(BN(0)) = 0, so the block is the identity
    x = torch.randn(2, 128, 16, 16)
    assert torch.equal(block.eval()(x), x)


def test_forward_gives_logits_and_predict_proba_gives_probabilities():
    model = CustomResNet(width=8).eval()
    x = torch.randn(4, 3, 32, 32)
    logits = model(x)
    assert logits.shape == (4, 10)
    probs = model.predict_proba(x)
    assert torch.allclose(probs.sum(1), torch.ones(4), atol=1e-6)
    assert torch.allclose(probs, torch.softmax(logits, 1))
    assert not torch.allclose(logits.sum(1), torch.ones(4))  # forward is not softmaxed
