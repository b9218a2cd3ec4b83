"""The deployment files agree with each other and with the code: compose, nginx, Prometheus, Grafana,
Kubernetes, the Redis ACL template and `cluster/store/keys.py`.

`docker compose config` needs the compose plugin, which CI machines lack; the compose file is therefore
parsed with tests/yaml_subset.py (cross-checked against PyYAML when it was written) and its meaning is
checked here. Where the plugin exists, `docker compose config` must accept the file too.
"""

from __future__ import annotations

import fnmatch
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from cluster.store.keys import Keys
from tests.yaml_subset import load, load_all

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "compose"
KEYS = Keys()
# The metric names issue 4 defines (docs/worker.md); a replica must keep exporting them.
WORKER_METRICS = {
    "flowfleet_workflow_reload_total",
    "flowfleet_workflow_version_info",
    "flowfleet_reload_duration_seconds",
    "flowfleet_reload_errors_total",
    "flowfleet_flow_runs_total",
    "flowfleet_flow_run_duration_seconds",
    "flowfleet_subscriber_connected",
    "flowfleet_seconds_since_last_event",
}


def compose() -> dict[str, Any]:
    doc: dict[str, Any] = load((COMPOSE / "docker-compose.yml").read_text())
    return doc


def services() -> dict[str, Any]:
    result: dict[str, Any] = compose()["services"]
    return result


def arg_after(argv: list[str], flag: str) -> str:
    return argv[argv.index(flag) + 1]


# -- compose ------------------------------------------------------------------------------------------
def test_compose_has_the_whole_stack() -> None:
    s = services()
    assert {n for n, svc in s.items() if "profiles" not in svc} == {
        "redis", "control", "worker", "lb", "prometheus", "grafana",
    }  # fmt: skip
    # `docker compose --profile sentinel`: two replicas of `redis` and three sentinels (operations.md).
    assert {n: svc["profiles"] for n, svc in s.items() if "profiles" in svc} == {
        "redis-replica": ["sentinel"], "sentinel": ["sentinel"],
    }  # fmt: skip
    assert s["redis-replica"]["deploy"]["replicas"] == 2 and s["sentinel"]["deploy"]["replicas"] == 3
    assert s["worker"]["deploy"]["replicas"] == 3
    assert s["worker"]["command"][0] == "worker" and s["control"]["command"][0] == "control"
    major = int(re.match(r"redis:(\d+)", s["redis"]["image"]).group(1))  # type: ignore[union-attr]
    assert major >= 7, "the ACL file uses Redis 7 key selectors"
    for name in ("control", "worker"):
        assert s[name]["build"] == {"context": "..", "dockerfile": "compose/Dockerfile"}
        assert s[name]["depends_on"]["redis"]["condition"] == "service_healthy"
    # Graceful shutdown: Docker waits longer than the replica's own drain bound before SIGKILL.
    grace = int(s["worker"]["environment"]["FLOWFLEET_SHUTDOWN_GRACE_S"])
    assert int(s["worker"]["stop_grace_period"].rstrip("s")) > grace


def test_no_flow_files_are_mounted_anywhere() -> None:
    for name, service in services().items():
        for volume in service.get("volumes", []):
            assert "flows" not in volume.split(":")[0], f"{name} mounts flow files: {volume}"


def test_redis_uses_the_acl_template_and_aof() -> None:
    redis = services()["redis"]
    mounts = {v.split(":")[0]: v.split(":")[1] for v in redis["volumes"]}
    assert mounts["./redis/users.acl"] == "/etc/redis/users.acl.template"
    assert mounts["./redis/start.sh"] == redis["command"][-1]
    start = (COMPOSE / "redis" / "start.sh").read_text()
    assert "${ACL_TEMPLATE:-/etc/redis/users.acl.template}" in start
    assert "--appendonly yes" in start and "--appendfsync always" in start
    assert '--aclfile "$data_dir/users.acl"' in start


def test_services_log_in_to_redis_as_their_own_acl_user() -> None:
    s = services()
    for service, user in (("worker", "worker"), ("control", "control")):
        url = s[service]["environment"]["FLOWFLEET_REDIS_URL"]
        var = f"REDIS_{user.upper()}_PASSWORD"
        # The `redis` service unless compose/.env names a Sentinel URL (CONTROL_REDIS_URL, WORKER_REDIS_URL).
        assert url == f"${{{user.upper()}_REDIS_URL:-redis://{user}:${{{var}:-}}@redis:6379/0}}"
        assert s["redis"]["environment"][var] == f"${{{var}:-}}"


def test_every_interpolated_variable_is_in_env_example() -> None:
    text = (COMPOSE / "docker-compose.yml").read_text()
    used = set(re.findall(r"\$\{([A-Z0-9_]+)", text))
    example = (COMPOSE / ".env.example").read_text()
    declared = {line.split("=", 1)[0] for line in example.splitlines() if re.match(r"^[A-Z0-9_]+=", line)}
    assert used == declared
    # Placeholders only: the example holds no secret value.
    assert all(line.endswith("=") for line in example.splitlines() if re.match(r"^[A-Z0-9_]+=", line))


def test_secrets_come_from_files_init_secrets_makes() -> None:
    doc = compose()
    script = (COMPOSE / "init-secrets.sh").read_text()
    for name, secret in doc["secrets"].items():
        path = secret["file"]
        assert path.startswith("./secrets/")
        assert f"compose/secrets/{path.removeprefix('./secrets/')}" in script, name
    used = {secret for service in doc["services"].values() for secret in service.get("secrets", [])}
    assert used == set(doc["secrets"])


def test_load_balancer_fronts_the_worker_service() -> None:
    s = services()
    lb = s["lb"]
    assert lb["image"].startswith("nginx:")
    assert "./nginx.conf:/etc/nginx/nginx.conf:ro" in lb["volumes"]
    conf = (COMPOSE / "nginx.conf").read_text()
    port = arg_after(s["worker"]["command"], "--port")
    assert re.search(rf"server worker:{port} resolve;", conf)
    assert "resolver 127.0.0.11" in conf  # Docker's DNS: scaled replicas are picked up
    assert "proxy_pass http://flowfleet_workers;" in conf
    listen = re.search(r"listen (\d+);", conf)
    assert listen and lb["ports"] == [f"{listen.group(1)}:{listen.group(1)}"]


def test_prometheus_scrapes_every_replica_and_the_control_plane() -> None:
    s = services()
    config = load((COMPOSE / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    worker_sd = jobs["flowfleet-worker"]["dns_sd_configs"][0]
    assert worker_sd["names"] == ["worker"] and worker_sd["type"] == "A"
    assert str(worker_sd["port"]) == arg_after(s["worker"]["command"], "--port")
    control = jobs["flowfleet-control"]
    port = arg_after(s["control"]["command"], "--port")
    assert control["static_configs"][0]["targets"] == [f"control:{port}"]
    token_file = control["authorization"]["credentials_file"]
    assert token_file == "/run/secrets/prometheus_token"
    assert "prometheus_token" in s["prometheus"]["secrets"]
    assert "./prometheus.yml:/etc/prometheus/prometheus.yml:ro" in s["prometheus"]["volumes"]


def dashboard() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((COMPOSE / "grafana" / "dashboards" / "flowfleet.json").read_text())
    return doc


def test_grafana_is_provisioned_with_the_fleet_dashboard() -> None:
    s = services()
    mounts = {v.split(":")[0]: v.split(":")[1] for v in s["grafana"]["volumes"]}
    assert mounts["./grafana/provisioning"] == "/etc/grafana/provisioning"
    provider = load((COMPOSE / "grafana/provisioning/dashboards/flowfleet.yml").read_text())
    assert provider["providers"][0]["options"]["path"] == mounts["./grafana/dashboards"]
    datasource = load((COMPOSE / "grafana/provisioning/datasources/prometheus.yml").read_text())
    source = datasource["datasources"][0]
    assert source["url"] == "http://prometheus:9090" and source["type"] == "prometheus"
    panels = dashboard()["panels"]
    assert {p["datasource"]["uid"] for p in panels} == {source["uid"]}
    assert "GF_SECURITY_ADMIN_PASSWORD__FILE" in s["grafana"]["environment"]


def exported_series() -> set[str]:
    """Every series name a control plane or a replica can export, from real registry renders: a counter
    `c` as `c_total`, a histogram `h` as `h_bucket`, `h_sum` and `h_count`, anything else as is."""
    from control.metrics import ControlMetrics
    from worker.metrics import WorkerMetrics

    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count")}
    series: set[str] = set()
    for metrics in (ControlMetrics(), WorkerMetrics()):
        for name, kind in re.findall(r"^# TYPE (\S+) (\S+)", metrics.render().decode(), re.M):
            if kind == "counter":
                name = name.removesuffix("_total")  # TYPE names a counter with or without _total
            series |= {name + suffix for suffix in suffixes.get(kind, ("",))}
    return series


def dashboard_metrics(doc: dict[str, Any]) -> set[str]:
    """The metric names in every panel expression and template-variable query of a dashboard."""
    exprs = [t["expr"] for p in doc["panels"] for t in p.get("targets", [])]
    exprs += [v["definition"] for v in doc.get("templating", {}).get("list", []) if "definition" in v]
    return {m for expr in exprs for m in re.findall(r"\bflowfleet_[a-z_]+", expr)}


def test_every_dashboard_metric_is_exported_by_the_code() -> None:
    series = exported_series()
    assert {"flowfleet_control_rollouts_total", "flowfleet_control_rollout_ack_seconds_bucket"} <= series
    assert {"flowfleet_session_pins_total", "flowfleet_workflow_version_info"} <= series
    doc = dashboard()
    unknown = dashboard_metrics(doc) - series
    assert not unknown, (
        f"the dashboard uses metrics neither the control plane nor a replica exports: {unknown}"
    )
    # The check fails on a panel that names a metric the code does not export (a typo, a renamed metric).
    doc["panels"][0]["targets"][0]["expr"] = "sum(rate(flowfleet_control_rollout_nack_total[5m]))"
    assert dashboard_metrics(doc) - series == {"flowfleet_control_rollout_nack_total"}


def test_dashboard_panels_have_unique_ids_and_do_not_overlap() -> None:
    panels = dashboard()["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    grids = [p["gridPos"] for p in panels]
    cells = [(g["x"] + dx, g["y"] + dy) for g in grids for dx in range(g["w"]) for dy in range(g["h"])]
    assert len(cells) == len(set(cells))
    assert all(g["x"] + g["w"] <= 24 for g in grids)


def test_dashboard_charts_reloads_versions_errors_latency_and_error_rate() -> None:
    exprs = {p["title"]: " ".join(t["expr"] for t in p["targets"]) for p in dashboard()["panels"]}
    needed = {
        "reloads per replica": ("flowfleet_workflow_reload_total", "instance"),
        "loaded version per replica": ("flowfleet_workflow_version_info", "instance"),
        "reload errors": ("flowfleet_reload_errors_total", "reason"),
        "latency by version": ("flowfleet_flow_run_duration_seconds_bucket", "version"),
        "error rate by version": ('outcome!="ok"', "version"),
    }
    for what, (metric, label) in needed.items():
        assert any(metric in e and label in e for e in exprs.values()), f"no panel for {what}"


def test_dashboard_charts_rollouts_canaries_and_session_pins() -> None:
    exprs = [" ".join(t["expr"] for t in p["targets"]) for p in dashboard()["panels"]]
    needed = {
        "rollouts by result": ("flowfleet_control_rollouts_total", "by (result)"),
        "prepare-to-last-ACK time": ("flowfleet_control_rollout_ack_seconds_bucket", "histogram_quantile"),
        "NACKs by reason": ("flowfleet_control_rollout_nacks_total", "by (reason)"),
        "replicas per flow generation": ("flowfleet_control_replicas", "by (flow, generation)"),
        "automatic rollbacks by result": ("flowfleet_control_auto_rollbacks_total", "by (result)"),
        "canary changes": ("flowfleet_control_canary_changes_total", "by (action, actor, result)"),
        "session pins by result": ("flowfleet_session_pins_total", "result"),
    }
    for what, (metric, grouping) in needed.items():
        assert any(metric in e and grouping in e for e in exprs), f"no panel for {what}"


def test_worker_metrics_named_as_documented() -> None:
    from worker.metrics import WorkerMetrics

    exported = set(re.findall(r"^# TYPE (\S+) (\S+)", WorkerMetrics().render().decode(), re.M))
    # Depending on the prometheus-client version, a counter's TYPE line names it with or without _total.
    names = {f"{name.removesuffix('_total')}_total" if kind == "counter" else name for name, kind in exported}
    assert WORKER_METRICS <= names, WORKER_METRICS - names


def test_dockerfile_is_slim_non_root_and_health_checked() -> None:
    text = (COMPOSE / "Dockerfile").read_text()
    assert re.findall(r"^FROM (\S+)", text, re.M) == ["python:3.11-slim", "python:3.11-slim"]
    users = re.findall(r"^USER (\S+)", text, re.M)
    assert users and users[-1].split(":")[0] not in ("0", "root")
    health = re.search(r"^HEALTHCHECK .*\n(?:.*\\\n)*.*CMD \[(.*)\]", text, re.M)
    assert health and '"python"' in health.group(1) and "/healthz" in health.group(1)
    assert "pip install --no-index --find-links /wheels flowfleet" in text
    for package in ("cluster", "control", "worker"):
        assert f"COPY {package} ./{package}" in text


def test_compose_config_accepted_by_docker_compose_when_installed(tmp_path: Path) -> None:
    """With the compose plugin the real parser must accept the file; without it, say so and rely on the
    structural checks above (no engine is needed either way: `config` only parses)."""
    docker = shutil.which("docker")
    probe = subprocess.run([docker, "compose", "version"], capture_output=True) if docker else None
    if probe is None or probe.returncode != 0:
        print("docker compose plugin not installed: compose file checked structurally only")
        assert services()
        return
    out = subprocess.run(
        [docker, "compose", "-f", str(COMPOSE / "docker-compose.yml"), "--env-file",
         str(COMPOSE / ".env.example"), "config", "--format", "json"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    config = json.loads(out.stdout)
    assert set(config["services"]) == set(services())
    assert config["services"]["worker"]["deploy"]["replicas"] == 3


# -- Redis ACL ----------------------------------------------------------------------------------------
def acl_rules() -> dict[str, list[str]]:
    rules: dict[str, list[str]] = {}
    for line in (COMPOSE / "redis" / "users.acl").read_text().splitlines():
        if line.strip():
            keyword, user, *rest = line.split()
            assert keyword == "user"
            rules[user] = rest
    return rules


def patterns(rules: list[str]) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {"read": set(), "readwrite": set(), "write": set(), "channels": set()}
    for rule in rules:
        if rule.startswith("%R~"):
            found["read"].add(rule[3:])
        elif rule.startswith("%W~"):
            found["write"].add(rule[3:])
        elif rule.startswith(("~", "%RW~")):
            found["readwrite"].add(rule.split("~", 1)[1])
        elif rule.startswith("&"):
            found["channels"].add(rule[1:])
    return found


def sample_keys(flow: str) -> dict[str, str]:
    digest = "ab" * 32
    return {
        "flows": KEYS.flows(),
        "audit": KEYS.audit(),
        "release": KEYS.release(flow),
        "history": KEYS.history(flow),
        "versions": KEYS.versions(flow),
        "blob": KEYS.blob(flow, digest),
        "meta": KEYS.meta(flow, digest),
        "flow_audit": KEYS.flow_audit(flow),
    }


def matches(key: str, globs: set[str]) -> bool:
    return any(fnmatch.fnmatchcase(key, glob) for glob in globs)


@pytest.mark.parametrize("flow", ["support_qa", "replica", "replicas", "a.b-c", "x" * 128])
def test_worker_acl_reads_every_key_and_writes_only_status_and_session_pins(flow: str) -> None:
    worker = patterns(acl_rules()["worker"])
    assert worker["read"] == {KEYS.all_pattern()}
    assert worker["readwrite"] == {
        KEYS.replica_pattern(),
        KEYS.replicas(),
        KEYS.session_pattern(),
        *KEYS.conversation_patterns(),
    }
    assert worker["channels"] == {KEYS.channel()} and not worker["write"]
    for what, key in sample_keys(flow).items():
        assert matches(key, worker["read"]), f"worker cannot read {what} {key}"
        assert not matches(key, worker["readwrite"]), f"worker may write {what} {key}"
    for status in (KEYS.replica("web-1"), KEYS.replica("host-12:34"), KEYS.replicas()):
        assert matches(status, worker["readwrite"])
    assert matches(KEYS.session(flow, "chat-42"), worker["readwrite"])
    assert matches(KEYS.conversation(flow, "-", "chat-42"), worker["readwrite"])
    assert matches(KEYS.conversations(flow), worker["readwrite"])


def test_worker_acl_commands_exclude_writes_scripts_and_publish() -> None:
    rules = acl_rules()["worker"]
    assert rules[:4] == ["on", rules[1], "resetkeys", "resetchannels"] and rules[4] == "-@all"
    allowed = {r[1:] for r in rules if r.startswith("+")}
    assert not {a for a in allowed if a.startswith("@")}, "worker gets single commands, not categories"
    forbidden = {
        "del",
        "unlink",
        "hset",
        "publish",
        "eval",
        "evalsha",
        "script",
        "flushall",
        "keys",
        "config",
    }
    assert not allowed & forbidden
    assert {"get", "hgetall", "smembers", "set", "getex", "zadd", "subscribe", "ping"} <= allowed


def test_control_and_default_acl() -> None:
    rules = acl_rules()
    control = patterns(rules["control"])
    assert control["readwrite"] == {KEYS.all_pattern()} and control["channels"] == {KEYS.channel()}
    assert "-@dangerous" in rules["control"] and "resetkeys" in rules["control"]
    # Nobody can log in as default (off, no password), yet it keeps every permission: Redis 7.0 replays
    # MULTI/EXEC blocks from the AOF with the default user's rights, and a default user without them
    # silently drops every activation when Redis restarts (see test_redis_acl.py).
    assert rules["default"] == ["off", "resetpass", "resetkeys", "resetchannels", "+@all", "~*", "&*"]
    for user in ("worker", "control"):
        assert re.fullmatch(rf"#__{user.upper()}_PASSWORD_SHA256__", rules[user][1])


# -- Kubernetes ---------------------------------------------------------------------------------------
def manifests() -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for path in sorted((COMPOSE / "k8s").glob("*.yaml")):
        if path.name != "kustomization.yaml":
            docs.extend(load_all(path.read_text()))
    return docs


def find(kind: str, name: str) -> dict[str, Any]:
    return next(d for d in manifests() if d["kind"] == kind and d["metadata"]["name"] == name)


def test_k8s_worker_deployment_drains_before_it_stops() -> None:
    spec = find("Deployment", "flowfleet-worker")["spec"]
    assert spec["replicas"] == 3
    pod = spec["template"]["spec"]
    (container,) = pod["containers"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    pre_stop = " ".join(container["lifecycle"]["preStop"]["exec"]["command"])
    sleep_s = float(re.search(r"sleep\((\d+(?:\.\d+)?)\)", pre_stop).group(1))  # type: ignore[union-attr]
    env = {e["name"]: e for e in container["env"]}
    grace = float(env["FLOWFLEET_SHUTDOWN_GRACE_S"]["value"])
    assert pod["terminationGracePeriodSeconds"] > sleep_s + grace
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert {"requests", "limits"} <= set(container["resources"])
    annotations = spec["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(container["ports"][0]["containerPort"])
    assert env["FLOWFLEET_REDIS_URL"]["value"].startswith("redis://worker:$(REDIS_PASSWORD)@")
    assert env["FLOWFLEET_REPLICA_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"


@pytest.mark.parametrize("name", ["flowfleet-worker", "flowfleet-control"])
def test_k8s_services_select_their_pods(name: str) -> None:
    deployment = find("Deployment", name)
    service = find("Service", name)
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    port_names = {p["name"] for p in container["ports"]}
    assert {p["targetPort"] for p in service["spec"]["ports"]} <= port_names


def test_k8s_secret_holds_every_referenced_key_and_no_configmap_holds_flows() -> None:
    docs = manifests()
    assert not [d for d in docs if d["kind"] == "ConfigMap"]
    secret = find("Secret", "flowfleet")
    refs: set[str] = set()
    for d in docs:
        if d["kind"] != "Deployment":
            continue
        pod = d["spec"]["template"]["spec"]
        for container in pod["containers"]:
            for env in container.get("env", []):
                ref = env.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert ref["name"] == "flowfleet"
                    refs.add(ref["key"])
        for volume in pod.get("volumes", []):
            if "secret" in volume:
                refs |= {item["key"] for item in volume["secret"]["items"]}
    assert refs == set(secret["stringData"])
    placeholders = [v for k, v in secret["stringData"].items() if k != "tokens.json"]
    assert all(v.startswith("REPLACE-ME") for v in placeholders)
    kustomization = load((COMPOSE / "k8s" / "kustomization.yaml").read_text())
    on_disk = {p.name for p in (COMPOSE / "k8s").glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == on_disk


# -- the front door -----------------------------------------------------------------------------------
def test_make_up_runs_flowfleet_up_and_state_is_ignored() -> None:
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^up: \$\(STAMP\)\n\t\$\(BIN\)/flowfleet up", makefile, re.M)
    ignored = (ROOT / ".gitignore").read_text().splitlines()
    assert {"/.flowfleet/", "compose/.env", "compose/secrets/"} <= set(ignored)


def test_nginx_passes_every_api_s_streams_through_unbuffered() -> None:
    conf = (COMPOSE / "nginx.conf").read_text()
    blocks = re.findall(r"location ~ (\S+) \{(.*?)\}", conf, re.S)
    unbuffered = [re.compile(pattern) for pattern, body in blocks if "proxy_buffering off;" in body]
    paths = ["/v1/flows/qa/run", "/api/v1/run/qa", "/v1/chat/completions", "/v1/responses"]
    for path in paths:
        assert any(p.match(path) for p in unbuffered), path
    assert not any(p.match("/v1/flows/qa") for p in unbuffered)
