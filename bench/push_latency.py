"""Push latency: from the lifecycle's commit to the message at a websocket client.

One daphne process and one ``manage.py live_relay`` process on the bench database and
Redis db; websocket clients on ``/ws/matters/<id>/events?token=…`` in a separate process
(bench/_ws_clients.py); the lifecycle driven from this process.

The driver keeps 30 jobs processing (job type DOCUMENT_PROCESSING, 5 stages; the stage
functions never run: the driver calls the lifecycle as a worker would). Each job begins
a stage, records progress every 0.5 s (PROGRESS_WRITE_INTERVAL; done 1..3 of 4),
completes the stage 2 s after it began, and begins the next 20 ms later (a worker's
pick-up); after the 5th stage a new job is created in the next matter. The real
DOCUMENT_PROCESSING type is used, not a bench pipeline: daphne and the relay build job
objects from the registry, and a pipeline registered only in this process would make
every push fail there. The driver takes ``time.time()`` as each call returns (autocommit:
the statement has committed) as the transition's commit time.

A transition counts as delivered to a client when a ``job.updated`` for that job with
``updated_at`` >= the transition's arrives (later-or-equal state: the relay coalesces
progress by design, and every push carries the whole state). For status/stage changes
(create, begin, complete) the exact ``updated_at`` is known, and the tables also say how
many arrived exactly and how many only as a later state ("superseded"). Latency =
client receive time - commit time, over every (transition, client of its matter) pair.

Configurations, each with fresh daphne, relay and clients:

- ``spread``: 100 and 500 clients over 50 matters (2 and 10 per matter), pub-sub layer;
  500 clients with the core layer (``CHANNEL_LAYER_BACKEND=channels_redis.core.
  RedisChannelLayer`` for daphne and the relay);
- ``worst``: 500 clients on ONE matter with all 30 jobs, pub-sub layer, the driver run
  for a fixed time. Every relay push is captured from Redis (PSUBSCRIBE on the layer's
  group channel), then the baseline replays exactly those messages (same bytes, same
  times) with bare ``channel_layer.group_send`` from a separate process to the same 500
  clients on the same daphne. Delivered pushes/s = websocket messages received by all
  clients / (last arrival - first send), ours and bare.

CPU of daphne, the relay, the clients, this process (the driver) and redis-server comes
from /proc/<pid>/stat over the measured window.

    .venv/bin/python bench/push_latency.py [--measure 25] [--warmup 5] [--worst 20]
        [--only spread|worst]
"""

from __future__ import annotations

import argparse
import bisect
import heapq
import json
import os
import pickle
import subprocess
import sys
import threading
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import _setup

NAME = "push_latency"
LOG_DIR = _setup.RESULTS_DIR / "logs"
WORK_DIR = _setup.RESULTS_DIR / "work"
MATTERS = 50
SLOTS = 30
PROGRESS_S = 0.5
TICKS_PER_STAGE = 4  # begin, 3 progress writes, complete: a stage every 2 s
PICKUP_S = 0.020
DRAIN_QUIET_S = 3.0
DRAIN_MAX_S = 120.0
TARGET_P99_S = 0.250
TARGET_RATIO = 0.8
PUBSUB = "channels_redis.pubsub.RedisPubSubChannelLayer"
CORE = "channels_redis.core.RedisChannelLayer"


# --- processes ---------------------------------------------------------------------------


def proc_cpu(pid: int | None) -> float | None:
    """User + system CPU seconds of ``pid`` (/proc/<pid>/stat), or None."""
    if not pid:
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Processes:
    """Child processes, each logging to a file; all stopped by ``stop``."""

    def __init__(self) -> None:
        self.procs: dict[str, subprocess.Popen] = {}

    def start(self, name: str, args: list[str], env: dict[str, str], **kw: Any) -> subprocess.Popen:
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        with open(LOG_DIR / f"{NAME}-{name}.log", "wb") as log:
            proc = subprocess.Popen(
                args,
                env=env,
                cwd=_setup.ROOT,
                stdout=kw.pop("stdout", log),
                stderr=subprocess.STDOUT if "stdout" not in kw else log,
                **kw,
            )
        self.procs[name] = proc
        return proc

    def check(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise SystemExit(f"{name} exited with {proc.returncode}; see {LOG_DIR}")

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        deadline = time.monotonic() + 15
        for proc in self.procs.values():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.procs.clear()


def _wait_until(predicate: Any, timeout: float, what: str, procs: Processes) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        procs.check()
        if predicate():
            return
        time.sleep(0.05)
    raise SystemExit(f"timed out waiting for {what}")


def _relay_listening(redis: Any) -> bool:
    from processing.live import notices

    return bool(redis.pubsub_numsub(notices.channel())[0][1])


class ClientsProcess:
    """bench/_ws_clients.py: open the sockets, dump what arrived, quit."""

    def __init__(self, procs: Processes, port: int, spec: list[list[str]], tag: str) -> None:
        WORK_DIR.mkdir(parents=True, exist_ok=True)
        self.tag = tag
        spec_path = WORK_DIR / f"{NAME}-{tag}-spec.json"
        spec_path.write_text(json.dumps(spec))
        self.proc = procs.start(
            f"clients-{tag}",
            [
                sys.executable,
                str(_setup.BENCH_DIR / "_ws_clients.py"),
                "--port",
                str(port),
                "--spec",
                str(spec_path),
            ],
            _setup.child_env(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def ready(self) -> tuple[int, int]:
        line = self.proc.stdout.readline().split()  # type: ignore[union-attr]
        if not line or line[0] != "READY":
            raise SystemExit(f"clients: {line}; see {LOG_DIR}/{NAME}-clients-{self.tag}.log")
        return int(line[1]), int(line[2])

    def dump(self, name: str) -> dict[str, Any]:
        path = WORK_DIR / f"{NAME}-{self.tag}-{name}.json"
        self.proc.stdin.write(f"dump {path}\n")  # type: ignore[union-attr]
        self.proc.stdin.flush()  # type: ignore[union-attr]
        self.proc.stdout.readline()  # type: ignore[union-attr]
        data = json.loads(path.read_text())
        path.unlink()
        return data

    def quit(self) -> None:
        try:
            self.proc.stdin.write("quit\n")  # type: ignore[union-attr]
            self.proc.stdin.flush()  # type: ignore[union-attr]
            self.proc.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            pass


class Capture(threading.Thread):
    """Every group_send of the pub-sub layer, from Redis: (time, channel, payload)."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        from django.conf import settings

        self.pattern = f"{settings.LIVE_PREFIX}asgi__group__*"
        self.pubsub = _setup.redis().pubsub()
        self.pubsub.psubscribe(self.pattern)
        self.messages: list[tuple[float, str, bytes]] = []
        self.running = True

    def run(self) -> None:
        while self.running:
            message = self.pubsub.get_message(ignore_subscribe_messages=True, timeout=0.2)
            if message is not None:
                self.messages.append((time.time(), message["channel"].decode(), message["data"]))

    def take(self) -> list[tuple[float, str, bytes]]:
        taken, self.messages = self.messages, []
        return taken

    def stop(self) -> None:
        self.running = False
        self.join(timeout=2)
        self.pubsub.close()


# --- the driver --------------------------------------------------------------------------


class Driver:
    """Keeps SLOTS jobs processing through the lifecycle; records each transition."""

    def __init__(self, user: Any, matters: list[Any]) -> None:
        self.user, self.matters = user, matters
        self.heap: list[tuple[float, int, int, str]] = []
        self.slots: list[dict[str, Any]] = [{"gen": 0} for _ in range(SLOTS)]
        self.transitions: list[dict[str, Any]] = []
        self.late: list[float] = []
        self.seq = 0
        self.recording = True
        now = time.time()
        for i in range(SLOTS):  # spread the slots over one progress interval
            self._at(now + PROGRESS_S * i / SLOTS, i, "new")

    def _at(self, when: float, slot: int, action: str) -> None:
        self.seq += 1
        heapq.heappush(self.heap, (when, self.seq, slot, action))

    def _record(
        self, slot: dict[str, Any], kind: str, threshold: float, exact: str | None, what: str
    ) -> None:
        if self.recording:
            self.transitions.append(
                {
                    "job": str(slot["job"].pk),
                    "matter": str(slot["job"].matter_id),
                    "kind": kind,
                    "threshold": threshold,
                    "exact": exact,
                    "commit": time.time(),
                    "what": what,
                }
            )

    def run(self, seconds: float) -> None:
        end = time.time() + seconds
        while self.heap and self.heap[0][0] < end:
            when, _seq, index, action = heapq.heappop(self.heap)
            delay = when - time.time()
            if delay > 0:
                time.sleep(delay)
            else:
                self.late.append(-delay)
            self._step(index, action)

    def _step(self, index: int, action: str) -> None:
        from processing.jobs import lifecycle
        from processing.models import Document
        from processing.payloads import iso

        slot = self.slots[index]
        if action == "new":
            matter = self.matters[(index + SLOTS * slot["gen"]) % len(self.matters)]
            slot["gen"] += 1
            name = f"bench-{uuid.uuid4().hex[:12]}.pdf"
            document = Document.objects.create(
                matter=matter,
                uploaded_by=self.user,
                original_name=name,
                file=f"x/{name}",
                content_type="application/pdf",
                size=100,
                sha256="0" * 64,
                page_count=4,
            )
            slot["job"] = lifecycle.create_job(document, by=self.user)
            self._record(
                slot, "status", _ts(slot["job"].updated_at), iso(slot["job"].updated_at), "create"
            )
            self._at(time.time() + PICKUP_S, index, "begin")
        elif action == "begin":
            started = lifecycle.begin_stage(slot["job"].pk, slot["job"].dispatch_id, worker="bench")
            if started is None:
                raise SystemExit(f"begin_stage refused job {slot['job'].pk}")
            slot["job"], slot["run"] = started
            slot["ticks"] = 0
            updated = slot["job"].updated_at
            self._record(slot, "status", _ts(updated), iso(updated), "begin")
            self._at(time.time() + PROGRESS_S, index, "progress")
        elif action == "progress":
            slot["ticks"] += 1
            before = time.time()
            done = slot["ticks"]
            if not lifecycle.record_progress(
                slot["job"], slot["run"], done=done, total=TICKS_PER_STAGE
            ):
                raise SystemExit(f"record_progress refused job {slot['job'].pk}")
            self._record(slot, "progress", before, None, "progress")
            nxt = "progress" if done < TICKS_PER_STAGE - 1 else "complete"
            self._at(time.time() + PROGRESS_S, index, nxt)
        elif action == "complete":
            job = lifecycle.complete_stage(
                slot["job"], slot["run"], done=TICKS_PER_STAGE, total=TICKS_PER_STAGE
            )
            if job is None:
                raise SystemExit(f"complete_stage refused job {slot['job'].pk}")
            slot["job"] = job
            self._record(
                slot,
                "status",
                _ts(job.updated_at),
                iso(job.updated_at),
                "complete" if job.status == "COMPLETED" else "next-stage",
            )
            self._at(time.time() + PICKUP_S, index, "new" if job.status == "COMPLETED" else "begin")


def _ts(value: datetime) -> float:
    return value.timestamp()


_PARSED: dict[str, float] = {}


def _parse(iso_text: str) -> float:
    value = _PARSED.get(iso_text)
    if value is None:
        value = _PARSED[iso_text] = datetime.fromisoformat(iso_text).timestamp()
    return value


# --- analysis ----------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile ``q`` (0-100) of ``values``."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, int(round(q / 100 * len(ordered) + 0.5)) - 1))
    return ordered[rank]


def analyse(transitions: list[dict[str, Any]], dump: dict[str, Any]) -> dict[str, Any]:
    """Latency and delivery of every (transition, client of its matter) pair."""
    by_matter: dict[str, list[int]] = {}
    index: list[dict[str, tuple[list[float], list[float], set[str]]]] = []
    for number, (label, records) in enumerate(dump["clients"]):
        by_matter.setdefault(label, []).append(number)
        per_job: dict[str, tuple[list[float], list[float], set[str]]] = {}
        for record in records:
            if len(record) == 3:
                t, job, updated = record
                uts, recvs, exact = per_job.setdefault(job, ([], [], set()))
                value = _parse(updated)
                uts.append(max(value, uts[-1]) if uts else value)  # running max: bisectable
                recvs.append(t)
                exact.add(updated)
        index.append(per_job)
    latency: dict[str, list[float]] = {"all": [], "status": [], "progress": []}
    counts = {
        "pairs": 0,
        "lost": 0,
        "lost_status": 0,
        "lost_progress": 0,
        "status_pairs": 0,
        "status_exact": 0,
        "status_superseded": 0,
    }
    for tr in transitions:
        for client in by_matter.get(tr["matter"], []):
            counts["pairs"] += 1
            status = tr["kind"] == "status"
            counts["status_pairs"] += status
            uts, recvs, exact = index[client].get(tr["job"], ([], [], set()))
            at = bisect.bisect_left(uts, tr["threshold"] - 1e-7)
            if at == len(uts):
                counts["lost"] += 1
                counts["lost_status" if status else "lost_progress"] += 1
                continue
            if status:
                if tr["exact"] in exact:
                    counts["status_exact"] += 1
                else:
                    counts["status_superseded"] += 1
            seconds = recvs[at] - tr["commit"]
            latency["all"].append(seconds)
            latency["status" if status else "progress"].append(seconds)
    out: dict[str, Any] = {**counts, "transitions": len(transitions)}
    for name, values in latency.items():
        out[name] = {
            "n": len(values),
            **{f"p{q}_ms": _ms(percentile(values, q)) for q in (50, 95, 99)},
            "max_ms": _ms(max(values) if values else None),
        }
    out["messages"] = sum(len(r) for _, r in dump["clients"])
    return out


def summary_lag(transitions: list[dict[str, Any]], dump: dict[str, Any]) -> dict[str, Any]:
    """How fresh the counts stay: for each job created or completed (a change of the
    matter's counts) and each client of its matter, the time from the commit to the next
    ``matter.summary`` that client received. The relay works a summary out again at most
    SUMMARY_INTERVAL (2 s) after the last when counts moved, so up to about 2 s is
    expected; much more would mean summaries starved behind updates."""
    by_matter: dict[str, list[list[float]]] = {}
    for label, records in dump["clients"]:
        times = sorted(r[0] for r in records if len(r) == 2 and r[1] == "matter.summary")
        by_matter.setdefault(label, []).append(times)
    lags, missing = [], 0
    for tr in transitions:
        if tr["what"] not in ("create", "complete"):
            continue
        for times in by_matter.get(tr["matter"], []):
            at = bisect.bisect_left(times, tr["commit"])
            if at == len(times):
                missing += 1
            else:
                lags.append(times[at] - tr["commit"])
    return {
        **{f"p{q}_ms": _ms(percentile(lags, q)) for q in (50, 95, 99)},
        "max_ms": _ms(max(lags) if lags else None),
        "no_summary_after": missing,
    }


def relay_lag(transitions: list[dict[str, Any]], pushes: list[Any]) -> dict[str, Any]:
    """Commit -> the relay's group_send (seen on Redis), per transition: the relay's share.

    The captured pushes stand for one client per matter; the rest of the latency
    (group_send -> client) is the channel layer's and daphne's.
    """
    from channels.layers import get_channel_layer

    layer = get_channel_layer()
    per_matter: dict[str, list[list[Any]]] = {}
    for t, channel, data in pushes:
        matter = channel.rsplit("matter-", 1)[1]
        for text in layer.deserialize(data).get("events", []):  # type: ignore[union-attr]
            event = json.loads(text)
            if event["type"] == "job.updated":
                job = event["job"]
                per_matter.setdefault(matter, []).append([t, job["job_id"], job["updated_at"]])
    result = analyse(transitions, {"clients": list(per_matter.items())})
    return {key: result[key] for key in ("all", "status", "progress", "lost", "pairs")}


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value * 1000, 1)


# --- one configuration -------------------------------------------------------------------


class Stack:
    """daphne + live_relay with a given channel layer, and the clients."""

    def __init__(self, layer: str, tag: str) -> None:
        self.layer, self.tag = layer, tag
        self.procs = Processes()
        self.port = _setup.free_port()
        env = _setup.child_env(CHANNEL_LAYER_BACKEND=layer)
        self.daphne = self.procs.start(
            f"daphne-{tag}",
            [
                sys.executable,
                "-m",
                "daphne",
                "-b",
                "127.0.0.1",
                "-p",
                str(self.port),
                "jobtracker.asgi:application",
            ],
            env,
        )
        # INFO: the core layer logs "channels over capacity" there when it drops a message.
        self.relay = self.procs.start(
            f"relay-{tag}",
            [sys.executable, "manage.py", "live_relay"],
            {**env, "LOG_LEVEL": "INFO"},
        )
        redis = _setup.redis()
        _wait_until(lambda: _setup.server_up(self.port), 60, "daphne", self.procs)
        _wait_until(lambda: _relay_listening(redis), 60, "the relay", self.procs)
        self.clients: ClientsProcess | None = None

    def connect(self, spec: list[list[str]]) -> tuple[int, int]:
        started = time.monotonic()
        self.clients = ClientsProcess(self.procs, self.port, spec, self.tag)
        opened, failed = self.clients.ready()
        print(
            f"  {opened} clients connected ({failed} failed) in {time.monotonic() - started:.1f} s",
            flush=True,
        )
        return opened, failed

    def cpu(self) -> dict[str, float | None]:
        return {
            "daphne": proc_cpu(self.daphne.pid),
            "relay": proc_cpu(self.relay.pid),
            "clients": proc_cpu(self.clients.proc.pid if self.clients else None),
            "driver": proc_cpu(os.getpid()),
            "redis": proc_cpu(_redis_pid()),
            "postgres": _postgres_cpu(),
        }

    def over_capacity_lines(self) -> int:
        log = (LOG_DIR / f"{NAME}-relay-{self.tag}.log").read_text(errors="replace")
        return log.count("over capacity")

    def stop(self) -> None:
        if self.clients is not None:
            self.clients.quit()
        self.procs.stop()


def _redis_pid() -> int | None:
    return int(_setup.redis().info("server")["process_id"])


def _postgres_cpu() -> float | None:
    """CPU seconds of the PostgreSQL server: the postmaster and every process it forked."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SHOW data_directory")
        data_dir = cursor.fetchone()[0]
    try:
        postmaster = int(Path(data_dir, "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(entry.name) == postmaster or int(fields[1]) == postmaster:
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def _cpu_share(before: dict[str, Any], after: dict[str, Any], seconds: float) -> dict[str, Any]:
    return {
        name: (
            None  # postgres: a backend that exited took its CPU time with it
            if before[name] is None or after[name] is None or after[name] < before[name]
            else round(100 * (after[name] - before[name]) / seconds, 1)
        )
        for name in before
    }


def spread(
    user: Any,
    matters: list[Any],
    token: str,
    layer: str,
    n_clients: int,
    args: argparse.Namespace,
    capture: Capture,
) -> dict[str, Any]:
    tag = f"{'core' if layer == CORE else 'pubsub'}-{n_clients}"
    print(
        f"{tag}: {n_clients} clients over {len(matters)} matters, {SLOTS} jobs processing, "
        f"layer {layer.rsplit('.', 1)[1]}",
        flush=True,
    )
    stack = Stack(layer, tag)
    try:
        spec = [
            [
                f"/ws/matters/{matters[i % len(matters)].pk}/events?token={token}",
                str(matters[i % len(matters)].pk),
            ]
            for i in range(n_clients)
        ]
        opened, failed = stack.connect(spec)
        driver = Driver(user, matters)
        driver.recording = False
        driver.run(args.warmup)
        stack.clients.dump("warmup")  # type: ignore[union-attr]
        capture.take()
        driver.recording = True
        load_before = _setup.load()
        cpu_before, t0 = stack.cpu(), time.time()
        driver.run(args.measure)
        cpu_after, t1 = stack.cpu(), time.time()
        driver.recording = False
        _last, dump = _wait_quiet(stack)  # late pushes still count
        pushes = capture.take()
        result = analyse(driver.transitions, dump)
        result["summary_lag"] = summary_lag(driver.transitions, dump)
        if layer == PUBSUB:
            result["relay_lag"] = relay_lag(driver.transitions, pushes)
        result.update(
            {
                "config": tag,
                "layer": layer,
                "clients": n_clients,
                "clients_open": opened,
                "clients_failed": failed,
                "clients_closed_by_server": dump["closed"],
                "measure_s": round(t1 - t0, 2),
                "cpu_percent": _cpu_share(cpu_before, cpu_after, t1 - t0),
                "transitions_per_s": round(len(driver.transitions) / (t1 - t0), 1),
                "messages_per_s": round(result["messages"] / (t1 - t0), 1),
                "relay_pushes": len(pushes) if layer == PUBSUB else None,
                "relay_push_bytes_median": _setup.median([len(p[2]) for p in pushes])
                if pushes
                else None,
                "core_over_capacity_log_lines": stack.over_capacity_lines()
                if layer == CORE
                else None,
                "driver_late_p99_ms": _ms(percentile(driver.late, 99)) if driver.late else 0.0,
                "load_1min": load_before,
            }
        )
        _print_spread(result)
        return result
    finally:
        stack.stop()


def _print_spread(r: dict[str, Any]) -> None:
    a, s, p = r["all"], r["status"], r["progress"]
    if r.get("relay_lag"):
        lag = r["relay_lag"]["all"]
        print(f"  commit -> relay group_send p50/p99 {lag['p50_ms']}/{lag['p99_ms']} ms")
    sl = r["summary_lag"]
    print(
        f"  job created/completed -> next matter.summary p50/p99/max {sl['p50_ms']}/{sl['p99_ms']}/"
        f"{sl['max_ms']} ms ({sl['no_summary_after']} pairs with none after)"
    )
    print(
        f"  {r['transitions']} transitions ({r['transitions_per_s']}/s), {r['pairs']} "
        f"(transition, client) pairs; p50/p95/p99 {a['p50_ms']}/{a['p95_ms']}/{a['p99_ms']} ms "
        f"(status {s['p99_ms']}, progress {p['p99_ms']} p99); lost {r['lost']} "
        f"(status {r['lost_status']}); cpu % {r['cpu_percent']}",
        flush=True,
    )


def worst(
    user: Any, matters: list[Any], token: str, args: argparse.Namespace, capture: Capture
) -> dict[str, Any]:
    from django.conf import settings

    hot = matters[0]
    n_clients = 500
    tag = "worst"
    print(
        f"worst: {n_clients} clients on ONE matter with all {SLOTS} jobs, layer pub-sub, "
        f"driver for {args.worst} s; then bare group_send replaying the relay's pushes",
        flush=True,
    )
    stack = Stack(PUBSUB, tag)
    try:
        spec = [[f"/ws/matters/{hot.pk}/events?token={token}", str(hot.pk)]] * n_clients
        opened, failed = stack.connect(spec)
        phases: dict[str, Any] = {}

        # ours: the lifecycle, the relay, the layer, daphne
        capture.take()
        driver = Driver(user, [hot])
        cpu_before, t0 = stack.cpu(), time.time()
        load_before = _setup.load()
        driver.run(args.worst)
        t_sent = time.time()
        last, dump = _wait_quiet(stack)
        cpu_after = stack.cpu()
        pushes = capture.take()
        if not pushes:
            raise SystemExit("worst: no relay push was captured")
        phases["ours"] = _phase_result(
            dump, pushes[0][0], t_sent, last, cpu_before, cpu_after, pushes, n_clients, load_before
        )
        phases["ours"]["latency"] = analyse(driver.transitions, dump)
        phases["ours"]["relay_lag"] = relay_lag(driver.transitions, pushes)
        phases["ours"]["status_changes"] = _status_counts(driver.transitions, dump)

        # bare: the same messages at the same times, group_send from its own process
        replay = WORK_DIR / f"{NAME}-replay.pickle"
        replay.write_bytes(pickle.dumps([(t - t0, channel, data) for t, channel, data in pushes]))
        group = f"{settings.LIVE_PREFIX}asgi__group__"
        cpu_before, t0 = stack.cpu(), time.time()
        load_before = _setup.load()
        sender = subprocess.run(
            [sys.executable, __file__, "--bare-sender", str(replay), "--group-prefix", group],
            env=_setup.child_env(CHANNEL_LAYER_BACKEND=PUBSUB),
            cwd=_setup.ROOT,
            capture_output=True,
            text=True,
            timeout=args.worst + 60,
        )
        if sender.returncode != 0:
            raise SystemExit(f"bare sender failed: {sender.stderr[-2000:]}")
        sent = json.loads(sender.stdout.strip().splitlines()[-1])
        last, dump = _wait_quiet(stack)
        cpu_after = stack.cpu()
        bare_pushes = capture.take()
        phases["bare"] = _phase_result(
            dump,
            sent["first"],
            sent["last"],
            last,
            cpu_before,
            cpu_after,
            bare_pushes,
            n_clients,
            load_before,
        )
        phases["bare"]["sender_cpu_s"] = sent["cpu_s"]
        replay.unlink()

        ratio = phases["ours"]["delivered_per_s"] / phases["bare"]["delivered_per_s"]
        result = {
            "config": tag,
            "clients": n_clients,
            "clients_open": opened,
            "clients_failed": failed,
            **phases,
            "ratio_ours_over_bare": round(ratio, 3),
        }
        _print_worst(result)
        return result
    finally:
        stack.stop()


def _wait_quiet(stack: Stack) -> tuple[float, dict[str, Any]]:
    """Wait until no message has reached the clients for DRAIN_QUIET_S.

    Returns the last arrival and everything the clients received since their last dump.
    """
    deadline = time.time() + DRAIN_MAX_S
    last_seen = time.time()
    probes = []
    drained = False
    while time.time() < deadline:
        time.sleep(1.0)
        data = stack.clients.dump("probe")  # type: ignore[union-attr]
        probes.append(data)
        arrivals = [r[-1][0] for _, r in data["clients"] if r]
        if arrivals:
            last_seen = max(last_seen, *arrivals)
        elif time.time() - last_seen >= DRAIN_QUIET_S:
            drained = True
            break
    merged = _merged(probes)
    merged["drained"] = drained
    return last_seen, merged


def _merged(stack_probes: list[dict[str, Any]]) -> dict[str, Any]:
    merged: dict[int, list[Any]] = {}
    labels: dict[int, str] = {}
    for data in stack_probes:
        for number, (label, records) in enumerate(data["clients"]):
            labels[number] = label
            merged.setdefault(number, []).extend(records)
    return {
        "clients": [[labels[n], merged[n]] for n in sorted(merged)],
        "closed": stack_probes[-1]["closed"] if stack_probes else 0,
    }


def _phase_result(
    dump: dict[str, Any],
    first_send: float,
    last_send: float,
    last: float,
    cpu_before: dict[str, Any],
    cpu_after: dict[str, Any],
    pushes: list[Any],
    n_clients: int,
    load_before: float,
) -> dict[str, Any]:
    messages = sum(len(r) for _, r in dump["clients"])
    events_per_push = []
    for _t, _channel, data in pushes:
        events_per_push.append(_events_in(data))
    expected = sum(events_per_push) * n_clients
    span = max(last - first_send, 1e-9)
    per_client = [len(r) for _, r in dump["clients"]]
    return {
        "pushes_sent": len(pushes),
        "push_bytes_median": _setup.median([len(p[2]) for p in pushes]) if pushes else None,
        "events_per_push_mean": round(sum(events_per_push) / len(pushes), 2) if pushes else None,
        "messages_expected": expected,
        "messages_delivered": messages,
        "delivered_fraction": round(messages / expected, 4) if expected else None,
        "client_min_messages": min(per_client) if per_client else 0,
        "client_max_messages": max(per_client) if per_client else 0,
        "send_span_s": round(last_send - first_send, 2),
        "last_arrival_after_last_send_s": round(last - last_send, 2),
        "delivered_per_s": round(messages / span, 1),
        "asked_per_s": round(expected / max(last_send - first_send, 1e-9), 1),
        "cpu_percent": _cpu_share(cpu_before, cpu_after, span),
        "load_1min": load_before,
        "drained": dump.get("drained"),
    }


def _events_in(data: bytes) -> int:
    from channels.layers import get_channel_layer

    message = get_channel_layer().deserialize(data)  # type: ignore[union-attr]
    return len(message.get("events", []))


def _status_counts(transitions: list[dict[str, Any]], dump: dict[str, Any]) -> dict[str, Any]:
    """Per client: how many of the driven status changes arrived exactly, or as a later state."""
    status = [t for t in transitions if t["kind"] == "status"]
    exact_per_client, covered_per_client = [], []
    for _label, records in dump["clients"]:
        seen: set[tuple[str, str]] = set()
        latest: dict[str, float] = {}
        for record in records:
            if len(record) == 3:
                seen.add((record[1], record[2]))
                latest[record[1]] = max(latest.get(record[1], 0.0), _parse(record[2]))
        exact_per_client.append(sum(1 for t in status if (t["job"], t["exact"]) in seen))
        covered_per_client.append(
            sum(1 for t in status if latest.get(t["job"], 0.0) >= t["threshold"] - 1e-7)
        )
    return {
        "driven": len(status),
        "exact_min_per_client": min(exact_per_client, default=0),
        "exact_max_per_client": max(exact_per_client, default=0),
        "covered_min_per_client": min(covered_per_client, default=0),
        "lost_at_worst_client": len(status) - min(covered_per_client, default=0),
    }


def _print_worst(r: dict[str, Any]) -> None:
    for name in ("ours", "bare"):
        p = r[name]
        print(
            f"  {name}: {p['pushes_sent']} pushes, {p['messages_delivered']} of "
            f"{p['messages_expected']} messages delivered, {p['delivered_per_s']}/s (asked "
            f"{p['asked_per_s']}/s), last arrival {p['last_arrival_after_last_send_s']} s after "
            f"the last send; cpu % {p['cpu_percent']}",
            flush=True,
        )
    print(
        f"  ours/bare {r['ratio_ours_over_bare']}; status changes {r['ours']['status_changes']}",
        flush=True,
    )


# --- what the relay does per push --------------------------------------------------------


def relay_cost(matter_id: str, rounds: int = 30) -> dict[str, Any]:
    """Time and queries of the relay's work per push, in this process: what one lane
    thread does for a job update (one PROCESSING job of the matter) and for the
    matter's summary. Medians."""
    import re
    from collections import Counter

    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from processing.live import notices, relay
    from processing.models import ProcessingJob

    job = ProcessingJob.objects.filter(matter_id=matter_id, status="PROCESSING").first()
    if job is None:
        return {}
    active = ProcessingJob.objects.filter(matter_id=matter_id).active().count()
    out: dict[str, Any] = {"matter_active_jobs": active}
    row = json.loads(
        json.dumps(
            {f.attname: getattr(job, f.attname) for f in job._meta.concrete_fields},
            default=notices._plain,
        )
    )
    notice = {"job": str(job.pk), "matter": str(matter_id), "kind": "status", "row": row}
    work = {
        "job update": lambda: relay._build_update(str(matter_id), relay.Pending(notices=[notice])),
        "summary": lambda: relay._build_summary(str(matter_id), None),
    }
    for kind, build in work.items():
        times = []
        for _ in range(rounds):
            begun = time.perf_counter()
            build()
            times.append(time.perf_counter() - begun)
        with CaptureQueriesContext(connection) as queries:
            build()
        shapes = Counter(re.sub(r"\s+", " ", q["sql"])[:90] for q in queries.captured_queries)
        out[kind] = {
            "median_ms": round(1000 * _setup.median(times), 2),
            "queries": len(queries.captured_queries),
            "sql_ms": round(sum(float(q["time"]) for q in queries.captured_queries) * 1000, 2),
            "repeated": {k: v for k, v in shapes.items() if v > 1},
        }
    return out


def _busy_matter(matters: list[Any]) -> str:
    from processing.models import ProcessingJob

    ids = [m.pk for m in matters]
    job = ProcessingJob.objects.filter(matter_id__in=ids, status="PROCESSING").first()
    return str(job.matter_id if job else ids[0])


# --- the baseline's sender ---------------------------------------------------------------


def bare_sender(path: str, group_prefix: str) -> None:
    """Replay captured pushes with bare group_send at their offsets; prints a JSON line."""
    import asyncio

    _setup.django_setup()
    from channels.layers import get_channel_layer

    replay = pickle.loads(Path(path).read_bytes())
    layer = get_channel_layer()

    async def send() -> tuple[float, float]:
        start = time.time()
        first = last = start
        for number, (offset, channel, data) in enumerate(replay):
            delay = start + offset - time.time()
            if delay > 0:
                await asyncio.sleep(delay)
            message = layer.deserialize(data)
            await layer.group_send(channel[len(group_prefix) :], message)
            last = time.time()
            if number == 0:
                first = last
        return first, last

    first, last = asyncio.run(send())
    print(
        json.dumps(
            {"first": first, "last": last, "sent": len(replay), "cpu_s": proc_cpu(os.getpid())}
        )
    )


# --- main --------------------------------------------------------------------------------


def main() -> None:
    global SLOTS
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--measure", type=float, default=25.0, help="seconds measured per config")
    parser.add_argument("--warmup", type=float, default=5.0)
    parser.add_argument("--worst", type=float, default=2.0, help="seconds driven in the worst case")
    parser.add_argument("--only", choices=["spread", "worst"], default=None)
    parser.add_argument("--slots", type=int, default=SLOTS, help="jobs kept processing")
    parser.add_argument(
        "--config", choices=["pubsub-100", "pubsub-500", "core-500"], help="only this spread"
    )
    parser.add_argument("--bare-sender", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--group-prefix", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.bare_sender:
        bare_sender(args.bare_sender, args.group_prefix)
        return
    SLOTS = args.slots

    started = time.monotonic()
    info = _setup.prepare()
    from django.conf import settings
    from django.db import connections

    from processing.matters import create_matter
    from processing.tokens import create_token

    user, _ = _setup.make_owner()
    matters = [create_matter(f"Live bench {i:02}", owner=user) for i in range(MATTERS)]
    hot = create_matter("Live bench: the busy matter", owner=user)
    _token, token = create_token(user, name="bench")
    connections.close_all()
    print(
        f"LIVE_PROGRESS_INTERVAL {settings.LIVE_PROGRESS_INTERVAL} s; "
        f"{SLOTS} jobs: progress every {PROGRESS_S} s, a stage every "
        f"{PROGRESS_S * TICKS_PER_STAGE:.0f} s\n",
        flush=True,
    )

    capture = Capture()
    capture.start()
    results: dict[str, Any] = {"spread": [], "worst": None}
    try:
        if args.only in (None, "spread"):
            for layer, n in ((PUBSUB, 100), (PUBSUB, 500), (CORE, 500)):
                if args.config and f"{'pubsub' if layer == PUBSUB else 'core'}-{n}" != args.config:
                    continue
                results["spread"].append(spread(user, matters, token, layer, n, args, capture))
        if args.only in (None, "worst"):
            results["worst"] = worst(user, [hot], token, args, capture)
        # The driver leaves its jobs mid-stage: PROCESSING jobs to build pushes for.
        results["relay_cost"] = {
            "one active job in the matter": relay_cost(_busy_matter(matters)),
            f"{SLOTS} active jobs in the matter": relay_cost(str(hot.pk)),
        }
    finally:
        capture.stop()
        connections.close_all()

    print()
    if results["spread"]:
        print(
            _setup.table(
                [
                    "config",
                    "clients",
                    "transitions",
                    "p50 ms",
                    "p95 ms",
                    "p99 ms",
                    "status p99",
                    "progress p99",
                    "summary lag p99",
                    "commit->group_send p99",
                    "lost",
                    "lost status",
                    "superseded status",
                    "daphne cpu %",
                    "relay cpu %",
                    "clients cpu %",
                    "msgs/s",
                ],
                [
                    [
                        r["config"],
                        r["clients_open"],
                        r["transitions"],
                        r["all"]["p50_ms"],
                        r["all"]["p95_ms"],
                        r["all"]["p99_ms"],
                        r["status"]["p99_ms"],
                        r["progress"]["p99_ms"],
                        r["summary_lag"]["p99_ms"],
                        r["relay_lag"]["all"]["p99_ms"] if r.get("relay_lag") else "-",
                        r["lost"],
                        r["lost_status"],
                        r["status_superseded"],
                        r["cpu_percent"]["daphne"],
                        r["cpu_percent"]["relay"],
                        r["cpu_percent"]["clients"],
                        r["messages_per_s"],
                    ]
                    for r in results["spread"]
                ],
            )
        )
    w = results["worst"]
    if w:
        print()
        print(
            _setup.table(
                [
                    "worst case, 500 clients on 1 matter",
                    "pushes",
                    "msgs expected",
                    "msgs delivered",
                    "delivered/s",
                    "asked/s",
                    "last arrival after last send s",
                    "daphne cpu %",
                    "relay cpu %",
                ],
                [
                    [
                        name,
                        w[name]["pushes_sent"],
                        w[name]["messages_expected"],
                        w[name]["messages_delivered"],
                        w[name]["delivered_per_s"],
                        w[name]["asked_per_s"],
                        w[name]["last_arrival_after_last_send_s"],
                        w[name]["cpu_percent"]["daphne"],
                        w[name]["cpu_percent"]["relay"],
                    ]
                    for name in ("ours", "bare")
                ],
            )
        )
        sc = w["ours"]["status_changes"]
        print(
            f"ours/bare {w['ratio_ours_over_bare']} (target >= {TARGET_RATIO}); status changes "
            f"driven {sc['driven']}, at the worst client {sc['exact_min_per_client']} arrived "
            f"exactly, {sc['lost_at_worst_client']} never (not even as a later state); ours "
            f"p99 {w['ours']['latency']['all']['p99_ms']} ms"
        )
    p500 = next((r for r in results["spread"] if r["config"] == "pubsub-500"), None)
    verdict = {}
    if p500:
        verdict["p99_500_pubsub_ms"] = p500["all"]["p99_ms"]
        verdict["p99_target_met"] = (
            p500["all"]["p99_ms"] is not None and p500["all"]["p99_ms"] < TARGET_P99_S * 1000
        )
        print(
            f"pub-sub, 500 clients: p99 {p500['all']['p99_ms']} ms (target < "
            f"{TARGET_P99_S * 1000:.0f} ms: {'met' if verdict['p99_target_met'] else 'MISSED'})"
        )
    if w:
        verdict["worst_ratio_target_met"] = w["ratio_ours_over_bare"] >= TARGET_RATIO
    cost_rows = [
        [
            f"{name}: {kind}",
            c["matter_active_jobs"],
            c[kind]["median_ms"],
            c[kind]["queries"],
            c[kind]["sql_ms"],
        ]
        for name, c in results.get("relay_cost", {}).items()
        if c
        for kind in ("job update", "summary")
    ]
    if cost_rows:
        print()
        print(
            _setup.table(
                [
                    "relay work per push (one lane, in-process)",
                    "active jobs",
                    "median ms",
                    "queries",
                    "of which SQL ms",
                ],
                cost_rows,
            )
        )
    print(f"wall time {time.monotonic() - started:.0f} s")
    out = _setup.write_results(
        NAME,
        {
            "versions": info,
            "config": {
                "slots": SLOTS,
                "progress_s": PROGRESS_S,
                "stage_s": PROGRESS_S * TICKS_PER_STAGE,
                "pickup_s": PICKUP_S,
                "matters": MATTERS,
                "measure_s": args.measure,
                "warmup_s": args.warmup,
                "worst_s": args.worst,
                "live_progress_interval_s": settings.LIVE_PROGRESS_INTERVAL,
                "client": "bench/_ws_clients.py (asyncio.Protocol RFC 6455, one process)",
            },
            **results,
            "verdict": verdict,
            "wall_s": round(time.monotonic() - started, 1),
        },
    )
    print(f"results: {out}")


if __name__ == "__main__":
    main()
