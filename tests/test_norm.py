"""Normalization state: what the cloud sends the edge (BN affine + running statistics)."""

from __future__ import annotations

import pytest
import torch

from simulator.models.cifar_resnet import cifar_resnet
from simulator.models.norm import (
    configure_norm_adaptation,
    get_norm_state,
    norm_affine_parameters,
    norm_layers,
    norm_state_nbytes,
    set_norm_state,
    use_batch_statistics,
)


def _net() -> torch.nn.Module:
    torch.manual_seed(0)
    net = cifar_resnet(8, width=4).eval()
    for _, bn in norm_layers(net):  # non-trivial statistics so that mode changes show
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
        bn.weight.data.uniform_(0.5, 1.5)
    return net


def test_norm_layers_lists_every_batchnorm_in_module_order():
    names = [name for name, _ in norm_layers(_net())]
    assert names[:3] == ["bn1", "layer1.0.bn1", "layer1.0.bn2"]
    assert len(names) == 1 + 2 * 3  # stem + two per block, three blocks in ResNet-8


def test_get_norm_state_has_four_fields_per_layer_and_is_a_detached_copy():
    net = _net()
    state = get_norm_state(net)
    assert len(state) == 4 * len(norm_layers(net))
    assert set(state) >= {"bn1.weight", "bn1.bias", "bn1.running_mean", "bn1.running_var"}
    assert not any(t.requires_grad for t in state.values())
    state["bn1.weight"].fill_(7.0)
    assert not torch.equal(net.bn1.weight.data, state["bn1.weight"])


def test_set_norm_state_round_trips_and_changes_outputs():
    net, x = _net(), torch.rand(4, 3, 32, 32)
    original = get_norm_state(net)
    with torch.no_grad():
        before = net(x)
    shifted = {k: v + 0.3 if k.endswith("bias") else v for k, v in original.items()}
    set_norm_state(net, shifted)
    with torch.no_grad():
        assert not torch.allclose(net(x), before)
    set_norm_state(net, original)
    with torch.no_grad():
        assert torch.equal(net(x), before)


def test_set_norm_state_rejects_missing_and_unexpected_keys():
    net = _net()
    state = get_norm_state(net)
    state.pop("bn1.bias")
    with pytest.raises(KeyError, match="missing.*bn1.bias"):
        set_norm_state(net, state)
    state = get_norm_state(net)
    state["nope.weight"] = torch.zeros(1)
    with pytest.raises(KeyError, match="unexpected.*nope.weight"):
        set_norm_state(net, state)


def test_norm_state_nbytes_counts_real_tensor_bytes():
    net = _net()
    state = get_norm_state(net)
    channels = sum(bn.num_features for _, bn in norm_layers(net))
    assert norm_state_nbytes(state) == 4 * channels * 4
    assert norm_state_nbytes(state, dtype=torch.float16) == 4 * channels * 2


def test_configure_norm_adaptation_leaves_only_bn_affine_trainable():
    net = _net()
    params = configure_norm_adaptation(net)
    assert len(params) == 2 * len(norm_layers(net))
    trainable = {id(p) for p in net.parameters() if p.requires_grad}
    assert trainable == {id(p) for p in params} == {id(p) for p in norm_affine_parameters(net)}


def test_use_batch_statistics_normalises_with_batch_stats_and_keeps_running_stats():
    net, x = _net(), torch.rand(16, 3, 32, 32) * 3.0 + 1.0
    before = get_norm_state(net)
    with torch.no_grad():
        eval_out = net(x)
        with use_batch_statistics(net):
            batch_out = net(x)
        train_net = _net().train()  # train mode also normalises with batch statistics
        expected = train_net(x)
    assert torch.allclose(batch_out, expected, atol=1e-5)
    assert not torch.allclose(batch_out, eval_out, atol=1e-3)
    after = get_norm_state(net)
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not net.training and all(not bn.training for _, bn in norm_layers(net))
    assert all(bn.track_running_stats for _, bn in norm_layers(net))
    with torch.no_grad():
        assert torch.equal(net(x), eval_out)
