"""params.yaml validation: every malformed case is one ConfigError naming the key path, raised
before any work, and the stage entry points turn it into a clean exit without writing anything."""
import copy
import os
import subprocess
import sys

import pytest
import yaml

from pipeline.core.config import load_params, resolve_experiment
from pipeline.core.errors import ConfigError
from tests.conftest import ICONS_APPS128, REPO_ROOT

VALID = {
    "profile": "quick",
    "profiles": {"quick": {"epochs_scale": 0.1, "max_epochs": 2, "n_fake": 100}, "paper": {}},
    "datasets": {"fmnist": {"source": "fashion_mnist", "resolution": 32}},
    "defaults": {"seed": 0, "batch_size": 16, "lr_g": 2e-4, "lr_d": 2e-4, "z_dim": 8},
    "metrics": {"extractors": ["effnet"]},
    "experiments": {
        "e1": {"study": "s", "model": "dcgan", "dataset": "fmnist", "loss": "hinge", "epochs": 30},
        "e2": {"study": "s", "model": "mlp", "dataset": "fmnist", "loss": "minimax", "epochs": 5},
    },
}


def write(tmp_path, params) -> str:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return str(path)


def broken(mutate):
    params = copy.deepcopy(VALID)
    mutate(params)
    return params


def test_valid_params_resolve_with_defaults_and_profile(tmp_path):
    params = load_params(write(tmp_path, VALID))
    e1 = resolve_experiment(params, "e1")
    assert e1.batch_size == 16 and e1.z_dim == 8  # from defaults
    assert e1.epochs == 2  # 30 * 0.1 = 3, capped by max_epochs 2
    assert e1.n_fake == 100
    assert resolve_experiment(params, "e2").epochs == 1  # round(0.5) -> at least one epoch
    paper = load_params(write(tmp_path, {**VALID, "profile": "paper"}))
    assert resolve_experiment(paper, "e1").epochs == 30


def test_profile_sets_sample_counts_unless_the_entry_sets_its_own(tmp_path):
    paper = {"eval_samples": 5000, "n_fake": 50000, "n_real": 50000}  # above the experiment defaults
    params = {**VALID, "profile": "paper", "profiles": {"quick": VALID["profiles"]["quick"], "paper": paper}}
    params["experiments"] = {**VALID["experiments"], "e3": {**VALID["experiments"]["e1"], "n_fake": 250}}
    loaded = load_params(write(tmp_path, params))
    e1, e3 = resolve_experiment(loaded, "e1"), resolve_experiment(loaded, "e3")
    assert (e1.n_fake, e1.n_real, e1.eval_samples) == (50000, 50000, 5000)
    assert (e3.n_fake, e3.n_real) == (250, 50000)  # its own n_fake wins, the rest from the profile


def test_paper_study_file_computes_metrics_from_50000_samples():
    """README and studies/paper.yaml promise the 50,000-sample protocol for every paper experiment."""
    params = load_params(REPO_ROOT / "studies" / "paper.yaml")
    assert params.profile == "paper"
    counts = {(resolve_experiment(params, n).n_fake, resolve_experiment(params, n).n_real) for n in params.experiments}
    assert counts == {(50000, 50000)}


def test_profile_caps_eval_and_log_intervals_but_never_raises_them(tmp_path):
    quick = {"epochs_scale": 1.0, "max_eval_every": 2, "max_log_every": 5}
    params = load_params(write(tmp_path, {**VALID, "profiles": {"quick": quick, "paper": {}},
                                          "defaults": {**VALID["defaults"], "eval_every": 10, "log_every": 50}}))
    e1 = resolve_experiment(params, "e1")
    assert (e1.eval_every, e1.log_every) == (2, 5)
    paper = load_params(write(tmp_path, {**VALID, "profile": "paper", "profiles": {"quick": quick, "paper": {}},
                                         "defaults": {**VALID["defaults"], "log_every": 3}}))
    assert resolve_experiment(paper, "e1").log_every == 3


def _set(path: str, value):
    def mutate(params):
        *parents, leaf = path.split(".")
        node = params
        for key in parents:
            node = node[key]
        node[leaf] = value
    return mutate


def _delete(path: str):
    def mutate(params):
        *parents, leaf = path.split(".")
        node = params
        for key in parents:
            node = node[key]
        del node[leaf]
    return mutate


CASES = [
    # (id, mutation, fragments the message must contain)
    ("unknown top-level key", _set("experimnts", {}), ["experimnts", "did you mean 'experiments'"]),
    ("unknown experiment key", _set("experiments.e1.lr_gg", 0.1), ["experiments.e1", "lr_gg", "did you mean 'lr_g'"]),
    ("unknown model", _set("experiments.e1.model", "dcgna"), ["experiments.e1", "unknown model 'dcgna'", "did you mean 'dcgan'"]),
    ("unknown loss", _set("experiments.e2.loss", "hinje"), ["experiments.e2", "unknown loss 'hinje'", "hinge"]),
    ("unknown dataset", _set("experiments.e1.dataset", "fmnsit"), ["experiments.e1.dataset", "fmnsit", "did you mean 'fmnist'"]),
    ("unknown source", _set("datasets.fmnist.source", "fashion"), ["datasets.fmnist", "unknown source 'fashion'"]),
    ("wrong type", _set("experiments.e1.epochs", "ten"), ["experiments.e1.epochs", "integer"]),
    ("negative learning rate", _set("experiments.e1.lr_d", -0.1), ["experiments.e1.lr_d", "greater than 0"]),
    ("batch of one", _set("defaults.batch_size", 1), ["experiments.e1.batch_size", "experiments.e2.batch_size"]),
    ("resolution dcgan cannot make", _set("datasets.fmnist.resolution", 30), ["experiments.e1.model", "dcgan", "30"]),
    ("channels 2", _set("datasets.fmnist.channels", 2), ["datasets.fmnist.channels"]),
    ("profile not defined", _set("profile", "fast"), ["unknown profile 'fast'", "quick"]),
    ("unknown profile key", _set("profiles.quick.max_epoch", 3), ["profiles.quick", "did you mean 'max_epochs'"]),
    ("required key missing everywhere", _delete("defaults.lr_g"), ["experiments.e1.lr_g", "required"]),
    ("experiment not a mapping", _set("experiments.e2", "dcgan"), ["experiments.e2", "mapping"]),
    ("bad model_args", _set("experiments.e1.model_args", {"ngff": 32}), ["experiments.e1", "ngff", "did you mean 'ngf'"]),
    ("imagefolder without path", _set("datasets.icons", {"source": "imagefolder", "resolution": 64}), ["datasets.icons", "path"]),
    ("unknown extractor", _set("metrics.extractors", ["effnet", "inceptoin"]), ["metrics", "inceptoin", "inception"]),
    ("holdout out of range", _set("datasets.fmnist.holdout", 1.5), ["datasets.fmnist.holdout"]),
    ("experiment without dataset", _delete("experiments.e2.dataset"), ["experiments.e2", "dataset"]),
    ("unknown z distribution", _set("defaults.z_dist", "gaussian"), ["experiments.e1.z_dist", "normal", "uniform"]),
    ("resolution too small", _set("datasets.fmnist.resolution", 4), ["datasets.fmnist.resolution"]),
    ("more classes than the source has", _set("datasets.fmnist.classes", 11), ["datasets.fmnist", "classes: 11", "10 classes"]),
    ("class index out of range", _set("datasets.fmnist.classes", [0, 10]), ["datasets.fmnist", "0..9"]),
    ("label noise with hinge", _set("experiments.e1.label_noise", {"real": [0.7, 1.2], "fake": [0, 0.3]}),
     ["experiments.e1", "label_noise needs a BCE loss", "hinge"]),
    ("label noise range reversed", _set("experiments.e2.label_noise", {"real": [1.2, 0.7], "fake": [0, 0.3]}),
     ["experiments.e2.label_noise", "low 1.2 > high 0.7"]),
    ("pre-training without a class head", _set("experiments.e1.pretrain_classifier_epochs", 5),
     ["experiments.e1", "class head", "dcgan"]),
    ("conditional model on a folder without class sub-folders", lambda p: (
        p["datasets"].__setitem__("flat", {"source": "imagefolder", "path": str(ICONS_APPS128), "resolution": 28}),
        p["experiments"].__setitem__("e3", {"study": "s", "model": "acgan", "dataset": "flat", "loss": "minimax",
                                            "epochs": 1})),
     ["experiments.e3.model", "conditional", "no labels", "no class sub-folders"]),
    ("unknown cheap extractor", _set("experiments.e1.cheap_extractor", "classifer"),
     ["experiments.e1", "unknown extractor 'classifer'", "did you mean 'classifier'"]),
    ("wgan_gp with batch norm in D", _set("experiments.e1.loss", "wgan_gp"), ["experiments.e1", "batch norm", "d_norm"]),
    ("minibatch discrimination too large", _set("experiments.e1.model_args", {"minibatch_b": 10000, "minibatch_c": 1000}),
     ["experiments.e1", "minibatch discrimination", "GiB", "lower batch_size"]),
    ("labels for a non-K+1 D", _set("experiments.e1.labeled_per_class", 100), ["experiments.e1", "k_plus_1"]),
    ("K+1 D without labelled count", _set("experiments.e1.model_args", {"head": "k_plus_1"}),
     ["experiments.e1", "labeled_per_class"]),
    ("feature matching on mlp", _set("experiments.e2.feature_matching", {"layer": 0}), ["experiments.e2", "dcgan"]),
    ("unknown augmentation op", _set("experiments.e1.augment", {"ops": ["colour"]}), ["experiments.e1.augment.ops"]),
    ("projected at 32 px", _set("experiments.e1.model", "projected"), ["experiments.e1.model", "64, 128, 256"]),
    ("unknown split for a source", _set("datasets.fmnist.split", "unlabeled"), ["datasets.fmnist", "split 'unlabeled'"]),
]


@pytest.mark.parametrize("mutate,fragments", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_malformed_params_name_the_key(tmp_path, mutate, fragments):
    with pytest.raises(ConfigError) as info:
        load_params(write(tmp_path, broken(mutate)))
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in:\n{message}"


def test_yaml_syntax_error_names_the_file(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("profile: quick\nexperiments: {e1: [\n")
    with pytest.raises(ConfigError, match="params.yaml: not valid YAML"):
        load_params(path)


def test_all_problems_reported_at_once(tmp_path):
    params = broken(lambda p: (_set("experiments.e1.loss", "nope")(p), _set("experiments.e2.model", "nope")(p)))
    with pytest.raises(ConfigError) as info:
        load_params(write(tmp_path, params))
    assert "experiments.e1" in str(info.value) and "experiments.e2" in str(info.value)


def test_repo_params_files_are_valid():
    """The default params.yaml and the paper-scale study file both validate; the default covers
    the four studies with at least 2 seeds of every configuration."""
    default = load_params(REPO_ROOT / "params.yaml")
    configs = {}
    for name in default.experiments:
        cfg = resolve_experiment(default, name)
        configs.setdefault((cfg.study, cfg.variant_label(), cfg.dataset), set()).add(cfg.seed)
    assert {study for study, _, _ in configs} == {"generator_loss", "acgan_classes", "projected_gan", "improved_gan"}
    assert min(len(seeds) for seeds in configs.values()) >= 2, configs
    assert set(default.studies) == {study for study, _, _ in configs}
    paper = load_params(REPO_ROOT / "studies" / "paper.yaml")
    losses = {resolve_experiment(paper, name).loss for name in paper.experiments}
    assert losses == {"minimax", "non_saturating", "hinge", "least_squares", "wgan_gp"}
    assert paper.profile == "paper"


def test_missing_image_folder_is_not_a_params_error(tmp_path):
    """A folder that is not there fails the prepare stage that needs it (saying how to get one),
    never the validation of every stage: other experiments must still run."""
    params = broken(lambda p: (
        p["datasets"].__setitem__("gone", {"source": "imagefolder", "path": str(tmp_path / "gone"), "resolution": 28}),
        p["experiments"].__setitem__("e3", {"study": "s", "model": "acgan", "dataset": "gone", "loss": "minimax",
                                            "epochs": 1})))
    loaded = load_params(write(tmp_path, params))
    assert resolve_experiment(loaded, "e3").model == "acgan"


def test_stage_reports_bad_params_and_writes_nothing(tmp_path):
    write(tmp_path, broken(_set("experiments.e1.loss", "hinje")))
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    result = subprocess.run([sys.executable, "-m", "stages.train", "e1"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "experiments.e1" in result.stderr and "hinje" in result.stderr
    assert "Traceback" not in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]


def test_cpu_study_file_has_three_seeds_of_every_study_configuration_and_the_controls():
    """studies/cpu.yaml (issue: answers on this CPU): >= 3 seeds of every generator-loss and ACGAN
    configuration, the three losses for both architectures, cGAN / ACGAN as written / ACGAN with
    the non-saturating loss at 5 and 10 classes (and ACGAN / cGAN without BatchNorm in D), and the
    positive controls on MNIST."""
    cpu = load_params(REPO_ROOT / "studies" / "cpu.yaml")
    configs = {}
    for name in cpu.experiments:
        cfg = resolve_experiment(cpu, name)
        configs.setdefault((cfg.study, cfg.variant_label(), cfg.dataset), set()).add(cfg.seed)
    assert set(cpu.studies) == {study for study, _, _ in configs} == {"controls", "generator_loss", "acgan_classes"}
    longer = {(v, d): seeds for (s, v, d), seeds in configs.items() if v.endswith("4x updates")}
    assert longer == {(f"{v}, 4x updates", "kmnist5"): {0}  # one seed of each as-written variant, 4x longer
                      for v in ("acgan/minimax", "acgan/non_saturating", "cgan/minimax")}
    configs = {k: seeds for k, seeds in configs.items() if not k[1].endswith("4x updates")}
    assert all(len(seeds) >= 3 for (study, _, _), seeds in configs.items() if study != "controls")
    epochs = {resolve_experiment(cpu, n).variant_label(): resolve_experiment(cpu, n).epochs
              for n in cpu.experiments if resolve_experiment(cpu, n).dataset == "kmnist5"}
    assert all(epochs[f"{v}, 4x updates"] == 4 * epochs[v] for v in ("acgan/minimax", "cgan/minimax"))
    losses = {(v, d) for s, v, d in configs if s == "generator_loss"}
    assert losses == {(f"{m}/{loss}", d) for m, d in (("mlp", "mnist"), ("dcgan", "fmnist32"))
                      for loss in ("minimax", "non_saturating", "hinge")}
    conditional = {(v, d) for s, v, d in configs if s == "acgan_classes"}
    assert conditional == {(v, d) for v in ("acgan/minimax", "acgan/non_saturating", "cgan/minimax",
                                            "acgan/minimax, no BN in D", "cgan/minimax, no BN in D")
                           for d in ("kmnist5", "kmnist10")}
    for name in cpu.experiments:  # the no-BN variants differ from the write-up's nets by D's norm alone
        cfg = resolve_experiment(cpu, name)
        if "no BN in D" in cfg.variant_label():
            assert cfg.model_args == {"g_width": 64, "d_width": 32, "fc_width": 256, "d_norm": "none"}
    controls = {v for s, v, _ in configs if s == "controls"}
    assert controls == {"standard acgan", "standard cgan", "standard mlp"}


def test_an_experiment_names_its_model_itself(tmp_path):
    """dvc.yaml keys each train / evaluate stage on the entry's own model (its family's net file):
    a model taken from defaults would leave DVC without it."""
    def model_in_defaults(p):
        p["defaults"]["model"] = "dcgan"
        del p["experiments"]["e1"]["model"]

    with pytest.raises(ConfigError, match=r"experiments\.e1: must set model itself, not through defaults"):
        load_params(write(tmp_path, broken(model_in_defaults)))
