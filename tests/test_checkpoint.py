"""Checkpoints rebuild their nets from the architecture they store, not from the run's config."""
import torch

from pipeline.train.checkpoint import Architecture, contents, load_checkpoint
from pipeline.core.config import ExperimentConfig


def _saved(tmp_path, **edit_state):
    cfg = ExperimentConfig(study="s", model="mlp", dataset="d", loss="hinge", z_dim=8, seed=4, epochs=1, batch_size=4,
                           lr_g=1e-4, lr_d=1e-4,
                           model_args={"g_hidden": [16], "d_hidden": [16]})
    arch = Architecture.of(cfg, channels=1, resolution=8, num_classes=0)
    G, D = arch.build(seed=cfg.seed)
    state = {**contents(cfg, arch, G=G.state_dict(), D=D.state_dict()), **edit_state}
    torch.save(state, tmp_path / "last.pt")
    return G.eval(), state


def test_a_checkpoint_loads_when_the_config_rules_have_changed_since(tmp_path):
    """A stored config today's validators would reject (a renamed key, a retired value) does not
    matter: the nets come back from the stored architecture, with the same weights."""
    G, state = _saved(tmp_path)
    config = {**state["config"], "renamed_since": 1, "loss": "a_retired_loss"}
    torch.save({**state, "config": config}, tmp_path / "last.pt")
    loaded = load_checkpoint(tmp_path / "last.pt")
    z = torch.randn(5, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(loaded.generator()(z), G(z))
    assert loaded.sampler().sample(3, seed=0).shape == (3, 1, 8, 8)


def test_a_checkpoint_written_before_the_architecture_was_stored_still_loads(tmp_path):
    G, state = _saved(tmp_path)
    arch = state.pop("architecture")
    old = {**state, "channels": arch["channels"], "resolution": arch["resolution"], "num_classes": arch["num_classes"]}
    del old["latent"]
    torch.save(old, tmp_path / "old.pt")
    loaded = load_checkpoint(tmp_path / "old.pt")
    z = torch.randn(5, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(loaded.generator()(z), G(z))
    assert loaded.architecture == Architecture(**arch)
