"""The side-effect monitor: it keeps the probe facts the model knows, and it alarms when a write breaks them."""

import pytest
import torch

from ace_interp.editing.monitor import ProbeSet, SideEffectMonitor, default_probes
from ace_interp.editing.verify import EditWarning
from ace_interp.model import load_model
from ace_interp.model.architecture import ffn_weight
from ace_interp.model.likelihood import perplexity
from ace_interp.model.weights import apply_weight_updates


@pytest.fixture(scope="module")
def toy():
    return load_model("toy-gptj")


def test_the_monitor_alarms_on_a_destructive_write_and_is_quiet_after_its_undo(toy):
    probes = default_probes(toy, n_texts=4, n_facts=40)
    monitor = SideEffectMonitor(toy, probes, max_probes=30)
    assert 0 < len(monitor.probes.prompts) <= 30
    assert monitor.baseline_perplexity == pytest.approx(perplexity(toy, list(probes.texts)))
    assert monitor.check().alarms == ()
    w_out = ffn_weight(toy, 1, "W_out")
    broken = apply_weight_updates(toy, {(1, "W_out"): torch.randn_like(w_out) * 10 * w_out.std()}, label="noise")
    try:
        with pytest.warns(EditWarning, match="side effects"):
            reading = monitor.check()
        assert reading.accuracy < monitor.min_accuracy and len(reading.alarms) >= 1
    finally:
        broken.undo()
    assert monitor.check().alarms == () and monitor.readings[-1].accuracy == 1.0


def test_probes_about_an_edited_subject_are_not_counted(toy):
    monitor = SideEffectMonitor(toy, ProbeSet(("the capital of japan is", "the capital of italy is"), ("tokyo", "rome")))
    if len(monitor.probes.prompts) < 2:
        pytest.skip("toy-gptj does not know both probe facts")
    monitor.edited_subjects = {"Japan"}
    assert monitor.untouched() == [1]
    with pytest.raises(ValueError, match="every must be >= 1"):
        SideEffectMonitor(toy, monitor.probes, every=0)
