"""The deployment files as an installer meets them: compose files that `docker compose` accepts,
Kubernetes manifests of the expected kinds with probes and cluster secrets, and a Grafana
dashboard whose every query names a metric the platform exports."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml

from anxin.cli import app as anxin_app
from anxin.metrics import METRIC_NAMES
from anxin.runtime import ROLES
from gateway.cli import devices_app

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"


def _load(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def _command(service: dict[str, Any]) -> list[str]:
    command = service.get("command", [])
    return command if isinstance(command, list) else str(command).split()


def _depends(service: dict[str, Any]) -> dict[str, str]:
    return {name: spec["condition"] for name, spec in service.get("depends_on", {}).items()}


def _role_services(compose: dict[str, Any]) -> dict[str, list[str]]:
    """service name → the role it runs (`anxin run ROLE`)."""
    found: dict[str, list[str]] = {}
    for name, service in compose["services"].items():
        command = _command(service)
        if command[:1] == ["run"]:
            found[name] = [c for c in command[1:] if c in ROLES]
    return found


@pytest.mark.parametrize("filename", ["compose.yaml", "compose.emqx.yaml"])
def test_compose_runs_migrations_once_before_every_role(filename: str) -> None:
    compose = _load(DEPLOY / filename)
    services = compose["services"]
    assert _command(services["migrate"]) == ["db", "upgrade"]
    assert _depends(services["migrate"]) == {"postgres": "service_healthy"}
    assert services["migrate"].get("restart") == "no"
    roles = _role_services(compose)
    # Every role runs as its own service.
    assert {role for rs in roles.values() for role in rs} == set(ROLES)
    assert all(len(rs) == 1 for rs in roles.values())
    for name in roles:
        service = services[name]
        assert _depends(service)["migrate"] == "service_completed_successfully", name
        assert "healthcheck" in service, name
        env = service["environment"]
        assert env["ANXIN_DATABASE_URL"].startswith("postgresql+asyncpg://")
        assert env["ANXIN_MQTT_URL"].startswith("mqtt://")
        # The secret key must be given: compose refuses to start without it.
        assert ":?" in env["ANXIN_SECRET_KEY"]
    assert "pg_isready" in str(services["postgres"]["healthcheck"]["test"])


def test_web_healthcheck_and_port() -> None:
    web = _load(DEPLOY / "compose.yaml")["services"]["web"]
    assert "/healthz" in str(web["healthcheck"]["test"])
    assert any(str(p).endswith(":8000") for p in web["ports"])


def test_mosquitto_uses_the_generated_password_file_and_acl() -> None:
    services = _load(DEPLOY / "compose.yaml")["services"]
    credentials = services["broker-credentials"]
    args = _command(credentials)
    assert args[:2] == ["devices", "export-mosquitto"]
    options = dict(a.split("=", 1) for a in args[2:])
    conf = (DEPLOY / "mosquitto" / "mosquitto.compose.conf").read_text()
    assert f"password_file {options['--password-file']}" in conf
    assert f"acl_file {options['--acl-file']}" in conf
    assert "allow_anonymous false" in conf
    # The broker waits for the credentials; both see the same volume.
    assert _depends(services["mosquitto"]) == {
        "broker-credentials": "service_completed_successfully"
    }
    assert any(v.startswith("mosquitto-auth:") for v in services["mosquitto"]["volumes"])
    assert any(v.startswith("mosquitto-auth:") for v in credentials["volumes"])
    # The command the one-off runs exists with these options (gateway/cli.py).
    command = typer.main.get_command(devices_app)
    export = command.commands["export-mosquitto"]  # type: ignore[attr-defined]
    option_names = {o for p in export.params for o in p.opts}
    assert {"--password-file", "--acl-file"} <= option_names


def test_emqx_variant_runs_several_gateways_in_one_shared_group() -> None:
    compose = _load(DEPLOY / "compose.emqx.yaml")
    services = compose["services"]
    gateways = [name for name, roles in _role_services(compose).items() if roles == ["gateway"]]
    assert len(gateways) >= 2
    ids = [_command(services[g])[_command(services[g]).index("--gateway-id") + 1] for g in gateways]
    assert len(set(ids)) == len(ids), "each replica needs its own MQTT client id"
    groups = {services[g]["environment"]["ANXIN_MQTT_SHARED_GROUP"] for g in gateways}
    assert len(groups) == 1 and groups != {""}
    assert sum(1 for s in services.values() if "emqx/emqx" in str(s.get("image", ""))) >= 2
    acl = (DEPLOY / "emqx" / "anxin-acl.conf").read_text()
    assert "${username}/event" in acl and "{deny, all}." in acl


def test_compose_commands_exist_in_the_cli() -> None:
    commands = typer.main.get_command(anxin_app).commands  # type: ignore[attr-defined]
    for filename in ("compose.yaml", "compose.emqx.yaml", "compose.ha.yaml"):
        for service in _load(DEPLOY / filename)["services"].values():
            # The platform's image (not the database image of compose.ha.yaml).
            if str(service.get("image", "")).startswith("${ANXIN_IMAGE"):
                first = _command(service)[0]
                assert first in commands or first == "devices", (filename, first)


def _compose_tool() -> list[str] | None:
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    docker = shutil.which("docker")
    if (
        docker
        and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0
    ):
        return [docker, "compose"]
    return None


@pytest.mark.parametrize("filename", ["compose.yaml", "compose.emqx.yaml", "compose.ha.yaml"])
def test_docker_compose_config_accepts_the_files(filename: str, tmp_path: Path) -> None:
    tool = _compose_tool()
    if tool is None:
        pytest.skip("neither `docker compose` nor docker-compose is installed here")
    env = tmp_path / "anxin.env"
    env.write_text((DEPLOY / "env.example").read_text())
    result = subprocess.run(
        [*tool, "-f", str(DEPLOY / filename), "--env-file", str(env), "config", "-q"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr


def test_dockerfile_builds_one_image_whose_command_is_the_role() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["anxin"]' in dockerfile
    ignored = {
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    for match in re.finditer(r"^COPY (?!--from)(\S+)", dockerfile, re.MULTILINE):
        source = match.group(1)
        assert (ROOT / source).exists(), source
        assert source not in ignored, f"{source} is copied but .dockerignore leaves it out"


def _manifests() -> list[tuple[Path, dict[str, Any]]]:
    found = []
    for path in sorted(K8S.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if doc:
                found.append((path, doc))
    return found


def _deployments() -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for _, doc in _manifests() if doc["kind"] == "Deployment"}


def test_kubernetes_manifests_have_the_expected_kinds() -> None:
    kinds = {(doc["kind"], doc.get("metadata", {}).get("name")) for _, doc in _manifests()}
    for role in ROLES:
        assert ("Deployment", f"anxin-{role}") in kinds
    assert ("Job", "anxin-migrate") in kinds
    assert ("Service", "anxin-web") in kinds
    assert ("ConfigMap", "anxin-config") in kinds
    for path, doc in _manifests():
        assert {"apiVersion", "kind"} <= doc.keys(), path
    kustomization = _load(K8S / "kustomization.yaml")
    for resource in kustomization["resources"]:
        assert (K8S / resource).exists()
    # The example secret is not applied: secrets come from the cluster.
    assert "secret.example.yaml" not in kustomization["resources"]


def test_every_role_has_replicas_probes_and_cluster_secrets() -> None:
    for name, deployment in _deployments().items():
        spec = deployment["spec"]
        assert spec["replicas"] >= 2, name
        pod = spec["template"]["spec"]
        (container,) = pod["containers"]
        ports = {p["containerPort"] for p in container["ports"]}
        for probe in ("readinessProbe", "livenessProbe"):
            assert container[probe]["httpGet"]["port"] in ports, (name, probe)
        refs = {
            ref.get("secretRef", {}).get("name")
            for ref in container["envFrom"]
            if "secretRef" in ref
        }
        assert refs == {"anxin-secrets"}, name
        # No secret written into the manifest itself.
        assert "ANXIN_DATABASE_URL" not in json.dumps(container.get("env", []))
    web = _deployments()["anxin-web"]["spec"]["template"]["spec"]["containers"][0]
    assert web["readinessProbe"]["httpGet"]["path"] == "/healthz"


def test_gateway_replicas_get_distinct_client_ids() -> None:
    container = _deployments()["anxin-gateway"]["spec"]["template"]["spec"]["containers"][0]
    args = container["args"]
    assert args[args.index("--gateway-id") + 1] == "$(POD_NAME)"
    assert any(e["name"] == "POD_NAME" for e in container["env"])


def test_kustomize_renders_the_manifests() -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed here")
    result = subprocess.run(
        [kubectl, "kustomize", str(K8S)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    rendered = [d for d in yaml.safe_load_all(result.stdout) if d]
    assert all(
        d["metadata"].get("namespace") == "anxin" for d in rendered if d["kind"] != "Namespace"
    )


def _dashboard_metrics() -> set[str]:
    dashboard = json.loads((DEPLOY / "grafana" / "anxin.json").read_text(encoding="utf-8"))
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    names = set()
    for expr in exprs:
        for name in re.findall(r"\banxin_[a-z0-9_]+", expr):
            names.add(re.sub(r"_(bucket|count|sum|created)$", "", name))
    return names


def test_dashboard_queries_only_metrics_that_exist() -> None:
    used = _dashboard_metrics()
    assert used <= set(METRIC_NAMES), used - set(METRIC_NAMES)
    # The figures the issue asks for are all on the dashboard.
    for figure in (
        "anxin_mqtt_messages_total",
        "anxin_device_acks_total",
        "anxin_dead_letters_total",
        "anxin_db_commit_seconds",
        "anxin_open_alerts",
        "anxin_sms_oldest_unsent_seconds",
        "anxin_timer_lateness_seconds",
        "anxin_response_compliance_ratio",
    ):
        assert figure in used, figure


def test_prometheus_scrapes_every_role() -> None:
    config = _load(DEPLOY / "prometheus" / "prometheus.yml")
    targets = [
        t for job in config["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]
    ]
    services = _load(DEPLOY / "compose.yaml")["services"]
    for target in targets:
        assert target.split(":")[0] in services
    assert {t.split(":")[0] for t in targets} == set(_role_services(_load(DEPLOY / "compose.yaml")))


def test_alerting_rules_use_metrics_that_exist() -> None:
    rules = _load(DEPLOY / "prometheus" / "alerts.yml")
    for group in rules["groups"]:
        for rule in group["rules"]:
            for name in re.findall(r"\banxin_[a-z0-9_]+", rule["expr"]):
                assert name in METRIC_NAMES, (rule["alert"], name)
    prometheus = _load(DEPLOY / "prometheus" / "prometheus.yml")
    assert "/etc/prometheus/alerts.yml" in prometheus["rule_files"]


# --- the database that survives the loss of a server (issue 16) -------------------------------


def test_ha_compose_runs_etcd_two_patroni_nodes_and_a_session_bouncer_beside_each() -> None:
    from anxin.db import normalise_url

    compose = _load(DEPLOY / "compose.ha.yaml")
    services = compose["services"]
    assert "postgres" not in services  # no single server left to lose
    assert "etcd" in services
    nodes = [n for n, s in services.items() if "PATRONI_NAME" in s.get("environment", {})]
    assert nodes == ["patroni1", "patroni2"]
    for node in nodes:
        env = services[node]["environment"]
        assert env["PATRONI_NAME"] == node
        assert env["PATRONI_ETCD3_HOSTS"] == "etcd:2379"
        assert _depends(services[node]) == {"etcd": "service_healthy"}
        assert "/health" in str(services[node]["healthcheck"]["test"])
        # Passwords come from deploy/.env, never from the file.
        assert ":?" in env["PATRONI_SUPERUSER_PASSWORD"]
        assert ":?" in env["PATRONI_REPLICATION_PASSWORD"]
    bouncers = {
        s["network_mode"].removeprefix("service:"): n
        for n, s in services.items()
        if _command(s) == ["anxin-pgbouncer"]
    }
    assert set(bouncers) == set(nodes), "one PgBouncer in each node's network namespace"
    patroni = _load(DEPLOY / "patroni" / "patroni.yml")
    dcs = patroni["bootstrap"]["dcs"]
    assert dcs["synchronous_mode"] is True  # an acked event is on both nodes
    assert dcs["loop_wait"] + 2 * dcs["retry_timeout"] <= dcs["ttl"]
    assert patroni["postgresql"]["callbacks"]["on_role_change"].endswith("on_role_change.sh")
    assert "RECONNECT" in (DEPLOY / "patroni" / "on_role_change.sh").read_text()
    ini = (DEPLOY / "patroni" / "pgbouncer.ini").read_text()
    assert re.search(r"^pool_mode = session$", ini, re.M)  # the roles LISTEN/NOTIFY
    assert re.search(r"^listen_port = 6432$", ini, re.M)
    # Migrations and every role go through both bouncers to whichever node is the primary.
    assert _depends(services["migrate"]) == {
        b: "service_started" for b in sorted(bouncers.values())
    }
    roles = _role_services(compose)
    assert {role for rs in roles.values() for role in rs} == set(ROLES)
    for name in [*roles, "migrate"]:
        url = services[name]["environment"]["ANXIN_DATABASE_URL"]
        assert "@patroni1:6432,patroni2:6432/anxin?target_session_attrs=read-write" in url, name
        given = re.sub(r"\$\{[^}]*\}", "pw", url)  # as compose substitutes it
        assert "?host=patroni1:6432&host=patroni2:6432&" in normalise_url(given)
    env_example = (DEPLOY / "env.example").read_text()
    for variable in ("ANXIN_PG_SUPERUSER_PASSWORD", "ANXIN_PG_REPLICATION_PASSWORD"):
        assert f"{variable}=" in env_example


def test_ha_kubernetes_runs_etcd_and_two_patroni_pods_with_a_bouncer_each() -> None:
    ha = K8S / "postgres-ha"
    docs = [
        d
        for path in sorted(ha.glob("*.yaml"))
        if path.name != "kustomization.yaml"
        for d in yaml.safe_load_all(path.read_text(encoding="utf-8"))
        if d
    ]
    sets = {d["metadata"]["name"]: d for d in docs if d["kind"] == "StatefulSet"}
    assert sets["anxin-etcd"]["spec"]["replicas"] == 3  # a quorum survives one machine
    pg = sets["anxin-pg"]["spec"]
    assert pg["replicas"] == 2
    pod = pg["template"]["spec"]
    assert [c["name"] for c in pod["containers"]] == ["patroni", "pgbouncer"]
    assert pod["securityContext"]["runAsUser"] != 0
    anti = pod["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert anti[0]["topologyKey"] == "kubernetes.io/hostname"  # the two nodes never share one
    patroni, bouncer = pod["containers"]
    assert {e["name"] for e in patroni["env"]} >= {"PATRONI_NAME", "PATRONI_ETCD3_HOSTS"}
    assert patroni["envFrom"] == [{"secretRef": {"name": "anxin-db"}}]
    assert {p["containerPort"] for p in bouncer["ports"]} == {6432}
    services = {d["metadata"]["name"] for d in docs if d["kind"] == "Service"}
    assert {"anxin-etcd", "anxin-pg"} <= services
    kustomization = _load(ha / "kustomization.yaml")
    assert all((ha / r).exists() for r in kustomization["resources"])
    assert (
        "anxin-pg-0.anxin-pg:6432,anxin-pg-1.anxin-pg:6432"
        in (ha / "kustomization.yaml").read_text()
    )
    kubectl = shutil.which("kubectl")
    if kubectl is not None:
        result = subprocess.run(
            [kubectl, "kustomize", str(ha)], capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 0, result.stderr
