"""Before any work: may this process write its runs to the tracking server it is pointed at?

A server that does not answer does not stop a training (pipeline.tracking.run keeps what it could
not deliver and sends it later). A server that answers and refuses (no credentials, a wrong
password, a user that may only read) would refuse everything the run has to log, so the stage stops
first, with one line naming the server and what to set. Credentials are MLflow's own: the
MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD environment variables or ~/.mlflow/credentials,
never params.yaml.
"""
from __future__ import annotations

import os
import sys
from typing import Iterable

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from pipeline.core.errors import GanlabError
from pipeline.tracking.run import _unreachable, is_server, study_experiment

WRITE_CHECK_TAG = "ganlab.write_checked_by"  # the probe write: a tag on the study's experiment
SET_CREDENTIALS = ("set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD in the environment, or put "
                   "them in ~/.mlflow/credentials (never in params.yaml)")


class TrackingAccessError(GanlabError):
    """The tracking server refuses this process's credentials or its writes."""


def user_name() -> str | None:
    """The user MLflow's client will send (environment first, then ~/.mlflow/credentials)."""
    from mlflow.utils.credentials import read_mlflow_creds
    return read_mlflow_creds().username or None


def check_write_access(studies: Iterable[str]) -> None:
    """Raise TrackingAccessError when the tracking server (MLFLOW_TRACKING_URI, when it is one)
    refuses to let this process write to the experiment of each of `studies` (made when missing, as
    the first run would make it)."""
    server = os.environ.get("MLFLOW_TRACKING_URI", "")
    if not is_server(server):
        return
    client, user = MlflowClient(server), user_name()
    for study in sorted(set(studies)):
        try:
            experiment_id = study_experiment(client, study)
            client.set_experiment_tag(experiment_id, WRITE_CHECK_TAG, user or "anonymous")
        except Exception as exc:  # noqa: BLE001 - MLflow's REST errors, requests' errors
            if _unreachable(exc):
                print(f"ganlab: MLflow server {server} not reachable ({type(exc).__name__}); the stages go on and "
                      "send what they log when it answers again", file=sys.stderr, flush=True)
                return
            raise TrackingAccessError(refusal(server, user, study, exc)) from None


def refusal(server: str, user: str | None, study: str, exc: Exception) -> str:
    """One line: who was refused what, and what to set."""
    status = exc.get_http_status_code() if isinstance(exc, MlflowException) else None
    text = str(exc)
    if status == 401 or "401" in text.split("!=")[0]:
        if user is None:
            return f"MLflow server {server} asks for a user and password and none is set: {SET_CREDENTIALS}"
        return (f"MLflow server {server} refused user '{user}' (wrong password, or no such user): check "
                f"MLFLOW_TRACKING_PASSWORD / ~/.mlflow/credentials, or ask the server's admin")
    if status == 403 or "PERMISSION_DENIED" in text or "403" in text.split("!=")[0]:
        return (f"MLflow server {server} does not let user '{user or 'anonymous'}' write to the experiment "
                f"'{study}': use a user that may (a trainer: `python tools/tracking_users.py add USER --role "
                f"trainer`, run by the server's admin)")
    return f"MLflow server {server} refused to let this process write to experiment '{study}': {text[:300]}"
