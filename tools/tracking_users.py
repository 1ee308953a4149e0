"""Users of an authenticated MLflow tracking server (`mlflow server --app-name basic-auth`).

    export MLFLOW_TRACKING_USERNAME=admin MLFLOW_TRACKING_PASSWORD=...      # the admin's, from your secret store
    python tools/tracking_users.py --server https://mlflow.example:5000 password admin      # rotate it
    python tools/tracking_users.py --server URL add trainer-a --role trainer   # a machine that trains
    python tools/tracking_users.py --server URL add alice --role reader        # a person who reads

New passwords are read from the terminal (twice), or from standard input when it is not one
(`printf '%s\\n' "$PASSWORD" | python tools/tracking_users.py ...`): never from the command line,
where `ps` and the shell's history would show them. Roles are MLflow's own (RBAC, in the server's
default workspace): `trainer` may create experiments and write runs in every experiment (every
machine of a study logs into the same one), `reader` may read every experiment. What the server
does with credentials it cannot check, and how the stages say so, is in docs/operations.md.
"""
from __future__ import annotations

import argparse
import getpass
import sys

ROLES = {"trainer": "EDIT", "reader": "READ"}  # permission on every experiment
WORKSPACE = "default"


def new_password(user: str) -> str:
    if not sys.stdin.isatty():
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = getpass.getpass(f"new password for {user}: ")
        if getpass.getpass("again: ") != password:
            sys.exit("ganlab: the two passwords differ")
    if len(password) < 12:
        sys.exit("ganlab: use a password of at least 12 characters")
    return password


def role_id(client, name: str) -> int:
    """The id of role `name` in the default workspace, made (with its permission) when missing."""
    for role in client.list_roles(WORKSPACE):
        if role.name == name:
            return role.id
    role = client.create_role(WORKSPACE, name, description=f"ganlab {name}: {ROLES[name]} on every experiment")
    client.add_role_permission(role.id, "experiment", "*", ROLES[name])
    return role.id


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--server", required=True, help="the tracking server's URL")
    commands = parser.add_subparsers(dest="command", required=True)
    add = commands.add_parser("add", help="a new user with a role")
    add.add_argument("user")
    add.add_argument("--role", choices=sorted(ROLES), required=True)
    password = commands.add_parser("password", help="a new password for a user (the admin's own included)")
    password.add_argument("user")
    args = parser.parse_args()

    from mlflow.exceptions import MlflowException
    from mlflow.server import get_app_client

    client = get_app_client("basic-auth", tracking_uri=args.server)
    secret = new_password(args.user)
    try:
        if args.command == "add":
            client.create_user(args.user, secret)
            client.assign_role(args.user, role_id(client, args.role))
            print(f"ganlab: user {args.user} added to {args.server} as {args.role} "
                  f"({ROLES[args.role]} on every experiment)")
        else:
            client.update_user_password(args.user, secret)
            print(f"ganlab: password of {args.user} on {args.server} changed")
    except MlflowException as exc:
        sys.exit(f"ganlab: {args.server} refused it: {exc.message[:300]} (are MLFLOW_TRACKING_USERNAME / "
                 "MLFLOW_TRACKING_PASSWORD the admin's?)")


if __name__ == "__main__":
    main()
