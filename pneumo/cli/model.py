"""``pneumo model ...``: the registry as an operator sees it: versions, promotions, rollbacks, history."""

from __future__ import annotations

import json
from typing import Annotated

import mlflow
import typer
from mlflow.exceptions import MlflowException

from pneumo.cli.common import fail
from pneumo.config import apply_client_env, load_params
from pneumo.contract import CHAMPION, GATE_TAG, VersionSpec
from pneumo.models import alias_version

app = typer.Typer(help="Inspect the registry, promote by hand, roll back, read the audit trail.",
                  no_args_is_help=True)  # fmt: skip


def _model_name() -> str:
    apply_client_env()
    return load_params()["registry"]["model_name"]


@app.command("show")
def model_show() -> None:
    """List the registered versions with their aliases, gate verdicts and test AUC."""
    name = _model_name()
    client = mlflow.MlflowClient()
    by_version: dict[str, list[str]] = {}
    for alias, number in client.get_registered_model(name).aliases.items():
        by_version.setdefault(str(number), []).append(alias)
    for version in sorted(client.search_model_versions(f"name='{name}'"), key=lambda v: int(v.version)):
        aliases = ",".join(by_version.get(str(version.version), [])) or "-"
        spec = VersionSpec.of(version)
        auc, threshold = spec.metrics.get("test_auc"), spec.threshold
        typer.echo(
            f"v{version.version:<4} {aliases:18s} gate={version.tags.get(GATE_TAG, '?'):8s} "
            f"auc={'?' if auc is None else f'{auc:.4f}':7s} "
            f"threshold={'?' if threshold is None else f'{threshold:.4f}'} "
            f"profile={spec.recipe.profile if spec.recipe else '?'} "
            f"source={spec.recipe.source if spec.recipe else '?'}"
            + "".join(f" site:{site}={t.threshold:.4f}" for site, t in sorted(spec.sites.items()))
        )


FORCE_HELP = "Move even without the registry lock (Prefect down): an emergency, recorded in the audit trail."


@app.command("promote")
def model_promote(
    version: Annotated[str, typer.Argument(help="The version to put in production.")],
    reason: Annotated[str, typer.Option(help="Why, for the audit trail (required).")],
    force: Annotated[bool, typer.Option(help=FORCE_HELP)] = False,
) -> None:
    """Make VERSION the champion by hand (the gate is not asked); the old champion becomes previous."""
    name = _model_name()
    # Prefect (the registry lock): imported once the clients point at the stack (see pneumo.cli).
    from pneumo.orchestration import RegistryLockUnavailable
    from pneumo.tasks.registry import ChampionMoved, promote, repair, repair_registry

    if not reason.strip():
        fail("--reason must say why (it goes into the audit trail)")
    try:
        if force:
            repair(name)
        else:
            repair_registry.fn(name)
    except RegistryLockUnavailable as error:
        fail(str(error))
    try:
        candidate = mlflow.MlflowClient().get_model_version(name, version)
    except MlflowException as error:
        fail(f"{name} has no version {version!r}: {error.message}")
    try:
        VersionSpec.of(candidate).required(f"{name} v{version}")
    except (LookupError, ValueError) as error:  # missing or malformed tags
        fail(str(error))
    current = alias_version(name, CHAMPION)
    if current is not None and str(current.version) == version:
        fail(f"{name} v{version} is the champion already")
    try:
        result = promote.fn(name, version, f"by hand: {reason}", str(current.version) if current else None,
                            by="operator", force=force)  # fmt: skip
    except ChampionMoved as error:
        fail(f"{error}; run the command again")
    except RegistryLockUnavailable as error:
        fail(str(error))
    typer.echo(json.dumps(result))


@app.command("rollback")
def model_rollback(
    reason: Annotated[str, typer.Option(help="Why, for the audit trail.")] = "manual rollback",
    force: Annotated[bool, typer.Option(help=FORCE_HELP)] = False,
) -> None:
    """Make the `previous` version the `champion` again."""
    name = _model_name()
    from pneumo.orchestration import RegistryLockUnavailable  # Prefect: see model_promote
    from pneumo.tasks.registry import ChampionMoved, RegistryError, rollback

    try:
        result = rollback(name, reason, force=force)
    except (RegistryError, ChampionMoved, RegistryLockUnavailable) as error:
        fail(str(error))
    typer.echo(json.dumps(result))


@app.command("history")
def model_history(
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """Every registry event, oldest first: registered, gate verdicts, promotions, rollbacks."""
    name = _model_name()
    from pneumo.tasks.registry import history  # Prefect: see model_promote

    try:
        events = history(name)
    except MlflowException as error:
        fail(f"cannot read the audit trail of {name}: {error.message}")
    for event in events:
        if as_json:
            typer.echo(json.dumps(event))
            continue
        extra = {k: v for k, v in event.items() if k in ("verdict", "replaced", "by") and v}
        shown = " ".join(f"{k}={v}" for k, v in extra.items())
        typer.echo(f"{event['at']}  v{event['version']:<4} {event['event']:12s} {shown}  {event['reason']}")
    if not events:
        typer.echo(f"{name} has no recorded events")
