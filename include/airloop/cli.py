"""The ``airloop`` command.

Talks to Airflow over HTTP only (:mod:`airloop.client`; ``AIRLOOP_AIRFLOW_URL``,
``AIRLOOP_AIRFLOW_USER``, ``AIRLOOP_AIRFLOW_PASSWORD`` or ``AIRLOOP_AIRFLOW_TOKEN``):

    airloop models [--json]                            # every model: champion, challenger, served, drift
    airloop status MODEL [--json]                      # one model: versions, service, history, drift, runs
    airloop lineage MODEL VERSION [--json]             # data -> validation -> features -> run -> version -> ...
    airloop promote MODEL VERSION [--reason R] [--override-gate] [--wait] [--json]
    airloop rollback MODEL [--to VERSION] [--reason R] [--wait] [--json]

Local helpers that read the settings of this machine (no Airflow needed):

    airloop mlflow-ui [--port 5000]   # MLflow UI on the embedded store
    airloop settings                  # print the effective settings as env vars
    airloop check-secrets             # exit 1 naming any placeholder or short secret

Errors are one line on stderr; the exit code says which kind: 1 a refused request, 2 bad
usage, 3 Airflow unreachable, 4 login refused or not allowed, 5 unknown model or version, 6 the
triggered run failed. Imports nothing heavy: it starts in a fraction of a second.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from airloop.settings import WeakSecretError, api_config, ensure_dirs, get_settings, require_strong_secrets, serve_config


def mlflow_ui(port: int, host: str) -> int:
    """Replace this process with ``mlflow server`` on the configured tracking store and artifacts."""
    s = ensure_dirs()
    cmd = [
        os.path.join(os.path.dirname(sys.executable), "mlflow"), "server",
        "--backend-store-uri", s.mlflow_tracking_uri,
        "--artifacts-destination", str(s.mlflow_artifacts_dir),
        "--host", host, "--port", str(port),
    ]
    print(" ".join(cmd), flush=True)
    os.execv(cmd[0], cmd)
    return 0


# -- rendering ---------------------------------------------------------------------------------


def table(headers: list[str], rows: list[list[Any]]) -> str:
    """Left-aligned columns separated by two spaces; None shows as ``-``."""
    cells = [[("-" if v is None else str(v)) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    lines = [headers, *cells]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in lines)


def _num(value: Any) -> str | None:
    return f"{value:.4f}" if isinstance(value, float) else None if value is None else str(value)


def _v(facts: dict | None) -> str | None:
    return f"v{facts['version']}" if facts else None


def _served(serving: dict) -> str:
    if serving["state"] in ("serving_champion", "no_champion", "other_version"):
        return f"v{serving['model_version']}"
    return serving["state"].replace("_", " ")


def render_models(result: dict) -> str:
    """Every model as one table row: champion, score, challenger, served version, last drift check."""
    rows, notes = [], []
    for m in result["models"]:
        reg, drift = m["registry"], m["drift"]
        champion = reg["champion"]
        last = drift["checks"][0] if drift["checks"] else None
        rows.append([
            m["model"], "error" if reg["error"] else _v(champion),
            f"{m['promotion']['metric']} {_num(champion['score']['value'])}" if champion else None,
            _v(reg["challenger"]), _served(m["serving"]),
            f"{last['status']} ({last['window_end'][:16]})" if last else None,
        ])
        for text in (reg["error"], m["serving"]["warning"]):
            if text:
                notes.append(f"{m['model']}: {text}")
    out = table(["MODEL", "CHAMPION", "SCORE", "CHALLENGER", "SERVED", "LAST DRIFT CHECK"], rows)
    return "\n".join([out, *(f"! {n}" for n in notes)]) if rows else "no model you may read"


def _floors(facts: dict) -> str:
    return ", ".join(f"{f['metric']} {_num(f['value'])} {'>=' if f['greater_is_better'] else '<='} {f['floor']}"
                     f" {'ok' if f['passes'] else 'MISSED'}" for f in facts["floors"]) or "-"


def render_status(model: dict, runs: list[dict]) -> str:
    """One model in full: versions against the floors, the served version, history, drift checks and runs."""
    reg, serving = model["registry"], model["serving"]
    out = [f"{model['model']}: {model['description']}".rstrip(": "), ""]
    if reg["error"]:
        out.append(f"registry unreadable: {reg['error']}")
    elif not reg["registered"]:
        out.append("no version registered yet: run the train DAG")
    rows = [[f"@{role}" if role != "latest" else "newest", _v(f), f["created_at"], _num(f["score"]["value"]),
             _floors(f), f["gate"] or "not gated", f["trigger_reason"]]
            for role in ("champion", "challenger", "latest") if (f := reg.get(role))]
    if rows:
        out += [table(["", "VERSION", "REGISTERED", model["promotion"]["metric"].upper(), "FLOORS", "GATE",
                       "TRAINED BECAUSE"], rows), ""]
    out.append(f"served: {serving['warning']}" if serving["warning"] else
               f"served: v{serving['model_version']} at {serving['url']}")
    events = model["history"]["events"][:5]
    if events:
        out += ["", "history (newest first):", table(
            ["WHEN", "ACTION", "VERSION", "PREVIOUS", "USER", "BY", "REASON"],
            [[e.get("at"), e.get("action"), f"v{e.get('version')}", e.get("previous"), e.get("user"), e.get("by"),
              e.get("reason")] for e in events])]
    checks = model["drift"]["checks"][:5]
    if checks:
        out += ["", "drift checks (newest first):", table(
            ["WINDOW END", "STATUS", "ROWS", "DRIFTED SHARE", "DECISION"],
            [[c["window_end"], c["status"], c["rows"], _num(c["drifted_share"]),
              ("retrain: " if (c.get("decision") or {}).get("trigger") else "") + str((c.get("decision") or {})
                                                                                      .get("reason", "-"))]
             for c in checks])]
    if runs:
        out += ["", "last runs:", table(
            ["DAG", "RUN", "STATE", "TRIGGERED BY", "AFTER"],
            [[r["dag_id"], *([r["run"]["dag_run_id"], r["run"]["state"], r["run"].get("triggering_user_name"),
                              r["run"]["run_after"][:19]] if r["run"] else ["-", "never run", None, None])]
             for r in runs])]
    return "\n".join(out)


def render_lineage(facts: dict) -> str:
    """A version's lineage, from data batches to the drift checks made while it served."""
    v, data, run = facts["version"], facts["data"], facts["training_run"]
    out = [f"{facts['model']} v{v['version']}  (registered {v['created_at']}; aliases: "
           f"{', '.join('@' + a for a in v['aliases']) or 'none'})", ""]
    out.append(f"data:        DVC rev {data['dvc_rev'] or '-'}, md5 {data['dvc_md5'] or '-'}, "
               f"{len(data['batches'])} batch(es)" + (f" ({data['batches_error']})" if data["batches_error"] else ""))
    if data["batches"]:
        out.append(table(["  BATCH", "DATASET", "MD5", "DVC REV", "VALIDATION RESULT", "ROWS"],
                         [[f"  {b.get('batch')}", b.get("dataset"), b.get("md5"), (b.get("rev") or "")[:12] or None,
                           b.get("validation_result_id"), b.get("rows")] for b in data["batches"]]))
    out.append(f"validation:  {data['validation_result_id'] or '-'}")
    out.append(f"features:    service {facts['features']['service'] or '-'}; "
               f"columns {', '.join(facts['features']['columns']) or '-'}")
    out.append(f"trained:     run {run['run_id']} because {v['trigger_reason'] or '-'}"
               + (f" (drift report {v['drift_report_id']})" if v["drift_report_id"] else "")
               + (f"; code {run['code_version']}" if run["code_version"] else "")
               + (f"; {run['link']}" if run["link"] else ""))
    out.append(f"gate:        {v['gate'] or 'not gated'}" + (f": {v['gate_reason']}" if v["gate_reason"] else ""))
    out.append(f"bento:       {facts['bento_tag'] or 'not packaged'}")
    for e in facts["promotions"]:
        out.append(f"history:     {e.get('at')} {e.get('action')} by {e.get('user') or e.get('by')}: {e.get('reason')}")
    for c in facts["drift_checks"]:
        out.append(f"drift check: {c['window_end']} {c['status']} (report {c['report_id']})"
                   + (f" {c['links']['report']}" if c["links"]["report"] else ""))
    return "\n".join(out)


def render_run(run: dict, event: dict | None = None) -> str:
    """A triggered promote or rollback run: its id, state, conf and (once done) the champion event."""
    text = (f"{run['dag_id']} run {run['dag_run_id']}: {run['state']} "
            f"(triggered by {run.get('triggering_user_name') or '?'}; conf {json.dumps(run.get('conf') or {})})")
    if event:
        text += f"\n{event['action']} v{event['version']}: {event.get('reason')}"
    return text


# -- the commands ------------------------------------------------------------------------------


def _remote(args: argparse.Namespace) -> tuple[Any, str]:
    """Run one remote command: its JSON-safe result and the text to print."""
    from airloop.client import AirloopClient, RunFailed

    client = AirloopClient()
    if args.command == "models":
        result = client.models()
        return result, render_models(result)
    if args.command == "status":
        model = client.model(args.model)
        runs = client.last_runs(args.model)
        return {"model": model, "runs": runs}, render_status(model, runs)
    if args.command == "lineage":
        facts = client.lineage(args.model, args.version)
        return facts, render_lineage(facts)
    if args.command == "promote":
        run = client.promote(args.model, args.version, reason=args.reason, override_gate=args.override_gate)
    else:
        run = client.rollback(args.model, to_version=args.to, reason=args.reason)
    if not args.wait:
        return run, render_run(run)
    run = client.wait(run, args.timeout)
    event = client.event_of_run(args.model, run["dag_run_id"])
    if run["state"] != "success":
        why = f": {event['action']} v{event['version']}: {event.get('reason')}" if event else ""
        raise RunFailed(f"{run['dag_id']} run {run['dag_run_id']} failed{why}")
    return {**run, "history_event": event}, render_run(run, event)


def _add_remote_commands(sub) -> None:
    def command(name: str, help: str):
        p = sub.add_parser(name, help=help)
        p.add_argument("--json", action="store_true", help="print JSON instead of tables")
        return p

    command("models", help="every model: champion, challenger, served version, last drift check")
    status = command("status", help="one model: versions against the floors, service, history, drift, DAG runs")
    status.add_argument("model")
    lineage = command("lineage", help="one model version: data, validation, features, run, gate, Bento, drift")
    lineage.add_argument("model")
    lineage.add_argument("version")
    promote = command("promote", help="trigger MODEL__promote: make VERSION @champion if the gate lets it")
    promote.add_argument("model")
    promote.add_argument("version")
    promote.add_argument("--reason", default="manual promotion", help="recorded in the promotion history")
    promote.add_argument("--override-gate", action="store_true",
                         help="promote even if the gate rejects the version (recorded with your user and reason)")
    rollback = command("rollback", help="trigger MODEL__rollback: @champion back to the previous (or a named) version")
    rollback.add_argument("model")
    rollback.add_argument("--to", metavar="VERSION", help="the version to restore (default: the previous champion)")
    rollback.add_argument("--reason", default="manual rollback", help="recorded in the promotion history")
    for p in (promote, rollback):
        p.add_argument("--wait", action="store_true", help="wait for the run to end; exit 6 if it fails")
        p.add_argument("--timeout", type=float, default=600, help="seconds --wait waits (default 600)")


REMOTE = ("models", "status", "lineage", "promote", "rollback")


def main(argv: list[str] | None = None) -> int:
    """The ``airloop`` command (also ``python -m airloop.cli``): run one sub-command; the exit status."""
    parser = argparse.ArgumentParser(prog="airloop", description="Airloop's models through Airflow's API.")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_remote_commands(sub)
    ui = sub.add_parser("mlflow-ui", help="serve the MLflow UI on the configured store")
    ui.add_argument("--port", type=int, default=5000)
    ui.add_argument("--host", default="127.0.0.1")
    sub.add_parser("settings", help="print the effective settings")
    sub.add_parser("check-secrets", help="refuse placeholder, empty or short secrets in the environment")
    args = parser.parse_args(argv)
    if args.command in REMOTE:
        from airloop.client import ClientError

        try:
            result, text = _remote(args)
        except ClientError as exc:
            print(f"airloop: {exc}", file=sys.stderr)
            return exc.exit_code
        print(json.dumps(result, indent=2) if args.json else text)
        return 0
    if args.command == "mlflow-ui":
        return mlflow_ui(args.port, args.host)
    if args.command == "check-secrets":
        try:
            require_strong_secrets()
        except WeakSecretError as exc:
            print(f"airloop: {exc}", file=sys.stderr)
            return 1
        return 0
    env = {**get_settings().as_env(), **serve_config().as_env(), **api_config().as_env()}
    for key, value in sorted(env.items()):
        print(f"{key}={value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
