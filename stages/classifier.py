"""DVC stage classifier@<dataset>: models/classifier/<dataset>.pt and its test accuracy (.json)."""
from pipeline.data import prepare as data
from pipeline.core import layout
from pipeline.evaluate.classifier import save_classifier, train_classifier
from pipeline.core.config import Params, load_params, resolve_classifier
from pipeline.core.env import pick_device
from pipeline.core.layout import save_torch_atomic, write_json_atomic


def classifier(name: str, params: Params | None = None) -> dict:
    params = params or load_params()
    cfg = resolve_classifier(params, name)
    prepared = data.load_prepared(layout.prepared_dir(name))
    path = layout.classifier_path(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    if len(prepared.classes) < 2:  # an unlabelled image folder: nothing to classify, say so
        report = {"skipped": f"dataset '{name}' has {len(prepared.classes)} class: no classifier"}
        save_torch_atomic(report, path)
    else:
        model, report = train_classifier(prepared, cfg, pick_device("auto"))
        save_classifier(model, path, classes=prepared.classes, resolution=prepared.meta["resolution"], report=report)
        verdict = f"floor {report['floor']}: {'reliable' if report['reliable'] else 'BELOW FLOOR, its metrics are unreliable'}"
        print(f"classifier@{name}: test accuracy {report['accuracy']:.4f}, balanced {report['balanced_accuracy']:.4f} "
              f"({report['num_test_images']} images, {report['test_origin']}); {verdict}")
    write_json_atomic(path.with_suffix(".json"), {k: v for k, v in report.items() if k != "per_class_accuracy"})
    return report


if __name__ == "__main__":
    from stages._cli import run

    run(classifier, "python -m stages.classifier DATASET")
