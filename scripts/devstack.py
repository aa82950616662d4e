"""The distributed profile's dev stack: Apache Cassandra 5.0 and JanusGraph 1.1, assembled from
Maven Central jars and run single-node on loopback.

    .venv/bin/python scripts/devstack.py up [--data-dir .lily-dist] [--only cassandra]
    .venv/bin/python scripts/devstack.py down [--data-dir .lily-dist]

`up` copies each server's jars (the poms in scripts/maven/) into a cache shared by every data
directory (LILY_CACHE_DIR, default ~/.cache/lily: a second start downloads nothing), writes its
configuration under the data directory, starts it on the JDK 17, waits until it answers a query
(Cassandra: CQL; JanusGraph: Gremlin) and prints its address. `down` stops what `up` started
(also what a killed `up` left behind: each server keeps a pid file). Heaps default to 1 GiB for
Cassandra and 768 MiB for JanusGraph (LILY_CASSANDRA_HEAP, LILY_JANUSGRAPH_HEAP)."""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
POMS = ROOT / "scripts" / "maven"
READY_TIMEOUT = 240.0


class DevStackError(RuntimeError):
    """A dev-stack server could not be assembled or started; the message says why."""


def _say(msg: str) -> None:
    print(f"devstack: {msg}", file=sys.stderr, flush=True)


def cache_dir() -> Path:
    return Path(os.environ.get("LILY_CACHE_DIR", Path.home() / ".cache" / "lily"))


def java() -> str:
    """The JDK 17 (Cassandra 5.0 does not run on much newer ones)."""
    home = os.environ.get("LILY_JAVA_HOME")
    candidates = [Path(home)] if home else sorted(Path("/usr/lib/jvm").glob("*17*"))
    for candidate in candidates:
        if (candidate / "bin" / "java").exists():
            return str(candidate / "bin" / "java")
    raise DevStackError("no JDK 17 found under /usr/lib/jvm; set LILY_JAVA_HOME")


def jars(name: str) -> Path:
    """The jars of scripts/maven/<name>.pom.xml, copied from Maven Central once and cached."""
    pom = POMS / f"{name}.pom.xml"
    target = cache_dir() / "maven" / f"{name}-{_pom_hash(pom)}"
    done = target / ".complete"
    if done.exists():
        return target / "lib"
    _say(f"assembling {name} from Maven Central into {target} (once) ...")
    target.mkdir(parents=True, exist_ok=True)
    run = subprocess.run(
        [
            "mvn",
            "-q",
            "-B",
            "-f",
            str(pom),
            "dependency:copy-dependencies",
            f"-DoutputDirectory={target / 'lib'}",
            "-DincludeScope=runtime",
        ],
        capture_output=True,
        text=True,
        timeout=1800,
    )
    if run.returncode != 0 or not any((target / "lib").glob("*.jar")):
        raise DevStackError(
            f"mvn could not assemble {name}:\n{run.stdout[-2000:]}{run.stderr[-2000:]}"
        )
    done.write_text("ok\n")
    return target / "lib"


def _pom_hash(pom: Path) -> str:
    import hashlib

    return hashlib.sha256(pom.read_bytes()).hexdigest()[:12]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class JavaServer:
    """One JVM server under data_dir/<name>, with a pid file and a log."""

    name: str
    data_dir: Path

    @property
    def home(self) -> Path:
        return self.data_dir / self.name

    @property
    def pid_file(self) -> Path:
        return self.home / "server.pid"

    @property
    def log_file(self) -> Path:
        return self.home / "server.log"

    def running_pid(self) -> int | None:
        try:
            pid = int(self.pid_file.read_text())
        except (OSError, ValueError):
            return None
        return pid if _alive(pid) else None

    def launch(self, command: list[str]) -> int:
        self.stop()  # a leftover from a killed run holds the ports and the data
        self.home.mkdir(parents=True, exist_ok=True)
        with open(self.log_file, "ab") as log:
            proc = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.home,
                start_new_session=True,  # Ctrl-C in a terminal goes to `lily`, which stops us
            )
        self.pid_file.write_text(str(proc.pid))
        return proc.pid

    def run(self, command: list[str], port: int) -> int:
        """Launches the server and waits until `probe` says it answers on `port`."""
        self.launch(command)
        deadline = time.monotonic() + READY_TIMEOUT
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self.running_pid() is None:
                raise DevStackError(f"{self.name} exited while starting:\n{self.log_tail()}")
            try:
                if self.probe(port):
                    (self.home / "port").write_text(str(port))
                    return port
            except Exception as exc:  # not up yet: the clients raise several types
                last = exc
            time.sleep(1.0)
        self.stop()
        raise DevStackError(f"{self.name} did not answer within {READY_TIMEOUT:.0f}s ({last})")

    def probe(self, port: int) -> bool:
        """Whether the server answers a query on `port` (an exception: not yet)."""
        raise NotImplementedError

    def stop(self, timeout: float = 60.0) -> None:
        pid = self.running_pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return
        _say(f"stopping {self.name} (pid {pid}) ...")
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and _alive(pid):
            time.sleep(0.2)
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)
        self.pid_file.unlink(missing_ok=True)

    def log_tail(self, lines: int = 30) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        return ""


def _accepts(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1.0)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"  # a zombie nobody reaped is gone for us
    except OSError:
        return False


# -- Cassandra ------------------------------------------------------------------------------

_CASSANDRA_YAML = """\
cluster_name: lily-dev
num_tokens: 1
partitioner: org.apache.cassandra.dht.Murmur3Partitioner
endpoint_snitch: SimpleSnitch
seed_provider:
  - class_name: org.apache.cassandra.locator.SimpleSeedProvider
    parameters:
      - seeds: "127.0.0.1:{storage_port}"
listen_address: 127.0.0.1
rpc_address: 127.0.0.1
storage_port: {storage_port}
native_transport_port: {port}
start_native_transport: true
data_file_directories:
  - {home}/data
commitlog_directory: {home}/commitlog
saved_caches_directory: {home}/saved_caches
hints_directory: {home}/hints
cdc_raw_directory: {home}/cdc_raw
commitlog_sync: periodic
commitlog_sync_period: 10000ms
commitlog_segment_size: 16MiB
auto_snapshot: false
default_secondary_index: sai
# Lily applies a transaction's rows in unlogged batches of up to 24 (~10-30 KB)
batch_size_warn_threshold: 64KiB
unlogged_batch_across_partitions_warn_threshold: 64
default_secondary_index_enabled: true
"""

_LOGBACK = """\
<configuration>
  <appender name="FILE" class="ch.qos.logback.core.FileAppender">
    <file>{home}/cassandra.log</file>
    <encoder><pattern>%d{{ISO8601}} %-5level [%thread] %logger{{36}} %msg%n</pattern></encoder>
  </appender>
  <root level="WARN"><appender-ref ref="FILE"/></root>
  <logger name="org.apache.cassandra.service.CassandraDaemon" level="INFO"/>
</configuration>
"""

# Cassandra's conf/jvm17-server.options: the module access it needs on JDK 17.
_JDK17_FLAGS = [
    "-Djdk.attach.allowAttachSelf=true",
    *(
        f"--add-exports={m}=ALL-UNNAMED"
        for m in (
            "java.base/jdk.internal.misc",
            "java.management.rmi/com.sun.jmx.remote.internal.rmi",
            "java.rmi/sun.rmi.registry",
            "java.rmi/sun.rmi.server",
            "java.sql/java.sql",
            "java.base/java.lang.ref",
            "jdk.unsupported/sun.misc",
            "jdk.compiler/com.sun.tools.javac.file",
            "jdk.attach/sun.tools.attach",
        )
    ),
    *(
        f"--add-opens={m}=ALL-UNNAMED"
        for m in (
            "java.base/java.lang.module",
            "java.base/jdk.internal.loader",
            "java.base/jdk.internal.ref",
            "java.base/jdk.internal.reflect",
            "java.base/jdk.internal.math",
            "java.base/jdk.internal.module",
            "java.base/jdk.internal.util.jar",
            "jdk.management/com.sun.management.internal",
            "java.base/sun.nio.ch",
            "java.base/java.io",
            "java.base/java.lang.reflect",
            "jdk.compiler/com.sun.tools.javac",
            "java.base/java.lang",
            "java.base/java.util",
        )
    ),
    "-Dio.netty.tryReflectionSetAccessible=true",
    "-Dio.netty.allocator.useCacheForAllThreads=true",
    "-Dio.netty.allocator.maxOrder=11",
]


class Cassandra(JavaServer):
    def __init__(self, data_dir: Path) -> None:
        super().__init__("cassandra", data_dir)

    def start(self, port: int = 0) -> int:
        """Starts Cassandra (CQL on `port`, 0: a free one) and waits until it answers CQL."""
        lib = jars("cassandra")
        port = port or free_port()
        home = self.home
        conf = home / "conf"
        conf.mkdir(parents=True, exist_ok=True)
        (conf / "cassandra.yaml").write_text(
            _CASSANDRA_YAML.format(port=port, storage_port=free_port(), home=home)
        )
        (conf / "logback.xml").write_text(_LOGBACK.format(home=home))
        heap = os.environ.get("LILY_CASSANDRA_HEAP", "1g")
        _say(f"starting Cassandra 5.0 on 127.0.0.1:{port} (heap {heap}) ...")
        return self.run(
            [
                java(),
                f"-Xms{heap}",
                f"-Xmx{heap}",
                "-XX:+UseG1GC",
                "-Xss256k",
                *_JDK17_FLAGS,
                "-Dcassandra-foreground=yes",
                f"-Dcassandra.config=file://{conf / 'cassandra.yaml'}",
                f"-Dcassandra.storagedir={home}",
                f"-Dlogback.configurationFile={conf / 'logback.xml'}",
                "-Dcassandra.skip_wait_for_gossip_to_settle=0",
                "-Dcassandra.load_ring_state=false",
                "-Djava.net.preferIPv4Stack=true",
                "-cp",
                f"{conf}:{lib}/*",
                "org.apache.cassandra.service.CassandraDaemon",
            ],
            port,
        )

    def probe(self, port: int) -> bool:
        from cassandra.cluster import Cluster

        cluster = Cluster(["127.0.0.1"], port=port, connect_timeout=2)
        try:
            cluster.connect().execute("SELECT release_version FROM system.local", timeout=5)
            return True
        finally:
            cluster.shutdown()


# -- JanusGraph -----------------------------------------------------------------------------

_JANUSGRAPH_YAML = """\
host: 127.0.0.1
port: {port}
evaluationTimeout: 30000
channelizer: org.apache.tinkerpop.gremlin.server.channel.WebSocketChannelizer
graphManager: org.janusgraph.graphdb.management.JanusGraphManager
graphs:
  graph: {home}/conf/graph.properties
  ConfigurationManagementGraph: {home}/conf/configuration.properties
scriptEngines:
  gremlin-groovy:
    plugins:
      org.janusgraph.graphdb.tinkerpop.plugin.JanusGraphGremlinPlugin: {{}}
      org.apache.tinkerpop.gremlin.server.jsr223.GremlinServerGremlinPlugin: {{}}
      org.apache.tinkerpop.gremlin.tinkergraph.jsr223.TinkerGraphGremlinPlugin: {{}}
      org.apache.tinkerpop.gremlin.jsr223.ImportGremlinPlugin:
        classImports: [java.lang.Math]
        methodImports: [java.lang.Math#*]
      org.apache.tinkerpop.gremlin.jsr223.ScriptFileGremlinPlugin:
        files: [{home}/conf/bindings.groovy]
serializers:
  - className: org.apache.tinkerpop.gremlin.util.ser.GraphBinaryMessageSerializerV1
    config:
      ioRegistries: [org.janusgraph.graphdb.tinkerpop.JanusGraphIoRegistry]
  - className: org.apache.tinkerpop.gremlin.util.ser.GraphSONMessageSerializerV3
    config:
      ioRegistries: [org.janusgraph.graphdb.tinkerpop.JanusGraphIoRegistry]
processors:
  - className: org.apache.tinkerpop.gremlin.server.op.session.SessionOpProcessor
    config: {{sessionTimeout: 28800000}}
  - className: org.apache.tinkerpop.gremlin.server.op.traversal.TraversalOpProcessor
    config: {{cacheExpirationTime: 600000, cacheMaxSize: 1000}}
maxContentLength: 10485760
resultIterationBatchSize: 256
"""

_GRAPH_PROPERTIES = """\
gremlin.graph=org.janusgraph.core.JanusGraphFactory
storage.backend=cql
storage.hostname=127.0.0.1
storage.port={cassandra_port}
storage.cql.keyspace={keyspace}
storage.cql.local-datacenter=datacenter1
storage.cql.replication-factor=1
cache.db-cache=false
query.batch=true
graph.set-vertex-id=true
graph.allow-custom-vid-types=true
"""

# Where ConfiguredGraphFactory keeps graph configurations (DEDICATED tenants' graphs).
_CONFIGURATION_PROPERTIES = """\
gremlin.graph=org.janusgraph.core.ConfiguredGraphFactory
graph.graphname=ConfigurationManagementGraph
storage.backend=cql
storage.hostname=127.0.0.1
storage.port={cassandra_port}
storage.cql.keyspace={keyspace}_configuration
storage.cql.local-datacenter=datacenter1
storage.cql.replication-factor=1
"""

# What a DEDICATED tenant's graph is made from (its keyspace is named after the graph).
_TEMPLATE = """
if (ConfiguredGraphFactory.getTemplateConfiguration() == null) {
    map = new HashMap()
    map.put('storage.backend', 'cql')
    map.put('storage.hostname', '127.0.0.1')
    map.put('storage.port', port)
    map.put('storage.cql.local-datacenter', 'datacenter1')
    map.put('storage.cql.replication-factor', 1)
    map.put('cache.db-cache', false)
    map.put('query.batch', true)
    map.put('graph.set-vertex-id', true)
    map.put('graph.allow-custom-vid-types', true)
    ConfiguredGraphFactory.createTemplateConfiguration(new MapConfiguration(map))
}
'ok'
"""

# Clients need the traversal source bound as `g`.
_BINDINGS = """\
def globals = [:]
globals << [g : graph.traversal()]
"""

_LOG4J2 = """\
<Configuration status="WARN">
  <Appenders>
    <File name="file" fileName="{home}/janusgraph.log">
      <PatternLayout pattern="%d{{ISO8601}} %-5level [%t] %c{{1}} %msg%n"/>
    </File>
  </Appenders>
  <Loggers>
    <Root level="warn"><AppenderRef ref="file"/></Root>
    <Logger name="org.apache.tinkerpop.gremlin.server.GremlinServer" level="info"/>
  </Loggers>
</Configuration>
"""


class JanusGraph(JavaServer):
    def __init__(self, data_dir: Path) -> None:
        super().__init__("janusgraph", data_dir)

    def start(self, cassandra_port: int, port: int = 0, keyspace: str = "lily_graph") -> int:
        """Starts JanusGraph Server (Gremlin on `port`) on the Cassandra at `cassandra_port`,
        and waits until it answers a Gremlin query."""
        lib = jars("janusgraph")
        port = port or free_port()
        home = self.home
        conf = home / "conf"
        conf.mkdir(parents=True, exist_ok=True)
        (conf / "server.yaml").write_text(_JANUSGRAPH_YAML.format(port=port, home=home))
        (conf / "graph.properties").write_text(
            _GRAPH_PROPERTIES.format(cassandra_port=cassandra_port, keyspace=keyspace)
        )
        (conf / "configuration.properties").write_text(
            _CONFIGURATION_PROPERTIES.format(cassandra_port=cassandra_port, keyspace=keyspace)
        )
        (conf / "bindings.groovy").write_text(_BINDINGS)
        (conf / "log4j2.xml").write_text(_LOG4J2.format(home=home))
        heap = os.environ.get("LILY_JANUSGRAPH_HEAP", "768m")
        _say(f"starting JanusGraph 1.1 on 127.0.0.1:{port} (heap {heap}) ...")
        port = self.run(
            [
                java(),
                f"-Xms{heap}",
                f"-Xmx{heap}",
                "-XX:+UseG1GC",
                f"-Dlog4j.configurationFile=file://{conf / 'log4j2.xml'}",
                "-Djava.net.preferIPv4Stack=true",
                "--add-opens=java.base/java.lang=ALL-UNNAMED",
                "--add-opens=java.base/java.nio=ALL-UNNAMED",
                "--add-opens=java.base/sun.nio.ch=ALL-UNNAMED",
                "-Dio.netty.tryReflectionSetAccessible=true",
                "-cp",
                f"{conf}:{lib}/*",
                "org.janusgraph.graphdb.server.JanusGraphServer",
                str(conf / "server.yaml"),
            ],
            port,
        )
        self._gremlin(port, _TEMPLATE, {"port": cassandra_port})
        return port

    def _gremlin(self, port: int, script: str, bindings: dict[str, object]) -> list[object]:
        from gremlin_python.driver.client import Client

        client = Client(f"ws://127.0.0.1:{port}/gremlin", "g")
        try:
            return list(client.submit(script, bindings).all().result(timeout=60))
        finally:
            with contextlib.suppress(Exception):
                client.close()

    def probe(self, port: int) -> bool:
        if not _accepts(port):  # (gremlinpython leaks a session per refused connect)
            return False
        return self._gremlin(port, "g.inject(1)", {}) == [1]


def up(data_dir: Path, only: str = "") -> dict[str, str]:
    """Starts the stack; returns the endpoints (cassandra: host:port)."""
    endpoints: dict[str, str] = {}
    cassandra_port = Cassandra(data_dir).start()
    endpoints["cassandra"] = f"127.0.0.1:{cassandra_port}"
    _say(f"Cassandra ready at {endpoints['cassandra']}")
    if only != "cassandra":
        try:
            endpoints["janusgraph"] = (
                f"ws://127.0.0.1:{JanusGraph(data_dir).start(cassandra_port)}/gremlin"
            )
        except BaseException:
            Cassandra(data_dir).stop()
            raise
        _say(f"JanusGraph ready at {endpoints['janusgraph']}")
    return endpoints


def down(data_dir: Path) -> None:
    """Stops JanusGraph, then Cassandra (JanusGraph writes to it)."""
    JanusGraph(data_dir).stop()
    Cassandra(data_dir).stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["up", "down"])
    parser.add_argument("--data-dir", type=Path, default=Path(".lily-dist"))
    parser.add_argument("--only", choices=["cassandra"], default="")
    args = parser.parse_args()
    data_dir = args.data_dir.resolve()
    try:
        if args.command == "up":
            for name, endpoint in up(data_dir, args.only).items():
                print(f"{name}={endpoint}")
        else:
            down(data_dir)
    except DevStackError as exc:
        _say(str(exc))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
