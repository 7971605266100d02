"""`spirlctl`: the user CLI for the control plane.

Examples:
  spirlctl trust-domain create example.org
  spirlctl trust-domain deployment create prod --trust-domain td-...
  spirlctl config set trust-domain-deployment --id tdd-... key-manager.yaml
  spirlctl config history trust-domain-deployment --id tdd-...
"""

from __future__ import annotations

import argparse
import difflib
import io
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from controlplane import __version__
from controlplane.cli import rollout
from controlplane.cli.args import seconds
from controlplane.cli.client import (
    ApiClient,
    ApiError,
    CliError,
    Credentials,
    load_credentials,
    save_credentials,
)
from controlplane.cli.output import FORMATS, ago, cell, dig, emit, one_line
from controlplane.domain import JOIN_TOKEN_ID
from controlplane.tls import CA_FILE_ENV, plain_http_warning

SCOPES = ("trust-domain", "trust-domain-deployment", "cluster")
# A command prints its result; an int it returns is the exit status (None means 0).
Command = Callable[[argparse.Namespace], int | None]
DEFAULT_WAIT_TIMEOUT = 300.0

TD_COLUMNS = [("ID", "id"), ("NAME", "name"), ("CREATED", "created_at")]
TDD_COLUMNS = [
    ("ID", "id"),
    ("NAME", "name"),
    ("TRUST DOMAIN", "trust_domain_name"),
    ("TRUST DOMAIN ID", "trust_domain_id"),
    ("CREATED", "created_at"),
]
CLUSTER_COLUMNS = [
    ("ID", "id"),
    ("NAME", "name"),
    ("DEPLOYMENT", "trust_domain_deployment_id"),
    ("CREATED", "created_at"),
]
SERVER_COLUMNS = [
    ("ID", "id"),
    ("NAME", "name"),
    ("CLUSTER", "cluster_id"),
    ("STATE", "state"),
    ("DESIRED", "desired_version"),
    ("APPLIED", "applied_version"),
    ("KEY MANAGER", "key_manager.type"),
    ("ERROR", "error_line"),
    ("LAST CONTACT", "last_contact"),
]
SERVER_FIELDS = [
    ("ID", "id"),
    ("NAME", "name"),
    ("DEPLOYMENT", "trust_domain_deployment_id"),
    ("CLUSTER", "cluster_id"),
    ("STATE", "state"),
    ("HEALTH (LAST REPORT)", "health"),
    ("LAST CONTACT", "last_contact"),
    ("LAST REPORT", "last_report_at"),
    ("REGISTERED", "registered_at"),
    ("DESIRED", "desired_version"),
    ("ATTEMPTED", "attempted_version"),
    ("APPLIED", "applied_version"),
    ("REFUSED", "refused_version"),
    ("KEY MANAGER", "key_manager.type"),
    ("ERROR", "error"),
]
KEY_COLUMNS = [
    ("KID", "kid"),
    ("KIND", "kind"),
    ("KEY MANAGER", "key_manager.type"),
    ("STATE", "state"),
    ("NOT AFTER", "not_after"),
    ("IN BUNDLE", "in_bundle"),
]
JOIN_TOKEN_COLUMNS = [
    ("ID", "id"),
    ("STATE", "state"),
    ("EXPIRES", "expires_at"),
    ("CREATED BY", "created_by"),
    ("CREATED", "created_at"),
    ("USED", "used_at"),
]
HISTORY_COLUMNS = [
    ("VERSION", "version"),
    ("ACTOR", "actor"),
    ("CREATED", "created_at"),
    ("ACTION", "action"),
    ("SECTIONS", "sections"),
]
AUDIT_COLUMNS = [
    ("ID", "id"),
    ("AT", "at"),
    ("ACTOR", "actor"),
    ("ACTION", "action"),
    ("SCOPE", "scope"),
    ("SCOPE ID", "scope_id"),
    ("OLD", "old_version"),
    ("NEW", "new_version"),
]
WRITE_COLUMNS = [
    ("VERSION", "version"),
    ("PREVIOUS", "previous_version"),
    ("CHANGED", "changed"),
    ("SECTIONS", "sections"),
]


def _client(args: argparse.Namespace) -> ApiClient:
    creds = load_credentials(args.endpoint, args.token, args.ca_file)
    _warn_if_plain_http(creds.endpoint)
    return ApiClient(creds)


def _warn_if_plain_http(endpoint: str) -> None:
    warning = plain_http_warning(endpoint, "the API token and your config")
    if warning:
        print(f"warning: {warning}", file=sys.stderr)


def _object_id(args: argparse.Namespace) -> str:
    value = getattr(args, "id", None) or getattr(args, "object_id", None)
    if not value:
        raise CliError("give the id, e.g. `--id tdd-1a2b3c`")
    return str(value)


def _read_documents(files: list[str]) -> str:
    texts = []
    for name in files:
        if name == "-":
            texts.append(sys.stdin.read())
            continue
        path = Path(name)
        try:
            texts.append(path.read_bytes().decode("utf-8"))
        except FileNotFoundError as exc:
            raise CliError(f"no such file: {name}") from exc
        except UnicodeDecodeError as exc:
            raise CliError(f"{name} is not UTF-8 text (byte {exc.start})") from exc
        except OSError as exc:
            raise CliError(f"cannot read {name}: {exc.strerror}") from exc
    # Each file may hold several documents; join files as further documents.
    return "\n---\n".join(t.rstrip("\n") for t in texts) + "\n"


# -- login ----------------------------------------------------------------------------------------


def cmd_login(args: argparse.Namespace) -> None:
    token = args.login_token
    if token == "-" or token is None:
        token = sys.stdin.readline().strip()
    if not token:
        raise CliError("no token given (use --token TOKEN, or pipe it: --token -)")
    creds = Credentials(
        endpoint=args.login_endpoint.rstrip("/"),
        token=token,
        ca_file=args.login_ca_file or os.environ.get(CA_FILE_ENV),
    )
    _warn_if_plain_http(creds.endpoint)
    client = ApiClient(creds)
    client.get("/v1/trust-domains")  # proves endpoint and token before saving them
    path = save_credentials(creds)
    print(f"logged in to {creds.endpoint}; credentials saved to {path} (mode 0600)")


# -- objects --------------------------------------------------------------------------------------


def cmd_td_create(args: argparse.Namespace) -> None:
    emit(
        _client(args).post("/v1/trust-domains", {"name": args.name}),
        args.output,
        columns=TD_COLUMNS,
    )


def cmd_td_list(args: argparse.Namespace) -> None:
    emit(_client(args).get("/v1/trust-domains")["items"], args.output, columns=TD_COLUMNS)


def cmd_td_info(args: argparse.Namespace) -> None:
    emit(
        _client(args).get(f"/v1/trust-domains/{_object_id(args)}"),
        args.output,
        columns=TD_COLUMNS + [("DEPLOYMENTS", "deployments")],
    )


def cmd_td_delete(args: argparse.Namespace) -> None:
    _client(args).delete(f"/v1/trust-domains/{_object_id(args)}")
    print(f"deleted trust domain {_object_id(args)}")


def cmd_tdd_create(args: argparse.Namespace) -> None:
    body = {"name": args.name, "trust_domain_id": args.trust_domain}
    emit(_client(args).post("/v1/trust-domain-deployments", body), args.output, columns=TDD_COLUMNS)


def cmd_tdd_list(args: argparse.Namespace) -> None:
    items = _client(args).get("/v1/trust-domain-deployments", trust_domain_id=args.trust_domain)[
        "items"
    ]
    emit(items, args.output, columns=TDD_COLUMNS)


def cmd_tdd_info(args: argparse.Namespace) -> None:
    emit(
        _client(args).get(f"/v1/trust-domain-deployments/{_object_id(args)}"),
        args.output,
        columns=TDD_COLUMNS + [("CLUSTERS", "clusters"), ("SERVERS", "servers")],
    )


def cmd_tdd_delete(args: argparse.Namespace) -> None:
    _delete_held(args, "trust domain deployment", "/v1/trust-domain-deployments")


def _delete_held(args: argparse.Namespace, what: str, collection: str) -> None:
    """Delete a deployment or cluster; when servers (or clusters) still hold it, say which and
    how to remove them."""
    object_id = _object_id(args)
    try:
        _client(args).delete(f"{collection}/{object_id}", force="true" if args.force else None)
    except ApiError as exc:
        if exc.code != "has_children":
            raise
        raise CliError(_holders_text(what, object_id, exc.body.get("holders", []))) from exc
    print(f"deleted {what} {object_id}")


def _holders_text(what: str, object_id: str, holders: list[dict[str, Any]]) -> str:
    command = "cluster delete" if what == "cluster" else "trust-domain deployment delete"
    lines = [f"{what} {object_id} is still held by:"]
    for h in holders:
        if h["kind"] == "server":
            lines.append(
                f"  server {h['id']} ({h['name']}), last contact {h['last_contact_at']}: "
                f"spirlctl trust-domain deployment server delete {h['id']}"
            )
        elif h["kind"] == "cluster":
            lines.append(
                f"  cluster {h['id']} ({h['name']}): spirlctl cluster delete {h['id']} [--force]"
            )
        else:
            lines.append(f"  {h['kind']} {h['id']} ({h.get('name', '')})")
    if any(h["kind"] == "server" for h in holders):
        lines.append(
            f"or: spirlctl {command} {object_id} --force (deregisters its servers first, "
            "audited); unreachable servers are also deregistered automatically after the "
            "control plane's retention period"
        )
    return "\n".join(lines)


def _server_rows(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Table view: the error cut to one line, the last contact as an age."""
    return [
        {
            **item,
            "error_line": one_line(item.get("error")),
            "last_contact": ago(item.get("last_contact_seconds_ago")),
        }
        for item in items
    ]


def cmd_tdd_servers(args: argparse.Namespace) -> None:
    items = _client(args).get(f"/v1/trust-domain-deployments/{_object_id(args)}/servers")["items"]
    if args.output != "table":
        emit(items, args.output)
        return
    emit(_server_rows(items), args.output, columns=SERVER_COLUMNS)


def cmd_server_info(args: argparse.Namespace) -> None:
    info = _client(args).get(f"/v1/servers/{_object_id(args)}")
    if args.output != "table":
        emit(info, args.output)
        return
    [row] = _server_rows([info])
    width = max(len(label) for label, _ in SERVER_FIELDS)
    for label, key in SERVER_FIELDS:
        print(f"{label + ':':<{width + 1}} {cell(dig(row, key))}")
    print()
    if info["keys"]:
        emit(info["keys"], "table", columns=KEY_COLUMNS)
    else:
        print("no keys reported")


def cmd_server_delete(args: argparse.Namespace) -> None:
    result = _client(args).delete(f"/v1/servers/{_object_id(args)}")
    if args.output != "table":
        emit(result, args.output)
        return
    print(
        f"deregistered server {result['id']} ({result['name']}): its credential is revoked; "
        f"{len(result['withdrawn_keys'])} key(s) left the trust bundle"
        + (
            f", {len(result['kept_keys'])} stay (other servers publish them)"
            if result["kept_keys"]
            else ""
        )
    )


def cmd_tdd_join_token(args: argparse.Namespace) -> None:
    result = _client(args).post(
        f"/v1/trust-domain-deployments/{_object_id(args)}/join-tokens", {"ttl_seconds": args.ttl}
    )
    if args.output == "table":
        print(result["token"])  # alone on stdout, for $(spirlctl ... join-token)
        print(
            f"join token {result['id']}, valid until {result['expires_at']} (revoke: spirlctl "
            f"trust-domain deployment revoke-join-token {_object_id(args)} --token-id "
            f"{result['id']})",
            file=sys.stderr,
        )
    else:
        emit(result, args.output)


def cmd_tdd_join_tokens(args: argparse.Namespace) -> None:
    items = _client(args).get(
        f"/v1/trust-domain-deployments/{_object_id(args)}/join-tokens", limit=args.limit
    )
    emit(items["items"], args.output, columns=JOIN_TOKEN_COLUMNS)


def cmd_tdd_revoke_join_token(args: argparse.Namespace) -> None:
    deployment = _object_id(args)
    if not JOIN_TOKEN_ID.fullmatch(args.token_id):
        raise CliError(
            f"--token-id {args.token_id!r} is not a join token id: it looks like jt- and 16 hex "
            "digits (see `spirlctl trust-domain deployment join-tokens`)"
        )
    _client(args).delete(f"/v1/trust-domain-deployments/{deployment}/join-tokens/{args.token_id}")
    if args.output == "table":
        print(f"revoked join token {args.token_id}: no server can register with it")
    else:
        emit({"id": args.token_id, "trust_domain_deployment_id": deployment}, args.output)


def cmd_cluster_create(args: argparse.Namespace) -> None:
    body = {"name": args.name, "trust_domain_deployment_id": args.trust_domain_deployment}
    emit(_client(args).post("/v1/clusters", body), args.output, columns=CLUSTER_COLUMNS)


def cmd_cluster_list(args: argparse.Namespace) -> None:
    items = _client(args).get(
        "/v1/clusters", trust_domain_deployment_id=args.trust_domain_deployment
    )["items"]
    emit(items, args.output, columns=CLUSTER_COLUMNS)


def cmd_cluster_info(args: argparse.Namespace) -> None:
    emit(
        _client(args).get(f"/v1/clusters/{_object_id(args)}"), args.output, columns=CLUSTER_COLUMNS
    )


def cmd_cluster_delete(args: argparse.Namespace) -> None:
    _delete_held(args, "cluster", "/v1/clusters")


# -- config ---------------------------------------------------------------------------------------


def _config_path(args: argparse.Namespace, suffix: str = "") -> str:
    return f"/v1/config/{args.scope}/{_object_id(args)}{suffix}"


def _write_config(args: argparse.Namespace, validate_only: bool) -> int:
    body = {
        "yaml": _read_documents(args.files),
        "prune": args.prune,
        "expected_version": args.expected_version,
        "validate_only": validate_only,
    }
    client = _client(args)
    result = client.put(_config_path(args), body)
    if validate_only:
        if args.output != "table":
            emit(result, args.output)
        else:
            print(
                f"valid: {', '.join(result['sections'])} "
                f"(nothing stored; current version {result['version']})"
            )
        return 0
    return _then_wait(args, client, result, lambda: _print_write(result))


def _print_write(result: dict[str, Any]) -> None:
    if result["changed"]:
        print(
            f"stored version {result['version']} (was {result['previous_version']}): "
            f"sections {', '.join(result['sections']) or '(none)'}"
        )
    else:
        print(f"no change: version {result['version']} already holds this config")


def _then_wait(
    args: argparse.Namespace,
    client: ApiClient,
    result: dict[str, Any],
    print_result: Callable[[], None],
) -> int:
    """Print a write's result; with --wait, follow the rollout of the version it left in place."""
    if args.output == "table":
        print_result()
    elif not args.wait:
        emit(result, args.output)
    if not args.wait:
        return 0
    status, code = _follow_rollout(args, client, result["version"])
    if args.output != "table":
        emit({**result, "rollout": status}, args.output)
    return code


def _follow_rollout(
    args: argparse.Namespace, client: ApiClient, version: int | None
) -> tuple[dict[str, Any], int]:
    scope_id = _object_id(args)
    table = args.output == "table"
    progress = rollout.Progress(sys.stdout) if table else None
    status = rollout.wait_for_rollout(client, args.scope, scope_id, version, args.timeout, progress)
    if table:
        return status, rollout.report(status, args.timeout, sys.stdout, sys.stderr)
    code = rollout.exit_code(status)
    if code:  # scripts still get the reasons on stderr
        rollout.report(status, args.timeout, io.StringIO(), sys.stderr)
    return status, code


def cmd_config_set(args: argparse.Namespace) -> int:
    return _write_config(args, validate_only=False)


def cmd_config_validate(args: argparse.Namespace) -> int:
    return _write_config(args, validate_only=True)


def _print_config_yaml(config: dict[str, Any]) -> None:
    print(
        f"# {config['scope']} {config['id']} version {config['version']}"
        + (f" by {config['actor']} at {config['updated_at']}" if config.get("actor") else "")
    )
    docs = [s["yaml"].rstrip("\n") for s in config["sections"].values()]
    print("\n---\n".join(docs) if docs else "# (no sections)")


def cmd_config_get(args: argparse.Namespace) -> None:
    client = _client(args)
    if args.version is not None:
        config = client.get(_config_path(args, f"/versions/{args.version}"))
    else:
        config = client.get(_config_path(args))
    if args.output == "table":
        _print_config_yaml(config)
    else:
        emit(config, args.output)


def cmd_config_effective(args: argparse.Namespace) -> None:
    result = _client(args).get(
        "/v1/effective-config",
        trust_domain_deployment_id=args.trust_domain_deployment,
        cluster_id=args.cluster,
    )
    if args.output != "table":
        emit(result, args.output)
        return
    print(f"# effective version {result['version']}")
    for name, section in result["sections"].items():
        print(
            f"# {name}: from {section['scope']} {section['scope_id']} version {section['scope_version']}"
        )
    print(
        "\n---\n".join(s["yaml"].rstrip("\n") for s in result["sections"].values())
        or "# (no sections)"
    )


def cmd_config_history(args: argparse.Namespace) -> None:
    result = _client(args).get(_config_path(args, "/history"), limit=args.limit, before=args.before)
    emit(
        result if args.output != "table" else result["items"], args.output, columns=HISTORY_COLUMNS
    )
    if args.output == "table" and result.get("next_before"):
        print(f"(more: --before {result['next_before']})")


def cmd_config_diff(args: argparse.Namespace) -> None:
    client = _client(args)
    to_version = args.to_version
    if to_version is None:
        to_version = client.get(_config_path(args))["version"]
    from_version = args.from_version if args.from_version is not None else max(to_version - 1, 0)
    result = client.get(_config_path(args, "/diff"), **{"from": from_version, "to": to_version})
    if args.output != "table":
        emit(result, args.output)
        return
    print(f"# diff of versions {from_version} -> {to_version}")
    for entry in result["sections"]:
        print(f"{entry['section']}: {entry['change']}")
        if entry["change"] == "unchanged":
            continue
        old = (entry["old_yaml"] or "").splitlines(keepends=True)
        new = (entry["new_yaml"] or "").splitlines(keepends=True)
        sys.stdout.writelines(
            difflib.unified_diff(
                old, new, f"v{from_version}/{entry['section']}", f"v{to_version}/{entry['section']}"
            )
        )


def cmd_config_rollback(args: argparse.Namespace) -> int:
    client = _client(args)
    result = client.post(
        _config_path(args, "/rollback"),
        {"version": args.to_version, "expected_version": args.expected_version},
    )

    def say() -> None:
        if result["changed"]:
            print(
                f"rolled back to version {args.to_version}: stored as version {result['version']}"
            )
        else:
            print(
                f"no change: version {result['version']} already equals version {args.to_version}"
            )

    return _then_wait(args, client, result, say)


def cmd_config_delete_section(args: argparse.Namespace) -> int:
    client = _client(args)
    result = client.delete(
        _config_path(args, f"/sections/{args.section}"), expected_version=args.expected_version
    )

    def say() -> None:
        print(f"removed section {args.section}: stored version {result['version']}")

    return _then_wait(args, client, result, say)


def cmd_rollout_status(args: argparse.Namespace) -> int:
    client = _client(args)
    if args.trust_domain_deployment:
        if args.scope or args.id or args.version is not None:
            raise CliError(
                "give either SCOPE --id ID [--version N] (one config version) or "
                "--trust-domain-deployment ID (a deployment's staged rollout), not both"
            )
        return _follow_deployment(args, client)
    if not args.scope or not args.id:
        raise CliError(
            "give SCOPE --id ID (e.g. `rollout status cluster --id c-1a2b`) or "
            "--trust-domain-deployment ID"
        )
    status, code = _follow_rollout(args, client, args.version)
    if args.output != "table":
        emit(status, args.output)
    return code


def _follow_deployment(args: argparse.Namespace, client: ApiClient) -> int:
    table_out = args.output == "table"
    progress = rollout.Progress(sys.stdout) if table_out and args.timeout > 0 else None
    status = rollout.wait_for_deployment(
        client, args.trust_domain_deployment, args.timeout, progress
    )
    if table_out:
        return rollout.report_deployment(status, args.timeout, sys.stdout, sys.stderr)
    emit(status, args.output)
    return rollout.exit_code(status)


def _rollout_action(action: str) -> Command:
    def command(args: argparse.Namespace) -> int:
        path = f"/v1/trust-domain-deployments/{args.trust_domain_deployment}/rollout/{action}"
        status = _client(args).post(path, {"reason": args.reason} if args.reason else {})
        if args.output != "table":
            emit(status, args.output)
            return 0
        print(rollout.deployment_line(status))
        return 0

    command.__name__ = f"cmd_rollout_{action}"
    return command


# -- audit, terraform --------------------------------------------------------------------------------


def cmd_audit_list(args: argparse.Namespace) -> None:
    emit(
        _client(args).get("/v1/audit", limit=args.limit)["items"],
        args.output,
        columns=AUDIT_COLUMNS,
    )


def cmd_terraform_install(args: argparse.Namespace) -> None:
    from controlplane.terraform.install import install_provider

    path = install_provider(Path(args.plugin_dir) if args.plugin_dir else None)
    print(f"installed terraform-provider-spirl at {path}")
    print('use it with: terraform { required_providers { spirl = { source = "spirl/spirl" } } }')


# -- parser -------------------------------------------------------------------------------------------


def _common(p: argparse.ArgumentParser, output: bool = True) -> None:
    p.add_argument(
        "--endpoint",
        default=None,
        help="control plane URL (default: $SPIRL_ENDPOINT or login file)",
    )
    p.add_argument("--token", default=None, help="API token (default: $SPIRL_TOKEN or login file)")
    p.add_argument(
        "--ca-file",
        default=None,
        metavar="PEM",
        help=f"trust only this CA for the control plane's certificate (default: ${CA_FILE_ENV}, "
        "the login file, else the system's trust store)",
    )
    if output:
        p.add_argument(
            "-o",
            "--output",
            choices=FORMATS,
            default="table",
            help="output format (default: table)",
        )


def _leaf(
    sub: Any, name: str, func: Command, help_text: str, **kwargs: Any
) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = sub.add_parser(
        name, help=help_text, description=help_text, **kwargs
    )
    _common(p)
    p.set_defaults(func=func)
    return p


def _force_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--force",
        action="store_true",
        help="deregister the servers that still use it first (each one audited)",
    )


def _wait_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--wait",
        action="store_true",
        help="then wait until every reachable server the change targets applied it, showing "
        "progress",
    )
    p.add_argument(
        "--timeout",
        type=seconds,
        default=DEFAULT_WAIT_TIMEOUT,
        help="with --wait: give up after this long (default 5m; e.g. 90s, 10m)",
    )
    p.epilog = rollout.EXIT_CODES_HELP


def _id_args(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("object_id", nargs="?", metavar="ID", help=f"{what} id")
    p.add_argument("--id", dest="id", default=None, help=f"{what} id (same as the positional ID)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="spirlctl",
        description="Manage trust domains, deployments, clusters and their KeyManager config.",
        epilog="Endpoint, token and CA file come from --endpoint/--token/--ca-file, "
        "$SPIRL_ENDPOINT/$SPIRL_TOKEN/$SPIRL_CA_FILE, or `spirlctl login`.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    top = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    login = top.add_parser("login", help="save endpoint and token to the config file (0600)")
    login.add_argument("--endpoint", dest="login_endpoint", required=True, help="control plane URL")
    login.add_argument(
        "--token", dest="login_token", default=None, help="API token, or - to read it from stdin"
    )
    login.add_argument(
        "--ca-file",
        dest="login_ca_file",
        default=None,
        metavar="PEM",
        help=f"CA that signed the control plane's certificate (saved; default: ${CA_FILE_ENV})",
    )
    login.set_defaults(func=cmd_login, endpoint=None, token=None, ca_file=None)

    # trust-domain [deployment]
    td = top.add_parser("trust-domain", help="trust domains and their deployments")
    td_sub = td.add_subparsers(dest="td_command", required=True, metavar="COMMAND")
    p = _leaf(td_sub, "create", cmd_td_create, "create a trust domain")
    p.add_argument("name", metavar="NAME", help="SPIFFE trust domain name, e.g. example.org")
    _leaf(td_sub, "list", cmd_td_list, "list trust domains")
    _id_args(_leaf(td_sub, "info", cmd_td_info, "show a trust domain"), "trust domain")
    _id_args(
        _leaf(
            td_sub,
            "delete",
            cmd_td_delete,
            "delete a trust domain (refused while it has deployments)",
        ),
        "trust domain",
    )

    tdd = td_sub.add_parser("deployment", help="trust domain deployments")
    tdd_sub = tdd.add_subparsers(dest="tdd_command", required=True, metavar="COMMAND")
    p = _leaf(tdd_sub, "create", cmd_tdd_create, "create a trust domain deployment")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--trust-domain", required=True, help="trust domain id (td-...)")
    p = _leaf(tdd_sub, "list", cmd_tdd_list, "list deployments")
    p.add_argument("--trust-domain", default=None, help="only this trust domain")
    _id_args(_leaf(tdd_sub, "info", cmd_tdd_info, "show a deployment"), "deployment")
    p = _leaf(
        tdd_sub,
        "delete",
        cmd_tdd_delete,
        "delete a deployment (refused while it has clusters or servers; says which)",
    )
    _id_args(p, "deployment")
    _force_arg(p)
    _id_args(
        _leaf(
            tdd_sub,
            "servers",
            cmd_tdd_servers,
            "the deployment's servers: desired/applied version, health, error, last contact",
        ),
        "deployment",
    )
    srv = tdd_sub.add_parser("server", help="one trust domain server: details, deregistration")
    srv_sub = srv.add_subparsers(dest="server_command", required=True, metavar="COMMAND")
    _id_args(
        _leaf(
            srv_sub,
            "info",
            cmd_server_info,
            "a server's state, versions, whole error, and its keys with their states",
        ),
        "server",
    )
    _id_args(
        _leaf(
            srv_sub,
            "delete",
            cmd_server_delete,
            "deregister a server: its credential stops working at once (it must join again) "
            "and its keys leave the trust bundle unless another server publishes them",
        ),
        "server",
    )
    p = _leaf(
        tdd_sub, "join-token", cmd_tdd_join_token, "issue a single-use join token for a new server"
    )
    _id_args(p, "deployment")
    p.add_argument(
        "--ttl", type=int, default=3600, help="seconds the token stays valid (default 3600)"
    )
    p = _leaf(
        tdd_sub,
        "join-tokens",
        cmd_tdd_join_tokens,
        "list a deployment's join tokens, newest first: their ids and states, never the tokens",
    )
    _id_args(p, "deployment")
    p.add_argument("--limit", type=int, default=50, help="how many (default 50, at most 500)")
    p = _leaf(
        tdd_sub,
        "revoke-join-token",
        cmd_tdd_revoke_join_token,
        "revoke a join token no server registered with yet (a used one: delete its server)",
    )
    _id_args(p, "deployment")
    p.add_argument(
        "--token-id", required=True, help="the token's id, jt-... (from join-tokens or join-token)"
    )

    # cluster
    cl = top.add_parser("cluster", help="clusters of a deployment")
    cl_sub = cl.add_subparsers(dest="cluster_command", required=True, metavar="COMMAND")
    p = _leaf(cl_sub, "create", cmd_cluster_create, "create a cluster")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--trust-domain-deployment", required=True, help="deployment id (tdd-...)")
    p = _leaf(cl_sub, "list", cmd_cluster_list, "list clusters")
    p.add_argument("--trust-domain-deployment", default=None, help="only this deployment")
    _id_args(_leaf(cl_sub, "info", cmd_cluster_info, "show a cluster"), "cluster")
    p = _leaf(
        cl_sub,
        "delete",
        cmd_cluster_delete,
        "delete a cluster (refused while servers use it; says which)",
    )
    _id_args(p, "cluster")
    _force_arg(p)

    # config
    cfg = top.add_parser(
        "config",
        help="config documents at a scope",
        description=f"Config documents at a scope: {', '.join(SCOPES)}.",
    )
    cfg_sub = cfg.add_subparsers(dest="config_command", required=True, metavar="COMMAND")

    def scoped(name: str, func: Command, help_text: str) -> argparse.ArgumentParser:
        p = _leaf(cfg_sub, name, func, help_text)
        p.add_argument(
            "scope", choices=SCOPES, metavar="SCOPE", help=f"one of: {', '.join(SCOPES)}"
        )
        p.add_argument("--id", required=True, help="id of the trust domain, deployment or cluster")
        return p

    for name, func, text in (
        ("set", cmd_config_set, "validate and store documents (a new version)"),
        ("validate", cmd_config_validate, "validate documents on the server; store nothing"),
    ):
        p = scoped(name, func, text)
        if name == "set":
            _wait_args(p)
        p.add_argument(
            "files",
            nargs="+",
            metavar="FILE",
            help="YAML files (several documents each allowed); - for stdin",
        )
        p.add_argument("--prune", action="store_true", help="remove sections not in these files")
        p.add_argument(
            "--expected-version",
            type=int,
            default=None,
            help="refuse (409) unless the scope is at this version",
        )
    p = scoped("get", cmd_config_get, "print the current (or --version) config as YAML")
    p.add_argument(
        "--version", type=int, default=None, help="a stored version instead of the current one"
    )
    p = _leaf(
        cfg_sub,
        "effective",
        cmd_config_effective,
        "the effective config a server of a deployment (and cluster) receives",
    )
    p.add_argument("--trust-domain-deployment", required=True)
    p.add_argument("--cluster", default=None)
    p = scoped("history", cmd_config_history, "list versions, newest first")
    p.add_argument("--limit", type=int, default=20)
    p.add_argument("--before", type=int, default=None, help="versions older than this one")
    p = scoped(
        "diff", cmd_config_diff, "per-section diff of two versions (default: previous -> current)"
    )
    p.add_argument("--from", dest="from_version", type=int, default=None)
    p.add_argument("--to", dest="to_version", type=int, default=None)
    p = scoped("rollback", cmd_config_rollback, "store an old version again as a new version")
    p.add_argument("--to-version", type=int, required=True)
    p.add_argument("--expected-version", type=int, default=None)
    _wait_args(p)
    p = scoped("delete-section", cmd_config_delete_section, "remove one section (a new version)")
    p.add_argument("section", metavar="SECTION", help="section name, e.g. KeyManager")
    p.add_argument("--expected-version", type=int, default=None)
    _wait_args(p)

    # rollout
    ro = top.add_parser(
        "rollout",
        help="how far a config change has reached the servers; staged rollouts",
        description="How far a config change has reached the servers, and a deployment's "
        "staged rollout (its Rollout policy): status, promote, pause, resume, abort.",
    )
    ro_sub = ro.add_subparsers(dest="rollout_command", required=True, metavar="COMMAND")
    p = _leaf(
        ro_sub,
        "status",
        cmd_rollout_status,
        "wait for a config version of a scope to reach every reachable server it targets, "
        "showing progress (like `kubectl rollout status`); or, with --trust-domain-deployment, "
        "follow that deployment's staged rollout and show its stages, bake time left and why "
        "it halted",
        epilog=rollout.EXIT_CODES_HELP.replace("with --wait", "") + "; --timeout 0 checks once",
    )
    p.add_argument(
        "scope", nargs="?", choices=SCOPES, metavar="SCOPE", help=f"one of: {', '.join(SCOPES)}"
    )
    p.add_argument("--id", default=None, help="id of the trust domain, deployment or cluster")
    p.add_argument(
        "--version", type=int, default=None, help="a stored version (default: the current one)"
    )
    p.add_argument(
        "--trust-domain-deployment",
        default=None,
        metavar="ID",
        help="a deployment's staged rollout instead of one config version",
    )
    p.add_argument(
        "--timeout",
        type=seconds,
        default=DEFAULT_WAIT_TIMEOUT,
        help="give up after this long (default 5m; e.g. 90s, 10m)",
    )
    for action, text in (
        (
            "promote",
            "move a deployment's staged rollout to its next stage now (at the last "
            "stage: complete it; after a halt: accept the failing server and go on)",
        ),
        ("pause", "stop a staged rollout from advancing (a failure still halts it)"),
        (
            "resume",
            "let a paused or halted staged rollout go on (the stage's gate and bake start "
            "over); an aborted one starts over from its first stage",
        ),
        (
            "abort",
            "stop a staged rollout and return every server to the last config every server had",
        ),
    ):
        p = _leaf(ro_sub, action, _rollout_action(action), text)
        p.add_argument("--trust-domain-deployment", required=True, metavar="ID")
        p.add_argument("--reason", default=None, help="why (kept in the audit log)")

    # audit
    au = top.add_parser("audit", help="the audit log")
    au_sub = au.add_subparsers(dest="audit_command", required=True, metavar="COMMAND")
    p = _leaf(au_sub, "list", cmd_audit_list, "list audit events, newest first")
    p.add_argument("--limit", type=int, default=50)

    # terraform
    tf = top.add_parser("terraform", help="Terraform provider helpers")
    tf_sub = tf.add_subparsers(dest="tf_command", required=True, metavar="COMMAND")
    p = tf_sub.add_parser(
        "install-provider",
        help="install terraform-provider-spirl into the implied local plugin folder",
    )
    p.add_argument(
        "--plugin-dir", default=None, help="plugin root (default ~/.terraform.d/plugins)"
    )
    p.set_defaults(func=cmd_terraform_install)
    return parser


def _print_api_error(exc: ApiError) -> None:
    if exc.code == "validation_failed":
        for issue in exc.body.get("errors", []):
            where = f"{issue.get('section') or '<document>'} {issue.get('pointer') or '/'}"
            doc = issue.get("document")
            prefix = f"[document {doc}] " if doc not in (None, 0) else ""
            print(f"{prefix}{where}: {issue.get('reason')}", file=sys.stderr)
        print("nothing was stored", file=sys.stderr)
        return
    print(f"error: {exc}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code = args.func(args)
    except ApiError as exc:
        _print_api_error(exc)
        return 1
    except CliError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0
    return int(code or 0)


if __name__ == "__main__":
    sys.exit(main())
