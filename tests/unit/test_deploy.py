"""
The packaging, checked offline (issue 16, item 4): the ``Dockerfile``,
the Kubernetes manifests of ``deploy/kubernetes/`` and the systemd unit
``deploy/systemd/dynomite@.service``.

Docker is not run here: the Dockerfile is parsed and its instructions
checked (a non-root USER, EXPOSE = the ports of the example configs, a
HEALTHCHECK on /ping, ``twistd -n dynomite`` as the command, every COPY
source present).  Every manifest is validated against the Kubernetes API
schemas bundled with ``kubernetes-validate`` (strict: no unknown field),
and the references between them are followed: selectors against pod
labels, ConfigMap names and keys, probe and scrape ports against the
config each pod renders, which is loaded with dynomite's own loader
(``dynomite.config``).  The unit goes through ``systemd-analyze verify``
where it exists, and is parsed in any case.
"""

from __future__ import annotations

import configparser
import glob
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from typing import Any, Dict, List, Tuple

import kubernetes_validate
import yaml
from twisted.trial.unittest import SkipTest, SynchronousTestCase

from dynomite.config.model import NodeConfig
from dynomite.peers.seeds import srv_seeds

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DOCKERFILE = os.path.join(ROOT, "Dockerfile")
KUBERNETES = os.path.join(ROOT, "deploy", "kubernetes")
RENDER = os.path.join(ROOT, "deploy", "docker", "render-config.sh")
ENTRYPOINT = os.path.join(ROOT, "deploy", "docker", "entrypoint.sh")
IMAGE_CONFIG = os.path.join(ROOT, "deploy", "docker", "dynomite.yml")
UNIT = os.path.join(ROOT, "deploy", "systemd", "dynomite@.service")
#: Native sidecars (an init container with restartPolicy: Always) need 1.29; and the newest schemas.
KUBERNETES_VERSIONS = ("1.29.0", kubernetes_validate.latest_version())
RING = 2 ** 32

def graceful_stop_bound(config: NodeConfig) -> float:
    """Seconds a SIGTERM'd node may take: clients (timeout), forwarded writes (timeout), peers (peer_down_after)."""
    return 2 * config.timeout + config.peer_down_after


def load_config(path: str) -> NodeConfig:
    """``path`` through dynomite's own loader: every key the deploy files set must be one it knows."""
    return NodeConfig.from_yaml(path)


# -- Dockerfile ----------------------------------------------------------------


def dockerfile_instructions(path: str) -> List[Tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments left out."""
    out: List[Tuple[str, str]] = []
    pending = ""
    with open(path) as f:
        for raw in f:
            line = raw.rstrip("\n")
            if not pending and (not line.strip() or line.lstrip().startswith("#")):
                continue
            if line.lstrip().startswith("#"):
                continue
            if line.endswith("\\"):
                pending += line[:-1] + " "
                continue
            line, pending = pending + line, ""
            word, _, rest = line.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def exec_form(args: str) -> List[str]:
    """A JSON (exec form) argument list; shell form is refused."""
    value = json.loads(args)
    if not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
        raise ValueError(f"not an exec-form list: {args}")
    return value


class DockerfileTests(SynchronousTestCase):
    """The image: non-root, the example ports, a health check on /ping, twistd -n dynomite."""

    def setUp(self) -> None:
        self.instructions = dockerfile_instructions(DOCKERFILE)
        self.by_name: Dict[str, List[str]] = {}
        for name, args in self.instructions:
            self.by_name.setdefault(name, []).append(args)

    def test_starts_from_a_python_or_debian_base(self) -> None:
        self.assertEqual(self.instructions[0][0], "FROM")
        self.assertRegex(self.instructions[0][1], r"^(python:3\.\d+-slim|debian:)")

    def test_runs_as_a_non_root_user(self) -> None:
        users = self.by_name.get("USER", [])
        self.assertTrue(users, "no USER instruction: the image would run as root")
        user = users[-1].split(":")[0]
        self.assertNotIn(user, ("root", "0"))
        # Numeric, so Kubernetes' runAsNonRoot can check it without /etc/passwd.
        self.assertTrue(user.isdigit(), f"USER {user!r}")
        last_user = max(i for i, (n, _) in enumerate(self.instructions) if n == "USER")
        for name, args in self.instructions[last_user:]:
            self.assertNotEqual(name, "RUN", f"RUN after USER runs as the node's user: {args}")

    def test_exposes_the_ports_of_the_example_configs(self) -> None:
        exposed = {int(p.split("/")[0]) for args in self.by_name["EXPOSE"] for p in args.split()}
        for path in (os.path.join(ROOT, "etc", "dynomite.yml"), IMAGE_CONFIG):
            config = load_config(path)
            ports = {config.listen.port, config.dyn_listen.port, config.stats_listen.port}
            self.assertEqual(exposed, ports, path)

    def test_health_check_asks_ping_on_the_stats_port(self) -> None:
        (check,) = self.by_name["HEALTHCHECK"]
        stats = load_config(IMAGE_CONFIG).stats_listen
        self.assertIn(f":{stats.port}/ping", check)
        argv = exec_form(check.split("CMD", 1)[1].strip())
        self.assertTrue(argv[0] in ("python", "python3", "curl", "wget"), argv)

    def test_command_is_twistd_in_the_foreground_with_the_image_config(self) -> None:
        argv = exec_form(self.by_name["CMD"][-1])
        self.assertEqual(argv[0], "twistd")
        self.assertIn("-n", argv)
        self.assertIn("dynomite", argv)
        config_path = argv[argv.index("-c") + 1]
        self.assertLess(argv.index("-n"), argv.index("dynomite"))
        copied = {shlex.split(a)[-1]: shlex.split(a)[0] for a in self.by_name["COPY"]}
        self.assertEqual(copied.get(config_path), "deploy/docker/dynomite.yml")
        self.assertEqual(self.by_name.get("STOPSIGNAL"), ["SIGTERM"])

    def test_copy_sources_exist_and_scripts_are_executable(self) -> None:
        for args in self.by_name["COPY"]:
            for source in shlex.split(args)[:-1]:
                self.assertTrue(os.path.exists(os.path.join(ROOT, source)), f"COPY {source}: missing")
        (entry,) = self.by_name["ENTRYPOINT"]
        target = exec_form(entry)[0]
        copied = {shlex.split(a)[-1]: shlex.split(a)[0] for a in self.by_name["COPY"]}
        self.assertIn(target, copied)
        for script in (ENTRYPOINT, RENDER):
            self.assertTrue(os.access(script, os.X_OK), script)
            subprocess.run(["sh", "-n", script], check=True)

    def test_installs_redis_server(self) -> None:
        self.assertTrue(any("redis-server" in args for args in self.by_name["RUN"]))


# -- Kubernetes ----------------------------------------------------------------


def manifests() -> List[Tuple[str, Dict[str, Any]]]:
    """(file name, document) for every document of every deploy/kubernetes/*.yaml."""
    out = []
    for path in sorted(glob.glob(os.path.join(KUBERNETES, "*.yaml"))):
        with open(path) as f:
            out.extend((os.path.basename(path), d) for d in yaml.safe_load_all(f) if d)
    return out


def matches(selector: Dict[str, Any], labels: Dict[str, str]) -> bool:
    """A label selector (matchLabels and matchExpressions, or a Service's plain map) against labels."""
    plain = selector.get("matchLabels", selector if "matchExpressions" not in selector else {})
    if any(labels.get(k) != v for k, v in plain.items() if k != "matchExpressions"):
        return False
    for expr in selector.get("matchExpressions", []):
        value, op = labels.get(expr["key"]), expr["operator"]
        if op == "In" and value not in expr["values"]:
            return False
        if op == "NotIn" and value in expr["values"]:
            return False
    return True


def container_port(container: Dict[str, Any], port: Any) -> int:
    """A probe's port (a number, or the name of one of the container's ports)."""
    if isinstance(port, int):
        return port
    for p in container.get("ports", []):
        if p.get("name") == port:
            return p["containerPort"]
    raise AssertionError(f"container {container['name']} has no port named {port!r}")


def env_of(container: Dict[str, Any]) -> Dict[str, str]:
    return {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}


class KubernetesTests(SynchronousTestCase):
    """The manifests: valid against the API schemas, and consistent with each other and the config."""

    def setUp(self) -> None:
        self.docs = manifests()
        self.kinds: Dict[str, List[Dict[str, Any]]] = {}
        for _, doc in self.docs:
            self.kinds.setdefault(doc["kind"], []).append(doc)
        self.statefulsets = self.kinds["StatefulSet"]

    def test_every_manifest_is_valid_for_the_api(self) -> None:
        self.assertGreaterEqual(len(self.docs), 7)
        for name, doc in self.docs:
            for version in KUBERNETES_VERSIONS:
                try:
                    kubernetes_validate.validate(doc, version, strict=True)
                except kubernetes_validate.ValidationError as e:
                    self.fail(f"{name}: {doc['kind']}/{doc['metadata']['name']} invalid for {version}: {e.message}")

    def test_one_statefulset_per_rack_behind_the_headless_service(self) -> None:
        racks = sorted(s["spec"]["template"]["metadata"]["labels"]["dynomite.io/rack"] for s in self.statefulsets)
        self.assertEqual(racks, ["rack1", "rack2", "rack3"])
        headless = [s for s in self.kinds["Service"] if s["spec"].get("clusterIP") == "None"]
        self.assertEqual(len(headless), 1)
        service = headless[0]
        self.assertIs(service["spec"].get("publishNotReadyAddresses"), True)
        for sts in self.statefulsets:
            spec = sts["spec"]
            labels = spec["template"]["metadata"]["labels"]
            self.assertEqual(spec["serviceName"], service["metadata"]["name"])
            self.assertTrue(matches(spec["selector"], labels), sts["metadata"]["name"])
            self.assertTrue(matches(service["spec"]["selector"], labels))
            self.assertEqual(spec["podManagementPolicy"], "Parallel",
                             "OrderedReady waits for pod 0 to be ready, which needs its peers")
            for other in self.statefulsets:
                if other is not sts:
                    self.assertFalse(matches(spec["selector"], other["spec"]["template"]["metadata"]["labels"]))

    def test_services_reach_named_container_ports(self) -> None:
        for service in self.kinds["Service"]:
            for sts in self.statefulsets:
                (node,) = sts["spec"]["template"]["spec"]["containers"]
                for port in service["spec"]["ports"]:
                    self.assertEqual(container_port(node, port["targetPort"]), port["port"], port)

    def test_disruption_budget_covers_every_pod_one_at_a_time(self) -> None:
        (pdb,) = self.kinds["PodDisruptionBudget"]
        self.assertEqual(pdb["spec"].get("maxUnavailable"), 1)
        for sts in self.statefulsets:
            self.assertTrue(matches(pdb["spec"]["selector"], sts["spec"]["template"]["metadata"]["labels"]))

    def test_racks_keep_to_their_zones(self) -> None:
        for sts in self.statefulsets:
            pod = sts["spec"]["template"]
            rack = pod["metadata"]["labels"]["dynomite.io/rack"]
            terms = pod["spec"]["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
            zone = [t for t in terms if t["topologyKey"] == "topology.kubernetes.io/zone"]
            self.assertEqual(len(zone), 1, sts["metadata"]["name"])
            for other in self.statefulsets:
                labels = other["spec"]["template"]["metadata"]["labels"]
                self.assertEqual(matches(zone[0]["labelSelector"], labels),
                                 labels["dynomite.io/rack"] != rack, (rack, labels))
            spread = pod["spec"]["topologySpreadConstraints"]
            self.assertTrue(any(c["topologyKey"] == "kubernetes.io/hostname"
                                and matches(c["labelSelector"], pod["metadata"]["labels"]) for c in spread))

    def test_volumes_name_existing_configmaps_and_keys(self) -> None:
        configmaps = {c["metadata"]["name"]: c for c in self.kinds["ConfigMap"]}
        for sts in self.statefulsets:
            pod = sts["spec"]["template"]["spec"]
            volumes = {v["name"]: v for v in pod["volumes"]}
            claims = {c["metadata"]["name"] for c in sts["spec"].get("volumeClaimTemplates", [])}
            for container in pod["initContainers"] + pod["containers"]:
                for mount in container.get("volumeMounts", []):
                    self.assertTrue(mount["name"] in volumes or mount["name"] in claims, mount)
            for volume in volumes.values():
                if "configMap" in volume:
                    self.assertIn(volume["configMap"]["name"], configmaps)

    def render(self, sts: Dict[str, Any], ordinal: int, tmp: str) -> Tuple[NodeConfig, Dict[str, Any]]:
        """The config the init container of ``sts`` renders for pod ``ordinal``, loaded by dynomite."""
        pod = sts["spec"]["template"]["spec"]
        (init,) = [c for c in pod["initContainers"] if c["name"] == "config"]
        template_path, output = init["command"][1], init["command"][2]
        mounts = {m["mountPath"]: m["name"] for m in init["volumeMounts"]}
        volume = {v["name"]: v for v in pod["volumes"]}[mounts[os.path.dirname(template_path)]]
        (configmap,) = [c for c in self.kinds["ConfigMap"] if c["metadata"]["name"] == volume["configMap"]["name"]]
        source = os.path.join(tmp, "template")
        with open(source, "w") as f:
            f.write(configmap["data"][os.path.basename(template_path)])
        target = os.path.join(tmp, os.path.basename(output))
        env = dict(env_of(init), POD_NAME=f"{sts['metadata']['name']}-{ordinal}", POD_NAMESPACE="prod",
                   PATH=os.environ.get("PATH", "/usr/bin:/bin"))
        subprocess.run(["sh", RENDER, source, target], env=env, check=True, stdout=subprocess.DEVNULL)
        with open(target) as f:
            raw = yaml.safe_load(f)
        return load_config(target), next(iter(raw.values()))

    def test_each_pod_renders_a_config_dynomite_loads(self) -> None:
        tmp = tempfile.mkdtemp(dir=os.getcwd())
        headless = [s for s in self.kinds["Service"] if s["spec"].get("clusterIP") == "None"][0]
        service = headless["metadata"]["name"]
        pods = {}
        for sts in self.statefulsets:
            labels = sts["spec"]["template"]["metadata"]["labels"]
            replicas = sts["spec"]["replicas"]
            self.assertEqual(env_of(sts["spec"]["template"]["spec"]["initContainers"][0])["RACK_SIZE"], str(replicas))
            for ordinal in range(replicas):
                config, raw = self.render(sts, ordinal, tmp)
                name = f"{sts['metadata']['name']}-{ordinal}"
                self.assertEqual((config.datacenter, config.rack),
                                 (labels["dynomite.io/datacenter"], labels["dynomite.io/rack"]))
                self.assertEqual(config.tokens, (ordinal * (RING // replicas),))
                self.assertEqual(raw["dyn_advertise"], f"{name}.{service}.prod.svc.cluster.local:{config.dyn_listen.port}")
                pods[name] = (sts, config, raw)
        # What Kubernetes DNS answers for the headless Service's peer port: one SRV record per pod.
        (peer_port,) = [p for p in headless["spec"]["ports"] if p["name"] == "peer"]
        srv_name = f"_{peer_port['name']}._tcp.{service}.prod.svc.cluster.local"
        answer = [(f"{name}.{service}.prod.svc.cluster.local.", peer_port["port"]) for name in pods]
        for name, (sts, config, raw) in pods.items():
            self.assertEqual((config.seed_provider, config.dns_seed_type, config.dns_seed_name),
                             ("dns_provider", "srv", srv_name), name)
            self.assertEqual(config.dyn_seeds, (), name)
            # Every pod, itself included, is read from that answer as the place and token it renders for itself.
            found = sorted(f"{s.address}:{s.rack}:{s.datacenter}:{s.tokens[0]}"
                           for s in srv_seeds(answer, config.dns_seed_rack_size))
            expected = sorted(f"{c_raw['dyn_advertise']}:{c.rack}:{c.datacenter}:{c.tokens[0]}"
                              for _, c, c_raw in pods.values())
            self.assertEqual(found, expected, name)
            self.check_pod_against_config(sts, config)

    def check_pod_against_config(self, sts: Dict[str, Any], config: NodeConfig) -> None:
        pod = sts["spec"]["template"]
        (node,) = pod["spec"]["containers"]
        stats = config.stats_listen.port
        self.assertEqual(node["readinessProbe"]["httpGet"]["path"], "/ready")
        self.assertEqual(container_port(node, node["readinessProbe"]["httpGet"]["port"]), stats)
        self.assertEqual(node["livenessProbe"]["httpGet"]["path"], "/ping")
        self.assertEqual(container_port(node, node["livenessProbe"]["httpGet"]["port"]), stats)
        self.assertEqual(pod["metadata"]["annotations"]["prometheus.io/port"], str(stats))
        self.assertEqual(pod["metadata"]["annotations"]["prometheus.io/path"], "/metrics")
        ports = {p["containerPort"] for p in node["ports"]}
        self.assertEqual(ports, {config.listen.port, config.dyn_listen.port, stats})
        for address in (config.listen, config.dyn_listen, config.stats_listen):
            self.assertEqual(address.host, "0.0.0.0", "probes and peers come from outside the pod")
        self.assertEqual(node["args"][:2], ["twistd", "-n"])
        self.assertIn("dynomite", node["args"])
        self.assertEqual(env_of(node).get("DYNOMITE_LOCAL_REDIS"), "0")
        (redis,) = [c for c in pod["spec"]["initContainers"] if c["name"] == "redis"]
        self.assertEqual(redis.get("restartPolicy"), "Always", "a sidecar outlives the node's graceful stop")
        argv = redis["command"]
        self.assertEqual((argv[argv.index("--bind") + 1], int(argv[argv.index("--port") + 1])),
                         (config.datastore.host, config.datastore.port))
        mounts = {m["mountPath"]: m["name"] for m in node["volumeMounts"]}
        self.assertIn(mounts.get(node["workingDir"]), {c["metadata"]["name"] for c in sts["spec"]["volumeClaimTemplates"]})
        self.assertTrue(config.data_dir.startswith(node["workingDir"]), "hints on the persistent volume")
        grace = pod["spec"]["terminationGracePeriodSeconds"]
        self.assertGreater(grace, graceful_stop_bound(config), "SIGKILL before the graceful stop can end")
        security = pod["spec"]["securityContext"]
        self.assertIs(security["runAsNonRoot"], True)
        self.assertNotEqual(security["runAsUser"], 0)

    def test_render_refuses_a_pod_beyond_the_rack_size(self) -> None:
        tmp = tempfile.mkdtemp(dir=os.getcwd())
        template = os.path.join(tmp, "t")
        with open(template, "w") as f:
            f.write("tokens: '@TOKENS@'\n")
        env = {"POD_NAME": "dynomite-dc1-rack1-2", "POD_NAMESPACE": "ns", "RACK_SIZE": "2",
               "DYNOMITE_DC": "dc1", "DYNOMITE_RACK": "rack1", "PATH": os.environ.get("PATH", "/usr/bin:/bin")}
        proc = subprocess.run(["sh", RENDER, template, os.path.join(tmp, "out")], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.assertNotEqual(proc.returncode, 0)
        self.assertIn("ordinal 2 is not below RACK_SIZE 2", proc.stderr)
        self.assertFalse(os.path.exists(os.path.join(tmp, "out")))


# -- systemd -------------------------------------------------------------------


def read_unit(path: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None, delimiters=("=",))
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    with open(path) as f:
        parser.read_file(f)
    return parser


def seconds(text: str) -> float:
    """A systemd time span of the simple kinds used here: 30, 30s, 1min, 1min 30s."""
    total, units = 0.0, {"": 1, "s": 1, "sec": 1, "min": 60, "m": 60, "ms": 0.001}
    for number, unit in re.findall(r"(\d+)\s*([a-z]*)", text):
        total += int(number) * units[unit]
    return total


class SystemdUnitTests(SynchronousTestCase):
    """deploy/systemd/dynomite@.service: one node per config name, restarted, stopped gracefully."""

    def setUp(self) -> None:
        self.unit = read_unit(UNIT)
        self.service = self.unit["Service"]

    def test_runs_one_node_per_config_name_as_a_non_root_user(self) -> None:
        argv = shlex.split(self.service["ExecStart"])
        self.assertTrue(argv[0].endswith("/twistd"))
        self.assertIn("-n", argv)
        self.assertEqual(argv[argv.index("dynomite") + 1:], ["-c", "/etc/dynomite/%i.yml"])
        self.assertNotIn(self.service.get("User", "root"), ("root", "0"))
        self.assertIn("%i", self.service["WorkingDirectory"])

    def test_restarts_and_stops_with_sigterm_within_the_graceful_bound(self) -> None:
        self.assertIn(self.service["Restart"], ("on-failure", "always", "on-abnormal"))
        self.assertEqual(self.service["KillSignal"], "SIGTERM")
        self.assertEqual(self.service["ExecReload"], "/bin/kill -HUP $MAINPID")
        defaults = load_config(os.path.join(ROOT, "etc", "dynomite.yml"))
        self.assertGreater(seconds(self.service["TimeoutStopSec"]), graceful_stop_bound(defaults))
        self.assertEqual(self.unit["Install"]["WantedBy"], "multi-user.target")

    def test_systemd_analyze_verify(self) -> None:
        """The unit as systemd reads it: no unknown key, no bad value (ExecStart pointed at this twistd)."""
        analyze = shutil.which("systemd-analyze")
        if analyze is None:
            raise SkipTest("systemd-analyze is not installed and tools/ensure-test-tools could not install it"
                           " (no root or apt-get); the parse tests above still ran")
        tmp = tempfile.mkdtemp(dir=os.getcwd())
        twistd = shutil.which("twistd") or os.path.join(os.path.dirname(sys.executable), "twistd")
        with open(UNIT) as f:
            text = f.read().replace("/opt/dynomite/bin/twistd", twistd)
        with open(os.path.join(tmp, "dynomite@.service"), "w") as f:
            f.write(text)
        proc = subprocess.run([analyze, "verify", os.path.join(tmp, "dynomite@node1.service")], cwd=tmp,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        problems = [line for line in proc.stdout.splitlines() if "dynomite@" in line]
        self.assertEqual((proc.returncode, problems), (0, []), proc.stdout)
