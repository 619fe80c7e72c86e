#!/usr/bin/env python3
"""dcwatt's benchmark suite: dcwatt side by side with its peers and the physical ceiling.

Run through scripts/bench.sh, which installs the peers and builds the binaries; see
docs/benchmarks.md for what each measurement means. Every number that is compared is a
ratio of two runs made here, one after the other, on the same machine: absolute numbers
move with the machine's load, ratios much less.

Measurements (each a function below):
  ceiling   Mosquitto delivering a backlog to a subscriber that only counts (mosquitto_sub)
            vs. the collector draining the same backlog with full processing, without and
            with the InfluxDB sink to VictoriaMetrics, in JSON and in the compact encoding;
  embedded  the load generator flooding the collector's embedded broker vs. flooding
            Mosquitto with a counting subscriber;
  latency   p50/p99 from a reading's timestamp to its effect (the collector's histogram)
            at 1k and 10k simulated hosts, 20 readings per batch every 10 s;
  connections  one MQTT connection per simulated agent, 19,000 of them, per broker;
  storm     Mosquitto restarted under 19,000 agents (200 real ones with spools): time until
            every one is back and every spooled batch is in, none missing;
  site      a 5,000-host site with the packaged configuration: peak RSS against its budget;
  memory    collector memory per active series at 10k and 100k series;
  agent     agent footprint vs. collectd and Prometheus node_exporter over the same time;
  influx    the InfluxDB sink's throughput vs. line-protocol files POSTed with curl.

--smoke runs everything at a tiny scale (seconds) and checks only that each measurement
produces its numbers without loss: CI runs it so the suite keeps working.
"""

import argparse
import datetime
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLK_TCK = os.sysconf("SC_CLK_TCK")
SITE = "bench"


def storm_witness_missing(path):
    """Per node, the batches that the witness subscriber (`mosquitto_sub -v`: topic, space,
    payload) never got between the first and the last sequence number it saw."""
    seen = {}
    with open(path, errors="replace") as f:
        for line in f:
            topic, _, payload = line.partition(" ")
            try:
                seq = json.loads(payload)["seq"]
            except (ValueError, KeyError, TypeError):
                continue
            seen.setdefault(topic.split("/")[3], set()).add(seq)
    return {n: max(s) - min(s) + 1 - len(s) for n, s in sorted(seen.items()) if max(s) - min(s) + 1 > len(s)}


class BenchError(Exception):
    pass


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def find(program, *extra):
    for p in [shutil.which(program), *extra]:
        if p and os.path.exists(p):
            return p
    return None


class Proc:
    """A child process with its output in a log file."""

    def __init__(self, name, cmd, workdir, env=None):
        self.name = name
        self.log_path = os.path.join(workdir, f"{name}.log")
        self.log = open(self.log_path, "wb")
        e = dict(os.environ)
        e.update(env or {})
        self.p = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, cwd=workdir, env=e)

    @property
    def pid(self):
        return self.p.pid

    def running(self):
        return self.p.poll() is None

    def tail(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read()[-3000:].decode(errors="replace")
        except OSError:
            return ""

    def stop(self):
        if self.running():
            try:
                os.kill(self.p.pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
            self.p.terminate()
            try:
                self.p.wait(10)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
        self.log.close()


def anon_rss(pid):
    """Private memory (RssAnon) of a process: what it costs beyond the shared code pages."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
    return 0


def proc_stats(pid):
    """(CPU seconds, RSS bytes, peak RSS bytes) of a process."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / CLK_TCK
    rss = hwm = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) * 1024
            elif line.startswith("VmHWM:"):
                hwm = int(line.split()[1]) * 1024
    return cpu, rss, hwm


def wait_until(what, timeout, fn, every=0.02):
    deadline = time.monotonic() + timeout
    while True:
        v = fn()
        if v:
            return v
        if time.monotonic() > deadline:
            raise BenchError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(every)


def http_get(port, path, timeout=5):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as r:
            return r.read()
    except OSError:
        return None


METRIC_LINE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*(?:\{[^}]*\})?) (\S+)$")


def scrape(port):
    body = http_get(port, "/metrics")
    if body is None:
        return None
    out = {}
    for line in body.decode().splitlines():
        m = METRIC_LINE.match(line)
        if m:
            out[m.group(1)] = float(m.group(2))
    return out


def median(runs, key=None):
    """The middle run (the upper one of an even count), by `key` when given."""
    return sorted(runs, key=key)[len(runs) // 2]


def quantile(before, after, q):
    """histogram_quantile over the increase of dcwatt_ingest_latency_seconds, in ms."""
    buckets = []
    for k, v in after.items():
        m = re.match(r'dcwatt_ingest_latency_seconds_bucket\{le="([^"]+)"\}', k)
        if m:
            le = float("inf") if m.group(1) == "+Inf" else float(m.group(1))
            buckets.append((le, v - before.get(k, 0.0)))
    buckets.sort()
    total = buckets[-1][1] if buckets else 0
    if total <= 0:
        return None
    rank = q * total
    prev_le, prev_n = 0.0, 0.0
    for le, n in buckets:
        if n >= rank:
            if le == float("inf"):
                return prev_le * 1000
            return 1000 * (prev_le + (le - prev_le) * (rank - prev_n) / max(n - prev_n, 1e-9))
        prev_le, prev_n = le, n
    return None


class Bench:
    def __init__(self, args):
        self.args = args
        self.smoke = args.smoke
        self.bins = os.path.abspath(args.bin_dir)
        self.work = tempfile.mkdtemp(prefix="dcwatt-bench-")
        self.procs = []
        # CPU seconds of the broker and the subscriber in each subscriber drain, by encoding.
        self.cpu = {}
        self.results = {}
        self.mosquitto_exe = find("mosquitto", "/usr/sbin/mosquitto")
        self.vm_exe = find("victoria-metrics", "/usr/bin/victoria-metrics")

    # ---- peers -------------------------------------------------------------------------

    def start(self, name, cmd, env=None):
        p = Proc(name, cmd, self.work, env)
        self.procs.append(p)
        return p

    def stop(self, p):
        p.stop()
        if p in self.procs:
            self.procs.remove(p)

    def mosquitto(self, port=None, persist=False):
        """Mosquitto on a scratch port. `persist`: sessions and queued messages saved on a
        clean stop and read back on start (as a production broker keeps them), and its
        client count published every second on $SYS."""
        port = port or free_port()
        conf = os.path.join(self.work, f"mosquitto-{port}.conf")
        with open(conf, "w") as f:
            # A backlog must stay whole: no queue limits.
            f.write(
                f"listener {port} 127.0.0.1\nallow_anonymous true\n"
                "max_queued_messages 0\nmax_queued_bytes 0\nmax_inflight_messages 1000\n"
                "log_dest stderr\nlog_type error\nlog_type warning\n"
            )
            if persist:
                store = os.path.join(self.work, f"mosquitto-{port}-store")
                os.makedirs(store, exist_ok=True)
                # As root Mosquitto drops to its own user, which cannot write in the
                # scratch directory: without `user root` nothing is saved, and after a
                # restart no subscription exists until each subscriber is back.
                f.write(f"persistence true\npersistence_location {store}/\nsys_interval 1\nuser root\n")
            else:
                f.write("persistence false\n")
        p = self.start(f"mosquitto-{port}", [self.mosquitto_exe, "-c", conf])
        wait_until("mosquitto to listen", 10, lambda: self._listening(port))
        return p, port

    @staticmethod
    def _listening(port):
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return True
        except OSError:
            return False

    def victoria(self):
        port = free_port()
        p = self.start(
            f"victoria-metrics-{port}",
            [
                self.vm_exe,
                f"-httpListenAddr=127.0.0.1:{port}",
                f"-storageDataPath={os.path.join(self.work, f'vm-{port}')}",
                "-retentionPeriod=100y",
            ],
        )
        wait_until("victoria-metrics", 30, lambda: http_get(port, "/health"))
        return p, port

    def collector(self, mqtt_port=None, influx_port=None, embedded_port=None, bins=None, defaults=False):
        """A collector on its own scratch port; with `defaults`, history and saved state
        stay on, as the packaged configuration has them."""
        http = free_port()
        conf = os.path.join(self.work, f"collector-{http}.toml")
        lines = [f'state_dir = "{self.work}/state-{http}"\n[http]\nlisten = "127.0.0.1:{http}"\n']
        if embedded_port:
            lines.append(f'[broker]\nembedded = true\nlisten = "127.0.0.1:{embedded_port}"\n')
        else:
            lines.append(
                "[broker]\nembedded = false\n"
                f'[mqtt]\nhost = "127.0.0.1"\nport = {mqtt_port}\nkeep_alive_secs = 900\n'
                f'client_id = "dcwatt-collector-bench-{http}"\n'
            )
        if not defaults:
            lines.append("[history]\nenabled = false\n[state]\nenabled = false\n")
        if influx_port:
            lines.append(
                f'[influx]\nenabled = true\nurl = "http://127.0.0.1:{influx_port}"\n'
                f'bucket = "bench"\nraw = true\nspool_dir = "{self.work}/spool-{http}"\n'
                # Room for the whole backlog: the sink's own pace is what is measured
                # (with the default queue, a sink slower than the intake drops, counted).
                "queue_batches = 1000000\n"
            )
        with open(conf, "w") as f:
            f.write("".join(lines))
        p = self.start(f"collector-{http}", [os.path.join(bins or self.bins, "dcwatt-collector"), "--config", conf])

        def ready():
            if not p.running():
                raise BenchError(f"the collector exited:\n{p.tail()}")
            h = http_get(http, "/healthz")
            return h and json.loads(h).get("broker_connected") is True

        wait_until("collector /healthz", 30, ready)
        return p, http

    def loadgen(self, port, *extra, check=True, tolerate_reconnects=False):
        """Runs the load generator; its stderr goes to loadgen-N.log in the scratch
        directory. With `tolerate_reconnects`, connection errors that were retried pass as
        long as the broker acknowledged everything (they are reported)."""
        cmd = [os.path.join(self.bins, "dcwatt-loadgen"), "--port", str(port), "--site", SITE, *map(str, extra)]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
        self.loadgen_runs = getattr(self, "loadgen_runs", 0) + 1
        with open(os.path.join(self.work, f"loadgen-{self.loadgen_runs}.log"), "w") as f:
            f.write(out.stderr)
        if out.returncode != 0:
            raise BenchError(f"dcwatt-loadgen failed: {out.stderr[-2000:]}")
        summary = json.loads(out.stdout)
        errors = summary["connection_errors"] and not tolerate_reconnects
        # A publish sent again after a reconnect may be acknowledged twice: more acks than
        # publishes is not a loss, a publish without one is.
        if check and (summary["unacked"] or summary["acked"] < summary["batches_sent"] + summary["status_sent"] or errors):
            raise BenchError(f"the broker did not take everything: {summary}\n{out.stderr[-2000:]}")
        lines = [l.split(": ", 2)[-1] for l in out.stderr.splitlines() if "connection" in l]
        summary["error_kinds"] = sorted(set(lines))[:5]
        return summary

    def agents_on_own_connections(self, port, hosts, secs, rate):
        """The load generator as a site's agents: one connection each (and one for the
        facility meter), opened at `rate` a second, paced every 10 s for `secs`. Each
        keeps its session, so that a dropped connection sends again what it had in
        flight, as an agent's spool does (rumqttc drops it on a new session: a run
        through the embedded broker once lost 2 of 95,629 so)."""
        return self.loadgen(port, "--hosts", hosts, "--interval-ms", 10_000, "--duration-secs", secs,
                            "--connections", hosts + 1, "--connect-per-sec", rate, "--persistent-session",
                            tolerate_reconnects=True)

    def wait_readings(self, http, n, timeout):
        return wait_until(
            f"{n} readings messages at the collector",
            timeout,
            lambda: (m := scrape(http)) and m.get('dcwatt_messages_received_total{kind="readings"}', 0) >= n and m,
            every=0.01,
        )

    def check_clean(self, m, batches, readings, what, http=None, resent=False):
        """Nothing lost, nothing refused. A message counts as received when the intake
        takes it, before its readings count as accepted: when `http` is given, a scrape
        that caught the last one half-way is taken again (for up to 2 s). With `resent`
        (publishers that send again what a dropped connection had in flight), batches
        received twice are allowed as long as each extra one was refused as a duplicate."""
        deadline = time.monotonic() + 2
        while http and m.get("dcwatt_readings_accepted_total", 0) < readings and time.monotonic() < deadline:
            time.sleep(0.05)
            m = scrape(http) or m
        got = m.get('dcwatt_messages_received_total{kind="readings"}')
        acc = m.get("dcwatt_readings_accepted_total")
        refused = sum(v for k, v in m.items() if k.startswith(("dcwatt_messages_rejected_total", "dcwatt_readings_rejected_total")))
        if resent and got is not None and got > batches:
            dup = m.get('dcwatt_messages_rejected_total{reason="duplicate_seq"}', 0)
            if dup == got - batches:
                got, refused = batches, refused - dup
        if got != batches or acc != readings or refused or m.get("dcwatt_batches_missing", 0):
            raise BenchError(
                f"{what}: received {got} of {batches} batches, accepted {acc} of {readings} readings, "
                f"{refused} refused, {m.get('dcwatt_batches_missing')} missing"
            )

    # ---- measurements ------------------------------------------------------------------

    def drain_subscriber(self, hosts, batches, encoding="json"):
        """Batches/s of mosquitto_sub draining a backlog of `batches`."""
        mq, port = self.mosquitto()
        sub = self.start(
            "mosquitto_sub",
            ["mosquitto_sub", "-h", "127.0.0.1", "-p", str(port), "-q", "1", "-k", "900",
             # Only each payload's length is written (4 bytes a message): until
             # 2026-12-07 it wrote every payload to its log, 1.6 KB a message, which held
             # the ceiling 13-29 % lower than a subscriber that does nothing.
             "-t", f"dcwatt/v1/{SITE}/+/readings", "-C", str(batches), "-N", "-F", "%l"],
        )
        time.sleep(0.5)
        os.kill(sub.pid, signal.SIGSTOP)
        self.loadgen(port, "--hosts", hosts, "--batches", batches, "--encoding", encoding)
        mq0 = proc_stats(mq.pid)[0]
        sub0 = proc_stats(sub.pid)[0]
        t0 = time.monotonic()
        os.kill(sub.pid, signal.SIGCONT)
        # Its CPU is read just before it exits (it exits at its last message).
        sub1 = sub0
        while sub.p.poll() is None and time.monotonic() - t0 < 600:
            try:
                sub1 = proc_stats(sub.pid)[0]
            except OSError:
                break
            time.sleep(0.01)
        sub.p.wait(600)
        dt = time.monotonic() - t0
        mq1 = proc_stats(mq.pid)[0]
        if sub.p.returncode != 0:
            raise BenchError(f"mosquitto_sub failed: {sub.tail()}")
        self.stop(sub)
        self.stop(mq)
        self.cpu.setdefault(f"mosquitto_sub_{encoding}", []).append({"broker_cpu_s": mq1 - mq0, "subscriber_cpu_s": sub1 - sub0})
        print(f"bench:   mosquitto_sub ({encoding}): {batches / dt:,.0f} batches/s", file=sys.stderr, flush=True)
        return batches / dt

    def drain_collector(self, hosts, batches, readings, with_influx, bins=None, label=None, encoding="json",
                        profile=False):
        """The collector draining the same backlog: batches/s, CPU s, peak RSS, and with the
        sink, the sink's lines/s until every line is written. With `profile`, `perf record`
        samples the collector during the drain (its report goes into --profile's folder;
        the figures of such a drain are not results: perf costs CPU)."""
        label = label or ("collector_influx" if with_influx else "collector")
        mq, port = self.mosquitto()
        vm = vm_port = None
        if with_influx:
            vm, vm_port = self.victoria()
        col, http = self.collector(mqtt_port=port, influx_port=vm_port, bins=bins)
        os.kill(col.pid, signal.SIGSTOP)
        self.loadgen(port, "--hosts", hosts, "--batches", batches, "--encoding", encoding)
        cpu0, _, _ = proc_stats(col.pid)
        mq0 = proc_stats(mq.pid)[0]
        perf = None
        if profile:
            data = os.path.join(self.args.profile, f"{label}.perf.data")
            perf = subprocess.Popen(["perf", "record", "-q", "-F", "999", "-g", "-p", str(col.pid), "-o", data],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(0.5)
        t0 = time.monotonic()
        os.kill(col.pid, signal.SIGCONT)
        m = self.wait_readings(http, batches, 600)
        dt = time.monotonic() - t0
        cpu1, _, hwm = proc_stats(col.pid)
        mq1 = proc_stats(mq.pid)[0]
        if perf:
            perf.send_signal(signal.SIGINT)
            perf.wait(60)
            self.perf_report(data, label)
        self.check_clean(m, batches, batches * readings, label, http)
        out = {"batches_per_s": batches / dt, "cpu_s": cpu1 - cpu0, "broker_cpu_s": mq1 - mq0,
               "peak_rss_mib": hwm / 2**20}
        out["live_ratio"] = self.live_ratio(http)
        print(f"bench:   {label}: {batches / dt:,.0f} batches/s", file=sys.stderr, flush=True)
        if with_influx:
            lines = batches * readings
            m = wait_until("the InfluxDB sink to write every raw line", 900,
                           lambda: (x := scrape(http)) and sink_done(x, lines), every=0.05)
            out["sink_lines_per_s"] = m["dcwatt_influx_lines_written_total"] / (time.monotonic() - t0)
            out["sink_lines"] = m["dcwatt_influx_lines_written_total"]
        self.stop(col)
        if vm:
            self.stop(vm)
        self.stop(mq)
        return out

    def perf_report(self, data, label):
        """Where the collector's drain spends its CPU: by thread, and the top functions
        (self time) of all threads, as text beside the perf data."""
        out = os.path.join(self.args.profile, f"{label}.txt")
        with open(out, "w") as f:
            for extra in (["--sort", "comm"], ["--no-children", "--sort", "comm,symbol", "--percent-limit", "1"]):
                r = subprocess.run(["perf", "report", "-i", data, "--stdio", "-g", "none", *extra],
                                   capture_output=True, text=True)
                f.write(r.stdout)
        print(f"bench:   {label}: profile in {out}", file=sys.stderr, flush=True)

    @staticmethod
    def live_ratio(http, timeout=5):
        """The site's live power ratio once the API's snapshot (taken every second) has
        the data; None when it never shows one."""
        deadline = time.monotonic() + timeout
        while True:
            site = json.loads(http_get(http, f"/api/v1/sites/{SITE}") or b"{}")
            ratio = (site.get("power") or {}).get("ratio")
            if ratio is not None or time.monotonic() > deadline:
                return ratio
            time.sleep(0.1)

    def ceiling(self):
        """Backlog drain: Mosquitto → counting subscriber vs. Mosquitto → collector, each
        repeated (alternating) and the median taken: single drains vary by a third here."""
        hosts, batches, reps = (50, 2_000, 1) if self.smoke else (1_000, 200_000, 3)
        readings = 20
        subs, cols, base, csubs, ccols = [], [], [], [], []
        baseline = self.args.baseline_bin_dir and os.path.abspath(self.args.baseline_bin_dir)
        for _ in range(reps):
            subs.append(self.drain_subscriber(hosts, batches))
            cols.append(self.drain_collector(hosts, batches, readings, False))
            # The same batches in the compact encoding (agents with encoding = "cbor").
            csubs.append(self.drain_subscriber(hosts, batches, "cbor"))
            ccols.append(self.drain_collector(hosts, batches, readings, False, label="collector_cbor", encoding="cbor"))
            if baseline:
                base.append(self.drain_collector(hosts, batches, readings, False, baseline, "baseline"))
        inf = self.drain_collector(hosts, batches, readings, True)
        if self.args.profile:
            # Extra drains under perf, one per encoding and one with the sink; not counted.
            os.makedirs(self.args.profile, exist_ok=True)
            self.drain_collector(hosts, batches, readings, False, label="profile_json", profile=True)
            self.drain_collector(hosts, batches, readings, False, label="profile_cbor", encoding="cbor", profile=True)
            self.drain_collector(hosts, batches, readings, True, label="profile_influx", profile=True)
        col = median(cols, key=lambda c: c["batches_per_s"])
        res = {
            "batches": batches,
            "readings_per_batch": readings,
            "repetitions": reps,
            "mosquitto_sub_runs": subs,
            "collector_runs": [c["batches_per_s"] for c in cols],
            "mosquitto_sub_batches_per_s": median(subs),
            "collector_batches_per_s": col["batches_per_s"],
            "collector_cpu_s": col["cpu_s"],
            "collector_broker_cpu_s": col["broker_cpu_s"],
            "mosquitto_sub_cpu": self.cpu.get("mosquitto_sub_json"),
            "collector_peak_rss_mib": col["peak_rss_mib"],
            "collector_live_ratio": col["live_ratio"],
            "collector_influx_batches_per_s": inf["batches_per_s"],
            "collector_influx_cpu_s": inf["cpu_s"],
            "collector_influx_peak_rss_mib": inf["peak_rss_mib"],
            "influx_sink_lines_per_s": inf["sink_lines_per_s"],
            "influx_sink_lines": inf["sink_lines"],
        }
        res["collector_share"] = res["collector_batches_per_s"] / res["mosquitto_sub_batches_per_s"]
        cc = median(ccols, key=lambda c: c["batches_per_s"])
        res["compact"] = {
            "mosquitto_sub_runs": csubs,
            "collector_runs": [c["batches_per_s"] for c in ccols],
            "mosquitto_sub_batches_per_s": median(csubs),
            "collector_batches_per_s": cc["batches_per_s"],
            "collector_cpu_s": cc["cpu_s"],
            "collector_broker_cpu_s": cc["broker_cpu_s"],
            "mosquitto_sub_cpu": self.cpu.get("mosquitto_sub_cbor"),
            "collector_peak_rss_mib": cc["peak_rss_mib"],
        }
        res["compact"]["collector_share"] = cc["batches_per_s"] / res["compact"]["mosquitto_sub_batches_per_s"]
        # Against the JSON ceiling: what a site gains by switching its agents.
        res["compact"]["share_of_json_ceiling"] = cc["batches_per_s"] / res["mosquitto_sub_batches_per_s"]
        if cc["live_ratio"] is None or abs(cc["live_ratio"] - 1.4) > 1e-3:
            raise BenchError(f"with the compact encoding the live power ratio is {cc['live_ratio']}, not 1.4")
        if base:
            b = median(base, key=lambda c: c["batches_per_s"])
            res["baseline_runs"] = [c["batches_per_s"] for c in base]
            res["baseline_batches_per_s"] = b["batches_per_s"]
            res["baseline_cpu_s"] = b["cpu_s"]
            res["baseline_share"] = b["batches_per_s"] / res["mosquitto_sub_batches_per_s"]
        # Sustained with the sink on: the intake's pace, unless the sink's is slower (then
        # a default-sized sink queue would fill and drop).
        res["collector_influx_sustained_batches_per_s"] = min(
            res["collector_influx_batches_per_s"], res["influx_sink_lines_per_s"] / readings)
        res["collector_influx_share"] = res["collector_influx_sustained_batches_per_s"] / res["mosquitto_sub_batches_per_s"]
        res["readings_per_s"] = res["collector_batches_per_s"] * readings
        if res["collector_live_ratio"] is None or abs(res["collector_live_ratio"] - 1.4) > 1e-3:
            raise BenchError(f"the collector's live power ratio is {res['collector_live_ratio']}, not 1.4")
        self.results["ceiling"] = res

    def embedded(self):
        """Flood: loadgen → Mosquitto → counting subscriber vs. loadgen → embedded broker."""
        # 60,000 batches of 1.7 KB stay within the embedded broker's default log (8 × 16 MiB):
        # a subscriber further behind than the log loses the oldest segment (counted as
        # missing batches; see docs/measurement.md).
        hosts, batches = (50, 2_000) if self.smoke else (1_000, 60_000)
        res = {"batches": batches}
        mq, port = self.mosquitto()
        sub = self.start(
            "mosquitto_sub",
            ["mosquitto_sub", "-h", "127.0.0.1", "-p", str(port), "-q", "1",
             "-t", f"dcwatt/v1/{SITE}/+/readings", "-C", str(batches), "-N", "-F", "%l"],
        )
        time.sleep(0.5)
        t0 = time.monotonic()
        self.loadgen(port, "--hosts", hosts, "--batches", batches)
        sub.p.wait(600)
        res["mosquitto_sub_batches_per_s"] = batches / (time.monotonic() - t0)
        self.stop(sub)
        self.stop(mq)

        port = free_port()
        col, http = self.collector(embedded_port=port)
        cpu0, _, _ = proc_stats(col.pid)
        t0 = time.monotonic()
        self.loadgen(port, "--hosts", hosts, "--batches", batches)
        m = self.wait_readings(http, batches, 600)
        dt = time.monotonic() - t0
        cpu1, _, hwm = proc_stats(col.pid)
        self.check_clean(m, batches, batches * 20, "embedded", http)
        res["embedded_batches_per_s"] = batches / dt
        res["embedded_cpu_s"] = cpu1 - cpu0
        res["embedded_peak_rss_mib"] = hwm / 2**20
        res["embedded_share"] = res["embedded_batches_per_s"] / res["mosquitto_sub_batches_per_s"]
        self.stop(col)
        self.results["embedded"] = res

    def latency(self):
        """p50/p99 from reading timestamp to effect, paced like a real fleet; with
        --baseline-bin-dir, that build's collector too, after each of this one's."""
        runs = [(100, 3), (1_000, 3)] if self.smoke else [(1_000, 60), (10_000, 60)]
        builds = [("", None)]
        if self.args.baseline_bin_dir:
            builds.append(("baseline_", os.path.abspath(self.args.baseline_bin_dir)))
        res = {}
        for (hosts, secs), (label, bins) in [(r, b) for r in runs for b in builds]:
            mq, port = self.mosquitto()
            col, http = self.collector(mqtt_port=port, bins=bins)
            before = scrape(http)
            cpu0, _, _ = proc_stats(col.pid)
            lg = self.loadgen(port, "--hosts", hosts, "--interval-ms", 10_000, "--duration-secs", secs,
                              "--connections", 16)
            m = self.wait_readings(http, lg["batches_sent"], 120)
            cpu1, _, hwm = proc_stats(col.pid)
            self.check_clean(m, lg["batches_sent"], lg["readings_sent"], f"latency at {hosts} hosts", http)
            res[f"{label}{hosts}"] = {
                "seconds": secs,
                "batches": lg["batches_sent"],
                "readings_per_s": lg["readings_sent"] / secs,
                "p50_ms": quantile(before, m, 0.50),
                "p99_ms": quantile(before, m, 0.99),
                "cpu_share": (cpu1 - cpu0) / secs,
                "peak_rss_mib": hwm / 2**20,
                # What a snapshot of every host costs (readings wait meanwhile); absent
                # from builds without the gauge.
                "snapshot_ms": 1000 * m["dcwatt_snapshot_duration_seconds"] if "dcwatt_snapshot_duration_seconds" in m else None,
            }
            self.stop(col)
            self.stop(mq)
        self.results["latency"] = res

    def connections(self):
        """One MQTT connection per simulated agent, paced every 10 s, through Mosquitto
        and through the embedded broker: collector CPU, peak RSS, p99 latency, nothing
        missing. File-descriptor limits are raised by bench.sh for this run only."""
        # 19,000, not 20,000: the machines this runs on cap open files at 20,000 per process
        # (a hard limit the bench cannot raise), and the broker holds one per agent plus
        # the collector's, its listener and its own files.
        hosts, secs, rate = (300, 12, 300) if self.smoke else (19_000, 60, 1_000)
        res = {"hosts": hosts, "seconds": secs, "connect_per_sec": rate}
        for broker in ("mosquitto", "embedded"):
            try:
                res[broker] = self.connections_via(broker, hosts, secs, rate)
            except BenchError as e:
                # A broker that cannot take them is a result, not the end of the run.
                res[broker] = {"failed": str(e)[:600]}
                print(f"bench:   {hosts:,} connections via {broker} FAILED: {e}", file=sys.stderr, flush=True)
            self.stop_all()
        if self.smoke and any("failed" in v for k, v in res.items() if isinstance(v, dict)):
            raise BenchError(f"connections: {res}")
        self.results["connections"] = res

    def stop_all(self):
        """Stops whatever a failed run left behind."""
        for p in list(self.procs):
            self.stop(p)

    def connections_via(self, broker, hosts, secs, rate):
        """One connections run through `broker`; BenchError when it does not take them."""
        mq = None
        if broker == "mosquitto":
            mq, port = self.mosquitto()
            col, http = self.collector(mqtt_port=port)
        else:
            port = free_port()
            col, http = self.collector(embedded_port=port)
        before = scrape(http)
        cpu0, _, _ = proc_stats(col.pid)
        t0 = time.monotonic()
        lg = self.agents_on_own_connections(port, hosts, secs, rate)
        m = self.wait_readings(http, lg["batches_sent"], 120)
        wall = time.monotonic() - t0
        cpu1, _, hwm = proc_stats(col.pid)
        self.check_clean(m, lg["batches_sent"], lg["readings_sent"], f"{hosts} connections via {broker}", http,
                         resent=True)
        out = {
            "connections": lg["connections"],
            "batches": lg["batches_sent"],
            "p50_ms": quantile(before, m, 0.50),
            "p99_ms": quantile(before, m, 0.99),
            "cpu_share": (cpu1 - cpu0) / wall,
            "peak_rss_mib": hwm / 2**20,
            "connection_errors": lg["connection_errors"],
            "error_kinds": lg["error_kinds"],
        }
        print(f"bench:   {hosts:,} connections via {broker}: p99 {out['p99_ms']:.1f} ms, "
              f"peak RSS {out['peak_rss_mib']:.0f} MiB", file=sys.stderr, flush=True)
        self.stop(col)
        if mq:
            self.stop(mq)
        return out

    def storm(self):
        """A reconnect storm: Mosquitto restarted under 19,000 agents, one connection each,
        some of them real dcwatt-agent processes with their spools, the rest simulated.
        Measured from the restart: until the broker counts every client again, until
        every real agent says it is connected and its spool is empty, and at the end
        every node's missing batches (zero)."""
        hosts, real, rate, down, steady = (300, 5, 300, 5, 5) if self.smoke else (19_000, 200, 1_000, 20, 15)
        simulated = hosts - real
        mq, port = self.mosquitto(persist=True)
        col, http = self.collector(mqtt_port=port)
        agent_bin = os.path.join(self.bins, "dcwatt-agent")
        agents = []
        for i in range(real):
            node, aport = f"real{i:04}", free_port()
            conf = os.path.join(self.work, f"{node}.toml")
            with open(conf, "w") as f:
                f.write(f'site = "{SITE}"\nnode = "{node}"\nstate_dir = "{self.work}/{node}"\ninterval_secs = 2\n'
                        f'[mqtt]\nhost = "127.0.0.1"\nport = {port}\n[http]\nlisten = "127.0.0.1:{aport}"\n'
                        '[[sources]]\ntype = "sim"\npoint = "it_input"\nbase_w = 300.0\n')
            agents.append((self.start(node, [agent_bin, "--config", conf]), aport))
        # A witness beside the collector: a persistent subscriber (its session kept across
        # the restart, like the collector's) writing down every batch it gets, so that a
        # batch the collector misses can be told apart from one the broker never delivered.
        witness_log = os.path.join(self.work, "witness.log")
        witness = self.start("witness", ["sh", "-c", f"exec mosquitto_sub -h 127.0.0.1 -p {port} -i bench-storm-witness "
                                         f"-c -q 1 -k 60 -v -t 'dcwatt/v1/{SITE}/+/readings' > {witness_log}"])
        connect_s = simulated / rate
        secs = connect_s + steady + down + 60
        lg_cmd = [os.path.join(self.bins, "dcwatt-loadgen"), "--port", str(port), "--site", SITE,
                  "--hosts", str(simulated - 1), "--interval-ms", "10000", "--duration-secs", f"{secs:.0f}",
                  "--connections", str(simulated), "--connect-per-sec", str(rate)]
        # The simulated agents resend what the broker had not acknowledged when it went
        # away, as the real ones do from their spools: over a kept session here.
        # (With clean sessions, rumqttc drops the publishes in flight at the stop.)
        lg_cmd.append("--persistent-session")
        lg_log = open(os.path.join(self.work, "loadgen-storm.log"), "w")
        lg = subprocess.Popen(lg_cmd, stdout=subprocess.PIPE, stderr=lg_log, text=True)
        # Everyone: the load generator's connections, the real agents, the collector.
        everyone = simulated + real + 1

        def connected():
            out = subprocess.run(["mosquitto_sub", "-h", "127.0.0.1", "-p", str(port), "-C", "1", "-W", "3",
                                  "-t", "$SYS/broker/clients/connected"], capture_output=True, text=True)
            try:
                # The asking client is one of them.
                return int(out.stdout.strip()) - 1
            except ValueError:
                return -1

        def agents_back():
            ok = 0
            for _, aport in agents:
                m = scrape(aport) or {}
                ok += m.get("dcwatt_agent_broker_connected") == 1 and m.get("dcwatt_agent_spool_batches", 1) == 0
            return ok == len(agents)

        wait_until("every client connected", connect_s + 120, lambda: connected() >= everyone, every=1)
        time.sleep(steady)
        # The restart: a clean stop (sessions and queued messages saved), down for a while.
        mq.p.terminate()
        mq.p.wait(30)
        self.stop(mq)
        time.sleep(down)
        cpu0, _, _ = proc_stats(col.pid)
        mq, _ = self.mosquitto(port=port, persist=True)
        t_up = time.monotonic()
        # The recovery curve: clients back against seconds since the restart.
        curve = []

        def back():
            curve.append((time.monotonic() - t_up, connected()))
            return curve[-1][1] >= everyone

        wait_until("every client back", 300, back, every=0.5)
        all_back = time.monotonic() - t_up

        def back_by(share):
            return next(t for t, n in curve if n >= share * everyone)
        wait_until("every real agent back with its spool empty", 300, agents_back, every=0.5)
        spools_in = time.monotonic() - t_up
        cpu1, _, _ = proc_stats(col.pid)
        out, _ = lg.communicate(timeout=secs + 600)
        lg_log.close()
        if lg.returncode != 0:
            raise BenchError(f"dcwatt-loadgen failed (see loadgen-storm.log)")
        summary = json.loads(out)

        def caught_up():
            # Every batch in: the simulated agents' and the real ones' (which still run),
            # and no gap left in any node's numbers.
            built = sum((scrape(aport) or {}).get("dcwatt_agent_batches_built_total", 0) for _, aport in agents)
            m = scrape(http) or {}
            got = m.get('dcwatt_messages_received_total{kind="readings"}', 0)
            return got >= summary["batches_sent"] + built and m.get("dcwatt_batches_missing", 1) == 0

        try:
            wait_until("every batch in, none missing", 120, caught_up, every=0.5)
        except BenchError:
            pass  # reported below, with the nodes that miss batches
        self.stop(witness)
        witness_missing = storm_witness_missing(witness_log)
        nodes = json.loads(http_get(http, f"/api/v1/sites/{SITE}/nodes") or b"{}").get("nodes", [])
        final = scrape(http) or {}
        missing = final.get("dcwatt_batches_missing", 0)
        refused = {k: v for k, v in final.items() if v and k.startswith(("dcwatt_messages_rejected_total", "dcwatt_readings_rejected_total"))}
        short = {n["node"]: n["missing_batches"] for n in nodes if n.get("missing_batches")}
        real_nodes = [n for n in nodes if n["node"].startswith("real")]
        built = sum((scrape(aport) or {}).get("dcwatt_agent_batches_built_total", 0) for _, aport in agents)
        # What went wrong on the simulated connections: refused while the broker was down,
        # one cut per connection at the stop; anything else (timeouts, resets after the
        # restart) would be the broker overrun by the reconnects.
        kinds = {"refused": 0, "cut_at_stop": 0, "other": 0}
        with open(os.path.join(self.work, "loadgen-storm.log"), errors="replace") as f:
            for line in f:
                if "Connection refused" in line:
                    kinds["refused"] += 1
                elif "closed by peer abruptly" in line or "Connection reset by peer" in line:
                    kinds["cut_at_stop"] += 1
                elif "connection" in line:
                    kinds["other"] += 1
        res = {
            "agents": hosts, "real_agents": real, "down_s": down,
            "half_connected_s": back_by(0.5), "most_connected_s": back_by(0.9),
            "all_connected_s": all_back, "spools_drained_s": spools_in,
            "loadgen_error_kinds": kinds,
            "collector_cpu_s_recovering": cpu1 - cpu0,
            "loadgen_batches": summary["batches_sent"], "loadgen_acked": summary["acked"],
            "loadgen_unacked": summary["unacked"],
            "loadgen_connection_errors": summary["connection_errors"],
            "real_batches_built": built, "nodes_seen": len(nodes), "real_nodes_seen": len(real_nodes),
            "missing_batches": missing, "refused": refused,
            "witness_missing": sum(witness_missing.values()),
            "witness_nodes_missing": dict(list(witness_missing.items())[:20]),
            "received": final.get('dcwatt_messages_received_total{kind="readings"}'), "nodes_missing_batches": dict(list(short.items())[:20]),
        }
        print(f"bench:   storm: every client back {all_back:.1f} s after the restart, spools in after {spools_in:.1f} s, "
              f"{missing} missing", file=sys.stderr, flush=True)
        for p, _ in agents:
            self.stop(p)
        self.stop(col)
        self.stop(mq)
        if missing or len(real_nodes) != real or summary["unacked"]:
            raise BenchError(f"storm: {res}")
        self.results["storm"] = res

    def site(self):
        """A site with the packaged configuration (history and saved state on), through
        the embedded broker and through Mosquitto: one connection per agent, paced every
        10 s, the collector's peak RSS (VmHWM) against its budget of 2 KiB per active
        series plus, for the embedded broker, its log's configured size (8 × 16 MiB)."""
        hosts, secs, rate = (300, 15, 300) if self.smoke else (5_000, 90, 1_000)
        readings, log_bytes = 20, 8 * 16 * 2**20
        series = (hosts + 1) * readings
        res = {"hosts": hosts, "seconds": secs, "series": series}
        baseline = self.args.baseline_bin_dir and os.path.abspath(self.args.baseline_bin_dir)
        runs = [(b, None, b) for b in ("embedded", "mosquitto")]
        if baseline:
            runs += [(b, baseline, f"baseline_{b}") for b in ("embedded", "mosquitto")]
        for broker, bins, key in runs:
            mq = None
            if broker == "mosquitto":
                mq, port = self.mosquitto()
                col, http = self.collector(mqtt_port=port, defaults=True, bins=bins)
            else:
                port = free_port()
                col, http = self.collector(embedded_port=port, defaults=True, bins=bins)
            cpu0, _, _ = proc_stats(col.pid)
            t0 = time.monotonic()
            lg = self.agents_on_own_connections(port, hosts, secs, rate)
            m = self.wait_readings(http, lg["batches_sent"], 120)
            # A state save and a history flush after the last batch are part of the peak.
            time.sleep(6)
            cpu1, rss, hwm = proc_stats(col.pid)
            self.check_clean(scrape(http) or m, lg["batches_sent"], lg["readings_sent"], f"site via {broker}", http)
            budget = 2048 * series + (log_bytes if broker == "embedded" else 0)
            res[key] = {
                "peak_rss_mib": hwm / 2**20,
                "rss_mib": rss / 2**20,
                "budget_mib": budget / 2**20,
                "within_budget": hwm <= budget,
                "cpu_share": (cpu1 - cpu0) / (time.monotonic() - t0),
                "batches": lg["batches_sent"],
            }
            print(f"bench:   site via {broker} ({key}): peak RSS {hwm / 2**20:.0f} MiB of a {budget / 2**20:.0f} MiB budget",
                  file=sys.stderr, flush=True)
            self.stop(col)
            if mq:
                self.stop(mq)
        self.results["site"] = res

    def memory(self):
        """Resident memory per active series (node, metric, component)."""
        steps = [100, 1_000] if self.smoke else [500, 5_000]
        readings = 20
        mq, port = self.mosquitto()
        col, http = self.collector(mqtt_port=port)
        time.sleep(1)
        _, rss0, _ = proc_stats(col.pid)
        res = {"idle_rss_mib": rss0 / 2**20}
        sent = 0
        prev = (0, rss0)
        for hosts in steps:
            # Three batches per node at 1 s, so the intake never queues (a queue would
            # leave freed buffers in the resident set).
            lg = self.loadgen(port, "--hosts", hosts, "--interval-ms", 1_000, "--duration-secs", 3.2,
                              "--connections", 8)
            sent += lg["batches_sent"]
            self.wait_readings(http, sent, 120)
            time.sleep(1)
            _, rss, _ = proc_stats(col.pid)
            series = (hosts + 1) * readings
            res[str(series)] = {
                "rss_mib": rss / 2**20,
                "bytes_per_series": (rss - rss0) / series,
                "marginal_bytes_per_series": (rss - prev[1]) / (series - prev[0]),
            }
            prev = (series, rss)
        self.stop(col)
        self.stop(mq)
        self.results["memory"] = res

    # ---- the API under load ------------------------------------------------------------

    def pollers(self, http, clients):
        """`clients` threads, each GETting the site view and /metrics once a second; returns
        (stop, samples) where samples is a list of (start, path, seconds, ok)."""
        samples, stop = [], threading.Event()
        paths = [f"/api/v1/sites/{SITE}", "/metrics"]

        def poll(i):
            # Spread over the second, as independent dashboards and scrapers are.
            next_t = time.monotonic() + i / clients
            while not stop.is_set():
                delay = next_t - time.monotonic()
                if delay > 0 and stop.wait(delay):
                    return
                next_t += 1.0
                for path in paths:
                    t = time.monotonic()
                    ok = http_get(http, path, timeout=10) is not None
                    samples.append((t, path, time.monotonic() - t, ok))

        threads = [threading.Thread(target=poll, args=(i,), daemon=True) for i in range(clients)]
        for t in threads:
            t.start()

        def finish():
            stop.set()
            for t in threads:
                t.join(15)
        return finish, samples

    @staticmethod
    def latencies(samples, since=None, until=None):
        out = {}
        for path in sorted({p for _, p, _, _ in samples}):
            got = sorted(d for t, p, d, ok in samples
                         if p == path and ok and (since is None or t >= since) and (until is None or t <= until))
            failed = sum(1 for t, p, _, ok in samples if p == path and not ok)
            if got:
                out[path] = {"n": len(got), "failed": failed,
                             "p50_ms": 1000 * got[len(got) // 2],
                             "p99_ms": 1000 * got[min(len(got) - 1, int(len(got) * 0.99))]}
        return out

    def site_known(self, port, http):
        """Some data for the site, and its view served (within a snapshot's second)."""
        self.loadgen(port, "--hosts", 10, "--batches", 10)
        self.wait_readings(http, 10, 60)
        wait_until("the site view", 30, lambda: http_get(http, f"/api/v1/sites/{SITE}"))

    def api_paced(self, bins, hosts, secs, clients):
        mq, port = self.mosquitto()
        col, http = self.collector(mqtt_port=port, bins=bins)
        # The site exists before the clients start.
        self.site_known(port, http)
        finish, samples = self.pollers(http, clients)
        t0 = time.monotonic()
        self.loadgen(port, "--hosts", hosts, "--interval-ms", 10_000, "--duration-secs", secs, "--connections", 16)
        finish()
        out = self.latencies(samples, since=t0)
        self.stop(col)
        self.stop(mq)
        return out

    def api_drain(self, bins, batches, clients):
        """Batches/s draining a backlog, without and then with the polling clients."""
        out = {}
        for with_clients in (False, True):
            mq, port = self.mosquitto()
            col, http = self.collector(mqtt_port=port, bins=bins)
            self.site_known(port, http)
            os.kill(col.pid, signal.SIGSTOP)
            self.loadgen(port, "--hosts", 1_000, "--batches", batches)
            finish = samples = None
            t0 = time.monotonic()
            os.kill(col.pid, signal.SIGCONT)
            if with_clients:
                finish, samples = self.pollers(http, clients)
            self.wait_readings(http, batches + 10, 600)
            dt = time.monotonic() - t0
            key = "with_clients" if with_clients else "alone"
            out[f"{key}_batches_per_s"] = batches / dt
            if finish:
                finish()
                out["latency"] = self.latencies(samples, since=t0, until=t0 + dt)
            self.stop(col)
            self.stop(mq)
        return out

    def api(self):
        """p50/p99 of GET /api/v1/sites/{site} and /metrics with 50 clients polling every
        second, (a) while 10,000 hosts publish paced and (b) during a 200,000-batch backlog
        drain, and the drain rate with and without them; with --baseline-bin-dir, the same
        for that build in the same run."""
        hosts, secs, batches, clients = (100, 3, 2_000, 5) if self.smoke else (10_000, 30, 200_000, 50)
        builds = [("current", self.bins)]
        if self.args.baseline_bin_dir:
            builds.append(("baseline", os.path.abspath(self.args.baseline_bin_dir)))
        res = {"hosts": hosts, "seconds": secs, "batches": batches, "clients": clients}
        for label, bins in builds:
            res[label] = {"paced": self.api_paced(bins, hosts, secs, clients),
                          "drain": self.api_drain(bins, batches, clients)}
        for label, _ in builds:
            for phase in ("paced",):
                for path, v in res[label][phase].items():
                    if v["failed"]:
                        raise BenchError(f"{label}: {v['failed']} requests to {path} failed")
        self.results["api"] = res

    def agent(self):
        """The agent vs. collectd and node_exporter, running side by side."""
        secs = 3 if self.smoke else 600
        mq, port = self.mosquitto()
        res = {"seconds": secs, "interval_s": 10}
        # A fake hwmon tree (no sensors in a container): one ACPI power meter, two temps.
        sysfs = os.path.join(self.work, "sysfs")
        for dev, files in {
            "hwmon0": {"name": "power_meter", "power1_input": "245000000"},
            "hwmon1": {"name": "coretemp", "temp1_input": "45000", "temp1_label": "Package id 0",
                       "temp2_input": "43000", "temp2_label": "Core 0"},
        }.items():
            d = os.path.join(sysfs, "class/hwmon", dev)
            os.makedirs(d, exist_ok=True)
            for k, v in files.items():
                with open(os.path.join(d, k), "w") as f:
                    f.write(v + "\n")
        agent_conf = os.path.join(self.work, "agent.toml")
        with open(agent_conf, "w") as f:
            f.write(
                f'site = "{SITE}"\nnode = "agent0"\ninterval_secs = 10\n'
                f'[mqtt]\nhost = "127.0.0.1"\nport = {port}\n'
                f'[spool]\ndir = "{self.work}/agent-spool"\n'
                '[[sources]]\ntype = "sysinfo"\n'
                f'[[sources]]\ntype = "hwmon"\nsysfs_root = "{sysfs}"\n'
                '[[sources]]\ntype = "sim"\npoint = "it_input"\nbase_w = 300.0\namplitude_w = 40.0\nperiod_secs = 600.0\n'
            )
        agent_bin = os.path.abspath(self.args.agent_bin or os.path.join(self.bins, "dcwatt-agent"))
        chk = subprocess.run([agent_bin, "--config", agent_conf, "check-config"], capture_output=True, text=True)
        if chk.returncode != 0:
            raise BenchError(f"agent config refused: {chk.stderr}")
        peers = {"dcwatt-agent": self.start("dcwatt-agent", [agent_bin, "--config", agent_conf])}
        collectd = find("collectd", "/usr/sbin/collectd")
        if collectd:
            conf = os.path.join(self.work, "collectd.conf")
            with open(conf, "w") as f:
                f.write(
                    f'Hostname "agent0"\nInterval 10\nBaseDir "{self.work}"\nPIDFile "{self.work}/collectd.pid"\n'
                    'PluginDir "/usr/lib/collectd"\nTypesDB "/usr/share/collectd/types.db"\n'
                    "LoadPlugin cpu\nLoadPlugin memory\nLoadPlugin load\nLoadPlugin mqtt\n"
                    f'<Plugin mqtt>\n  <Publish "bench">\n    Host "127.0.0.1"\n    Port {port}\n'
                    '    ClientId "collectd-bench"\n    Prefix "collectd"\n    QoS 1\n  </Publish>\n</Plugin>\n'
                )
            peers["collectd"] = self.start("collectd", [collectd, "-f", "-C", conf])
        ne = find("prometheus-node-exporter", "/usr/bin/prometheus-node-exporter")
        ne_port = free_port()
        if ne:
            peers["node_exporter"] = self.start(
                "node_exporter", [ne, f"--web.listen-address=127.0.0.1:{ne_port}"]
            )
        # Count what reaches the broker from each, to check they all publish.
        counter = self.start(
            "mosquitto_sub-agent",
            ["mosquitto_sub", "-h", "127.0.0.1", "-p", str(port), "-t", "dcwatt/#", "-t", "collectd/#", "-v"],
        )
        deadline = time.monotonic() + secs
        scrapes = 0
        while True:
            if ne and http_get(ne_port, "/metrics"):
                scrapes += 1
            for name, p in peers.items():
                if not p.running():
                    raise BenchError(f"{name} exited:\n{p.tail()}")
            left = deadline - time.monotonic()
            if left <= 0:
                break
            time.sleep(min(10, left))
        sizes = {"dcwatt-agent": stripped_size(agent_bin, self.work)}
        if collectd:
            sizes["collectd"] = os.path.getsize(collectd) + sum(
                os.path.getsize(f"/usr/lib/collectd/{p}.so") for p in ("cpu", "memory", "load", "mqtt")
            )
        if ne:
            sizes["node_exporter"] = os.path.getsize(ne)
        for name, p in peers.items():
            cpu, _, hwm = proc_stats(p.pid)
            res[name] = {"cpu_s": cpu, "peak_rss_mib": hwm / 2**20, "anon_rss_mib": anon_rss(p.pid) / 2**20,
                         "binary_mib": sizes[name] / 2**20}
        res["node_exporter_scrapes"] = scrapes
        for p in [*peers.values(), counter]:
            self.stop(p)
        with open(counter.log_path) as f:
            topics = [line.split(" ", 1)[0] for line in f]
        res["dcwatt_messages"] = sum(t.startswith("dcwatt/") for t in topics)
        res["collectd_messages"] = sum(t.startswith("collectd/") for t in topics)
        if res["dcwatt_messages"] == 0 or (collectd and res["collectd_messages"] == 0 and not self.smoke):
            raise BenchError(f"an agent published nothing: {res}")
        self.stop(mq)
        self.results["agent"] = res

    def influx_ceiling(self):
        """VictoriaMetrics' raw ceiling: line-protocol files POSTed by curl, 4 in parallel."""
        lines = 40_000 if self.smoke else 4_000_000
        per_file = 5_000
        vm, port = self.victoria()
        files = os.path.join(self.work, "lines")
        os.makedirs(files, exist_ok=True)
        t = 1_800_000_000_000
        n = 0
        paths = []
        while n < lines:
            path = os.path.join(files, f"{len(paths):05}.lp")
            with open(path, "w") as f:
                for i in range(n, min(n + per_file, lines)):
                    host, k = divmod(i, 20)
                    f.write(
                        f"dcwatt_reading,component=sensor{k},metric=temp_c,node=h{host % 1000:06},"
                        f"rack=r{host % 1000 // 20:04},site={SITE} value={20 + k}.5 {t + host // 1000}\n"
                    )
            paths.append(path)
            n = min(n + per_file, lines)
        url = f"http://127.0.0.1:{port}/api/v2/write?org=dcwatt&bucket=bench&precision=ms"
        t0 = time.monotonic()
        out = subprocess.run(
            ["xargs", "-P", "4", "-I", "{}", "curl", "-sf", "-o", "/dev/null", "--data-binary", "{}", url],
            input="".join(f"@{p}\n" for p in paths), text=True, capture_output=True,
        )
        dt = time.monotonic() - t0
        if out.returncode != 0:
            raise BenchError(f"curl failed: {out.stderr}")
        self.results["influx_ceiling"] = {"lines": lines, "lines_per_s": lines / dt}
        self.stop(vm)

    def run(self, which):
        for name in which:
            t0 = time.monotonic()
            print(f"bench: {name} …", file=sys.stderr, flush=True)
            getattr(self, name)()
            print(f"bench: {name} done in {time.monotonic() - t0:.0f} s: {json.dumps(self.results.get(name))}",
                  file=sys.stderr, flush=True)

    def close(self):
        for p in list(self.procs):
            p.stop()
        if not self.args.keep:
            shutil.rmtree(self.work, ignore_errors=True)


def sink_done(m, lines):
    """The sink has written `lines` and holds nothing; an error when it lost any."""
    lost = {k: v for k, v in m.items() if v and k.startswith((
        "dcwatt_sink_queue_dropped_total", "dcwatt_influx_lines_rejected_total", "dcwatt_influx_lines_dropped_total"))}
    if lost:
        raise BenchError(f"the InfluxDB sink lost lines: {lost}")
    return m.get("dcwatt_influx_lines_written_total", 0) >= lines and m.get("dcwatt_influx_buffered_lines", 1) == 0 and m


def stripped_size(binary, work):
    out = os.path.join(work, os.path.basename(binary) + ".stripped")
    if subprocess.run(["strip", "-o", out, binary], capture_output=True).returncode != 0:
        return os.path.getsize(binary)
    return os.path.getsize(out)


def targets(r):
    """Each target of docs/benchmarks.md: (name, measured, target, met)."""
    out = []

    def add(name, value, fmt, target, met):
        out.append((name, fmt.format(value) if value is not None else "n/a", target, met))

    c = r.get("ceiling")
    if c:
        add("Ingest vs. Mosquitto → counting subscriber", 100 * c["collector_share"], "{:.0f} %", "≥ 95 %",
            c["collector_share"] >= 0.95)
        if "compact" in c:
            k = c["compact"]
            add("Ingest, compact encoding, vs. Mosquitto → counting subscriber (same batches)",
                100 * k["collector_share"], "{:.0f} %", "≥ 95 %", k["collector_share"] >= 0.95)
        add("Ingest with the InfluxDB sink on", 100 * c["collector_influx_share"], "{:.0f} %", "≥ 80 %",
            c["collector_influx_share"] >= 0.80)
    lat = r.get("latency", {}).get("10000")
    if lat:
        add("p99 latency at 10k hosts", lat["p99_ms"], "{:.1f} ms", "< 50 ms",
            lat["p99_ms"] is not None and lat["p99_ms"] < 50)
    st = r.get("site")
    if st:
        for broker in ("embedded", "mosquitto"):
            v = st[broker]
            add(f"Collector peak RSS, {st['hosts']:,}-host site, packaged configuration, via {broker}",
                v["peak_rss_mib"], "{:.0f} MiB", f"≤ {v['budget_mib']:.0f} MiB", v["within_budget"])
    mem = r.get("memory", {})
    per = [v["marginal_bytes_per_series"] for k, v in mem.items() if isinstance(v, dict)]
    if per:
        add("Collector memory per active series", max(per), "{:.0f} B", "≤ 2048 B", max(per) <= 2048)
    a = r.get("agent")
    if a:
        ag = a["dcwatt-agent"]
        add("Agent peak RSS", ag["peak_rss_mib"], "{:.1f} MiB", "≤ 5 MB", ag["peak_rss_mib"] * 2**20 <= 5e6)
        if "collectd" in a:
            add("Agent CPU seconds vs. collectd", ag["cpu_s"] / max(a["collectd"]["cpu_s"], 0.01), "{:.2f}×",
                "≤ 1×", ag["cpu_s"] <= a["collectd"]["cpu_s"])
        add("Agent binary, stripped", ag["binary_mib"], "{:.1f} MiB", "≤ 10 MB", ag["binary_mib"] * 2**20 <= 10e6)
    i, ic = r.get("ceiling"), r.get("influx_ceiling")
    if i and ic and "influx_sink_lines_per_s" in i:
        share = i["influx_sink_lines_per_s"] / ic["lines_per_s"]
        add("InfluxDB sink vs. VictoriaMetrics' raw ceiling", 100 * share, "{:.0f} %", "≥ 80 %", share >= 0.80)
    return out


def sub_cpu(runs):
    """", Mosquitto X CPU s, mosquitto_sub Y" for a subscriber drain: the medians of its runs."""
    if not runs:
        return ""
    return (f", Mosquitto {median([x['broker_cpu_s'] for x in runs]):.1f} CPU s, "
            f"mosquitto_sub {median([x['subscriber_cpu_s'] for x in runs]):.1f}")


def markdown(r, meta):
    rows = [f"### {meta['date']} · {meta['machine']} · commit {meta['commit']}", ""]
    rows += ["| Target | Measured | Target | Met |", "|---|---|---|---|"]
    rows += [f"| {n} | {v} | {t} | {'yes' if m else '**no**'} |" for n, v, t, m in targets(r)]
    rows += ["", "| Measurement | Result |", "|---|---|"]
    c = r.get("ceiling")
    if c:
        runs = ", ".join(f"{x:,.0f}" for x in c["mosquitto_sub_runs"])
        rows.append(f"| Backlog of {c['batches']:,} batches × {c['readings_per_batch']} readings: mosquitto_sub "
                    f"(median of {c['repetitions']}: {runs}) | {c['mosquitto_sub_batches_per_s']:,.0f} batches/s"
                    f"{sub_cpu(c.get('mosquitto_sub_cpu'))} |")
        runs = ", ".join(f"{x:,.0f}" for x in c["collector_runs"])
        rows.append(f"| … collector, full processing (median of {c['repetitions']}: {runs}) | "
                    f"{c['collector_batches_per_s']:,.0f} batches/s "
                    f"({c['readings_per_s']:,.0f} readings/s), {c['collector_cpu_s']:.1f} CPU s "
                    f"(Mosquitto {c.get('collector_broker_cpu_s', 0):.1f}), "
                    f"peak RSS {c['collector_peak_rss_mib']:.0f} MiB |")
        if "baseline_runs" in c:
            runs = ", ".join(f"{x:,.0f}" for x in c["baseline_runs"])
            rows.append(f"| … baseline build, full processing (median of {c['repetitions']}: {runs}) | "
                        f"{c['baseline_batches_per_s']:,.0f} batches/s ({100 * c['baseline_share']:.0f} %), "
                        f"{c['baseline_cpu_s']:.1f} CPU s |")
        if "compact" in c:
            k = c["compact"]
            runs = ", ".join(f"{x:,.0f}" for x in k["mosquitto_sub_runs"])
            rows.append(f"| The same backlog in the compact encoding: mosquitto_sub (median of {c['repetitions']}: {runs}) | "
                        f"{k['mosquitto_sub_batches_per_s']:,.0f} batches/s{sub_cpu(k.get('mosquitto_sub_cpu'))} |")
            runs = ", ".join(f"{x:,.0f}" for x in k["collector_runs"])
            rows.append(f"| … collector, full processing (median of {c['repetitions']}: {runs}) | "
                        f"{k['collector_batches_per_s']:,.0f} batches/s ({100 * k['collector_share']:.0f} %; "
                        f"{100 * k['share_of_json_ceiling']:.0f} % of the JSON ceiling), {k['collector_cpu_s']:.1f} CPU s "
                        f"(Mosquitto {k.get('collector_broker_cpu_s', 0):.1f}), "
                        f"peak RSS {k['collector_peak_rss_mib']:.0f} MiB |")
        rows.append(f"| … collector with the InfluxDB sink | intake {c['collector_influx_batches_per_s']:,.0f} batches/s, "
                    f"sustained {c['collector_influx_sustained_batches_per_s']:,.0f} batches/s, "
                    f"{c['collector_influx_cpu_s']:.1f} CPU s, peak RSS {c['collector_influx_peak_rss_mib']:.0f} MiB |")
        if "influx_sink_lines_per_s" in c:
            rows.append(f"| … InfluxDB sink into VictoriaMetrics | {c['influx_sink_lines_per_s']:,.0f} lines/s "
                        f"({c['influx_sink_lines']:,.0f} lines) |")
    ic = r.get("influx_ceiling")
    if ic:
        rows.append(f"| VictoriaMetrics raw ceiling (curl, 4 parallel, 5,000 lines per POST) | "
                    f"{ic['lines_per_s']:,.0f} lines/s |")
    e = r.get("embedded")
    if e:
        rows.append(f"| Flood of {e['batches']:,} batches: loadgen → Mosquitto → mosquitto_sub | "
                    f"{e['mosquitto_sub_batches_per_s']:,.0f} batches/s |")
        rows.append(f"| … loadgen → embedded broker → collector | {e['embedded_batches_per_s']:,.0f} batches/s "
                    f"({100 * e['embedded_share']:.0f} %), peak RSS {e['embedded_peak_rss_mib']:.0f} MiB |")
    for key, v in r.get("latency", {}).items():
        hosts = int(key.removeprefix("baseline_"))
        build = ", baseline build" if key.startswith("baseline_") else ""
        rows.append(f"| Latency, {hosts:,} hosts × 20 readings / 10 s for {v['seconds']} s{build} | "
                    f"p50 {v['p50_ms']:.1f} ms, p99 {v['p99_ms']:.1f} ms; collector CPU {100 * v['cpu_share']:.1f} %, "
                    + (f"a snapshot takes {v['snapshot_ms']:.1f} ms, " if v.get("snapshot_ms") is not None else "") +
                    f"peak RSS {v['peak_rss_mib']:.0f} MiB |")
    a = r.get("api")
    if a:
        def lat(d, path):
            v = d.get(path)
            return f"p50 {v['p50_ms']:.1f} / p99 {v['p99_ms']:.1f} ms" if v else "n/a"
        site = f"/api/v1/sites/{SITE}"
        for label in ("baseline", "current"):
            if label in a:
                b = a[label]
                d = b["drain"]
                rows.append(f"| API, {label} build, {a['clients']} clients polling each second while {a['hosts']:,} hosts "
                            f"publish | site view {lat(b['paced'], site)}; /metrics {lat(b['paced'], '/metrics')} |")
                rows.append(f"| … during a {a['batches']:,}-batch backlog drain | site view "
                            f"{lat(d.get('latency', {}), site)}; /metrics {lat(d.get('latency', {}), '/metrics')}; drain "
                            f"{d['alone_batches_per_s']:,.0f} batches/s alone, {d['with_clients_batches_per_s']:,.0f} with the clients |")
    cn = r.get("connections")
    if cn:
        for broker in ("mosquitto", "embedded"):
            v = cn.get(broker)
            if v and "failed" in v:
                rows.append(f"| {cn['hosts']:,} agents, one connection each, via {broker} | **failed**: "
                            f"{v['failed'][:200].replace('|', '/')} |")
            elif v:
                rows.append(f"| {cn['hosts']:,} agents, one connection each ({v['connections']:,}), 20 readings / 10 s "
                            f"for {cn['seconds']} s via {broker} | p50 {v['p50_ms']:.1f} ms, p99 {v['p99_ms']:.1f} ms; "
                            f"collector CPU {100 * v['cpu_share']:.1f} %, peak RSS {v['peak_rss_mib']:.0f} MiB; "
                            f"{v['batches']:,} batches, none missing; {v['connection_errors']} connection errors, retried |")
    sm = r.get("storm")
    if sm:
        k = sm["loadgen_error_kinds"]
        rows.append(f"| Reconnect storm: Mosquitto restarted (down {sm['down_s']} s) under {sm['agents']:,} agents, "
                    f"{sm['real_agents']} of them dcwatt-agent processes | half the clients back after "
                    f"{sm['half_connected_s']:.1f} s, 90 % after {sm['most_connected_s']:.1f} s, all after "
                    f"{sm['all_connected_s']:.1f} s; every real agent's spool in after {sm['spools_drained_s']:.1f} s; "
                    f"collector CPU {sm['collector_cpu_s_recovering']:.1f} s meanwhile; {sm['loadgen_batches']:,} simulated and "
                    f"{sm['real_batches_built']:,.0f} real batches, {sm['missing_batches']:.0f} missing (witness subscriber: "
                    f"{sm['witness_missing']}); simulated connections: {k['refused']:,} connects refused while down, "
                    f"{k['cut_at_stop']:,} cut at the stop, {k['other']} other errors |")
    st = r.get("site")
    if st:
        for broker in ("embedded", "mosquitto", "baseline_embedded", "baseline_mosquitto"):
            v = st.get(broker)
            if not v:
                continue
            rows.append(f"| {st['hosts']:,}-host site ({st['series']:,} series), packaged configuration, one connection "
                        f"per agent, {st['seconds']} s via {broker.replace('_', ' build, ')} | peak RSS {v['peak_rss_mib']:.0f} MiB "
                        f"(budget {v['budget_mib']:.0f} MiB), {v['rss_mib']:.0f} MiB at the end, "
                        f"CPU {100 * v['cpu_share']:.1f} %, {v['batches']:,} batches, none missing |")
    mem = r.get("memory", {})
    if mem:
        rows.append(f"| Collector idle RSS | {mem['idle_rss_mib']:.1f} MiB |")
        for k, v in mem.items():
            if isinstance(v, dict):
                rows.append(f"| {int(k):,} series | RSS {v['rss_mib']:.1f} MiB, {v['bytes_per_series']:.0f} B/series "
                            f"(marginal {v['marginal_bytes_per_series']:.0f} B) |")
    a = r.get("agent")
    if a:
        for name in ("dcwatt-agent", "collectd", "node_exporter"):
            if name in a:
                v = a[name]
                rows.append(f"| {name}, {a['seconds']} s at {a['interval_s']} s | peak RSS {v['peak_rss_mib']:.1f} MiB "
                            f"(private {v['anon_rss_mib']:.1f} MiB), "
                            f"{v['cpu_s']:.2f} CPU s, binary {v['binary_mib']:.1f} MiB |")
    return "\n".join(rows) + "\n"


BEGIN, END = "<!-- bench:results:begin -->", "<!-- bench:results:end -->"


def write_doc(path, table):
    with open(path) as f:
        doc = f.read()
    if BEGIN not in doc or END not in doc:
        raise BenchError(f"{path} has no {BEGIN} … {END} markers")
    head, rest = doc.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    with open(path, "w") as f:
        f.write(f"{head}{BEGIN}\n{table}{END}{tail}")


def main():
    # The agent comparison last: it is the long one (10 min) and the least disturbed by load.
    all_names = ["ceiling", "embedded", "latency", "connections", "storm", "site", "api", "memory", "influx_ceiling", "agent"]
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin-dir", default=os.path.join(ROOT, "target/release"))
    ap.add_argument("--agent-bin", help="the agent to measure (default: the one in --bin-dir)")
    ap.add_argument("--baseline-bin-dir", help="an older build's binaries, measured beside these (api, ceiling, site)")
    ap.add_argument("--smoke", action="store_true", help="tiny scale, for CI: checks the suite works")
    ap.add_argument("--only", action="append", choices=all_names, help="run only these (repeatable)")
    ap.add_argument("--json", help="write the raw results here")
    ap.add_argument("--write-doc", help="replace the results table in this Markdown file")
    ap.add_argument("--keep", action="store_true", help="keep the scratch directory and its logs")
    ap.add_argument("--profile", help="ceiling: also profile the collector's drains with perf, reports into this folder")
    args = ap.parse_args()
    for exe in ("dcwatt-collector", "dcwatt-agent", "dcwatt-loadgen"):
        if not os.access(os.path.join(args.bin_dir, exe), os.X_OK):
            sys.exit(f"bench: {exe} is not in {args.bin_dir}; build it first (scripts/bench.sh does)")
    b = Bench(args)
    missing = [n for n, p in (("mosquitto", b.mosquitto_exe), ("victoria-metrics", b.vm_exe),
                              ("mosquitto_sub", find("mosquitto_sub")), ("curl", find("curl"))) if not p]
    if missing:
        sys.exit(f"bench: missing {', '.join(missing)} (scripts/install-test-deps.sh installs them)")
    try:
        b.run(args.only or all_names)
    except BenchError as e:
        print(f"bench: FAILED: {e}\nlogs: {b.work}", file=sys.stderr)
        args.keep = True
        sys.exit(1)
    finally:
        b.close()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT).stdout.strip()
    meta = {
        "date": datetime.date.today().isoformat(),
        "machine": f"{os.cpu_count()} cores, {os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB, "
                   f"{platform.system()} {platform.release()}",
        "commit": commit or "unknown",
    }
    table = markdown(b.results, meta)
    print(table)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "results": b.results}, f, indent=2)
    if args.write_doc:
        write_doc(args.write_doc, table)


if __name__ == "__main__":
    main()
