"""DVC stage prepare@<dataset>: find/verify/download the files, write data/prepared/<dataset>/."""
from pipeline.data import prepare as data
from pipeline.core import layout
from pipeline.core.config import Params, load_params, resolve_dataset


def prepare(name: str, params: Params | None = None) -> dict:
    params = params or load_params()
    return data.prepare_dataset(resolve_dataset(params, name), layout.prepared_dir(name), name=name)


if __name__ == "__main__":
    from stages._cli import run

    run(prepare, "python -m stages.prepare DATASET")
