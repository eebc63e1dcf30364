"""The ``pneumo`` command line: the top floor. Every command and group is registered here, in one
place; each lives in a module of its own.

Import order matters in this package: Prefect reads its settings when first imported, so the
modules that import Prefect (flows, tasks, :mod:`pneumo.orchestration`) are imported inside the
commands, after :func:`pneumo.config.apply_client_env` has pointed the clients at the stack. The
modules that import TensorFlow are imported there too, so that ``pneumo --help`` stays fast.
"""

from __future__ import annotations

import typer

from pneumo.cli import (
    calibrate,
    data,
    deploy,
    evaluate,
    model,
    monitor,
    predict,
    run,
    serve,
    stack,
    stages,
    train,
)

app = typer.Typer(help="Pneumonia detection on chest X-rays, with its MLOps loop.", no_args_is_help=True)
app.command("run")(run.run_demo)
app.command("train")(train.train_cmd)
app.command("evaluate")(evaluate.evaluate_cmd)
app.command("calibrate")(calibrate.calibrate_cmd)
app.command("predict")(predict.predict_cmd)
app.command("serve")(serve.serve)
app.command("monitor")(monitor.monitor_cmd)
app.command("deploy")(deploy.deploy_cmd)
app.add_typer(stack.app, name="stack")
app.add_typer(data.app, name="data")
app.add_typer(model.app, name="model")
app.add_typer(stages.app, name="stage")


def main() -> None:
    """Entry point of the ``pneumo`` console script."""
    app()
