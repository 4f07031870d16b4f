"""One net-preparation path for both loops (distgen/loops/nets.py): the speed switches take effect in the
single-objective loop too (they did nothing there), and a switch a loop cannot honour is refused by name."""
from __future__ import annotations

import pytest
import torch

from conftest import ROOT, TINY_CLS
from distgen import recipes
from distgen.errors import ConfigError




def _cfg(digits, tmp_path, *extra):
    return recipes.load(ROOT / "recipes" / "classifier_digits.yaml", [
        *TINY_CLS, f"data.root={digits}", f"run.dir={tmp_path / 'run'}", "train.steps=2", "log.every=2",
        "eval.every=0", *extra])


def test_channels_last_and_compile_take_effect_in_the_single_objective_loop(digits, tmp_path, monkeypatch,
                                                                            fresh_accelerate):
    from distgen.loops import nets as prepare_nets
    from distgen.loops import single

    seen = {}
    real_after = prepare_nets.after_prepare

    def after(nets, cfg, acc, eager=()):
        out = real_after(nets, cfg, acc, eager)
        seen.update(out)
        return out

    monkeypatch.setattr(prepare_nets, "after_prepare", after)
    single.train(_cfg(digits, tmp_path, "train.channels_last=true", "train.compile=eager"))
    assert seen, "the single-objective loop prepared its nets through distgen/loops/nets.py"
    for net in seen.values():
        assert hasattr(net, "_orig_mod"), "train.compile: the net the loop calls is compiled"
        convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
        assert convs and all(c.weight.is_contiguous(memory_format=torch.channels_last) for c in convs)


@pytest.mark.parametrize("switch, words", [("train.ema_kimg=1", "train.ema_kimg"),
                                           ("train.cuda_graph=true", "train.cuda_graph")])
def test_switches_the_single_objective_loop_cannot_honour_are_refused_by_name(digits, tmp_path, switch, words,
                                                                              fresh_accelerate):
    from distgen.loops import single

    with pytest.raises(ConfigError, match=words):
        single.train(_cfg(digits, tmp_path, switch))
