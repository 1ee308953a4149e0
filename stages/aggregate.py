"""DVC stage aggregate: results/summary.csv, results/plots/*.png, results/report.md."""
from pipeline.core import layout
from pipeline.core.config import Params, load_params
from pipeline.report.pages import write_report
from pipeline.core.rundir import RUNS


def aggregate(params: Params | None = None):
    params = params or load_params()
    return write_report(params, RUNS, layout.RESULTS)


if __name__ == "__main__":
    from stages._cli import run

    run(aggregate, "python -m stages.aggregate")
