"""
Fault-injection integration tests of high availability (issue 4): real
redis-servers and real ``twistd -n dynomite`` nodes started by the local
cluster launcher, killed with SIGKILL, frozen with SIGSTOP and restarted,
while redis-py clients write through them.

The promise checked is README's: every write acknowledged to a client
reaches every replica in every datacenter, provided outages are shorter
than the hint window and the coordinator's disk survives; a drop beyond the
window is counted and logged; reads fail over to other racks, and quorum
levels fail with a clear ``-ERR`` only when a quorum of racks cannot answer.

The oracle (``tests/integration/fixtures/writer.Writer``): unique keys
with write-once values, and the list of writes the client saw
acknowledged. Replicas are read straight from their own redis-server.
Each test starts its own cluster on ``127.7.<worker>.<block>`` addresses
(each test its own block of ten) with short timeouts
(``fixtures.cluster.SHORT_TIMEOUTS``: ``timeout: 1000``,
``peer_down_after: 1500``) and stops every process it started, by PID, in
its cleanup.

Run: ``.venv/bin/trial tests.integration.test_ha``.
"""

from __future__ import annotations

import os
import re
import time
from typing import List

from tests.integration.fixtures.cases import FaultTestCase
from tests.integration.fixtures.common import poll
from tests.integration.fixtures.resp import RawConnection
from tests.integration.fixtures.writer import merged

ONE_DC = {"dc1": {"rack1": 1, "rack2": 1, "rack3": 1}}
TWO_DCS = {
    "dc1": {"rack1": 1, "rack2": 1, "rack3": 1},
    "dc2": {"rack1": 1, "rack2": 1, "rack3": 1},
}
ONE_DC_TWO_PER_RACK = {"dc1": {"rack1": 2, "rack2": 2, "rack3": 2}}

#: How long a restarted replica (or datacenter) gets to hold every acknowledged write.
CONVERGE_TIMEOUT = 30.0


# ---------------------------------------------------------------------------
# 1. a replica killed during writes gets every acknowledged write back


class KilledReplicaTests(FaultTestCase):
    """A replica killed during writes gets every acknowledged write back, and stays RESUMING until it has."""

    def test_killed_rack2_node_gets_every_acknowledged_write_and_resumes(self) -> None:
        """
        1 DC x 3 racks: SIGKILL rack 2's node while 2,000 SETs go through
        rack 1's node at DC_ONE; no client error; restarted, it holds every
        acknowledged key within 30 s and goes RESUMING -> NORMAL.
        """
        fx = self.start_cluster("kill-replica", ONE_DC, 1, {"hints_fsync": "always"})
        r1, r2, r3 = (fx.rack_node("dc1", f"rack{i}") for i in (1, 2, 3))
        # keys rack 1's node leads (`dynomite.node.leader`): it holds their hints
        writers = [self.writer(r1, f"kr{i}", count=500, seed=i, keys=fx.led_by(r1)) for i in range(4)]
        for w in writers:
            w.start()
        self.assertTrue(poll(lambda: sum(len(w.acked) for w in writers) >= 400, 30, 0.002),
                        "writers made no progress")
        r2.node_process.kill()
        killed_at = time.monotonic()
        for w in writers:
            w.join(120)
        self.assertFalse(any(w.is_alive() for w in writers), "writers still running after 120 s")
        acked = merged(writers)
        self.assertNoClientErrors(writers, "at DC_ONE while rack 2's node was killed")
        self.assertEqual(len(acked), 2000)
        after_kill = sum(1 for w in writers for t, _ in w.ack_times if t > killed_at)
        self.assertGreater(after_kill, 0, "every write was acknowledged before the kill: nothing was tested")
        stats = fx.hint_stats(r1, r2)
        self.assertIsNotNone(stats, "rack 1's /info has no hint backlog for rack 2")
        self.assertGreater(stats["stored_total"], 0, f"rack 1 stored no hint for the dead rack 2: {stats}")

        # Restart it; watch its state from the first moment /info answers.
        log_before = len(fx.log_text(r2))
        restarted_at = time.monotonic()
        deadline = restarted_at + CONVERGE_TIMEOUT
        r2.node_process.spawn()
        states: List[str] = []
        while time.monotonic() < deadline:
            if not r2.node_process.running():
                self.fail_with(f"{r2.name} exited after its restart", [r2])
            doc = fx.try_info(r2)
            if doc is not None and (not states or states[-1] != doc["state"]):
                states.append(doc["state"])
            if states and states[-1] == "NORMAL":
                break
            time.sleep(0.02)
        new_log = fx.log_text(r2)[log_before:]
        self.assertHolding([r2, r3], acked, max(0.0, deadline - time.monotonic()) + 0.5,
                           f"{len(acked)} writes, {after_kill} after the kill; {r2.name} restarted",
                           since=restarted_at)
        if not states or states[-1] != "NORMAL":
            self.fail_with(f"{r2.name} not NORMAL {CONVERGE_TIMEOUT:.0f}s after its restart; states"
                           f" seen: {states}", [r1, r2])
        self.assertTrue(
            "RESUMING" in states or "node state RESUMING -> NORMAL" in new_log,
            f"{r2.name} never was RESUMING after its restart (states seen: {states})")
        self.assertNotIn("resume_timeout passed", new_log,
                         f"{r2.name} left RESUMING on resume_timeout, not because hints drained")
        self.assertTrue(poll(lambda: (fx.hint_stats(r1, r2) or {}).get("pending") == 0, 5),
                        f"rack 1 still holds hints for rack 2: {fx.hint_stats(r1, r2)}")
        dropped = {k: v for k, v in fx.hint_stats(r1, r2)["dropped_total"].items() if v}
        self.assertEqual(dropped, {}, "hints for rack 2 were dropped")

    def test_resuming_node_takes_writes_and_reads_from_other_racks_until_its_hints_drain(self) -> None:
        """
        Issue 4 item 4: a node that comes back stays RESUMING while a peer
        holds hints for it (held here with /hints/<target>/pause), takes
        writes, and serves DC_ONE and DC_QUORUM reads from other racks, so
        clients never see the writes it missed as absent. Once the hints
        flow, it converges and turns NORMAL.
        """
        fx = self.start_cluster("resuming", ONE_DC, 71)
        r1, r2, r3 = (fx.rack_node("dc1", f"rack{i}") for i in (1, 2, 3))
        target = fx.peer_name(r2)
        r2.node_process.kill()
        self.wait_peer_state(r1, r2, "DOWN")
        missed = self.writer(r1, "missed", count=300, keys=fx.led_by(r1))
        missed.run()
        self.assertNoClientErrors([missed], "at DC_ONE with rack 2 down")
        fx.admin(r1, f"/hints/{target}/pause")
        self.start_node(r2)
        # it has heard from every peer (r1 says it holds hints) and outlived the settle time
        def peers_up() -> bool:
            doc = fx.try_info(r2)
            return doc is not None and all(s == "UP" for s in doc["peers"].values())

        if not poll(peers_up, 10):
            self.fail_with(f"{r2.name} does not see its peers UP after its restart", [r2])
        # A node may leave RESUMING once it has waited peer_down_after for its
        # peers and none holds hints for it: watch it for twice that, every
        # state it reports counts.
        watch = 2 * fx.layout.peer_down_after()
        states = set()
        deadline = time.monotonic() + watch
        while time.monotonic() < deadline:
            states.add(fx.info(r2)["state"])
            time.sleep(0.05)
        self.assertEqual(states, {"RESUMING"},
                         f"{r2.name} left RESUMING within {watch:g} s while {r1.name} still holds hints for it")
        self.assertEqual(len(fx.wrong_on(r2, missed.acked)), 300,
                         "rack 2's redis-server already holds the writes it missed: nothing to test")

        for level in ("DC_ONE", "DC_QUORUM"):
            c = fx.client(r2, level)
            keys = sorted(missed.acked)
            got = c.mget(keys) if level == "DC_ONE" else [c.get(k) for k in keys[:50]]
            wrong = [(k, v) for k, v in zip(keys, got) if v is None or v.decode() != missed.acked[k]]
            self.assertEqual(wrong[:5], [], f"{len(wrong)} {level} reads through RESUMING {r2.name} of"
                             f" writes it missed did not return the acknowledged value")
        c = fx.client(r2)
        self.assertIs(c.set("resuming:new", "taken"), True, f"a write through RESUMING {r2.name}")
        self.assertEqual(fx.backend(r2).get("resuming:new"), b"taken")

        fx.admin(r1, f"/hints/{target}/resume")
        self.assertHolding([r2], missed.acked, 10.0, "after the hints were resumed")
        if not poll(lambda: (fx.try_info(r2) or {}).get("state") == "NORMAL", 10):
            self.fail_with(f"{r2.name} not NORMAL 10 s after the hints for it drained", [r1, r2])


# ---------------------------------------------------------------------------
# 2. a whole remote datacenter killed for 10 s


class DatacenterOutageTests(FaultTestCase):
    """A whole remote datacenter killed for 10 s gets every write acknowledged meanwhile."""

    def test_every_dc2_backend_gets_every_write_after_a_10s_outage(self) -> None:
        """
        2 DCs x 3 racks: SIGKILL every DC2 node for 10 s while writes go
        through DC1 at DC_ONE; restarted, every DC2 backend holds every
        acknowledged key.
        """
        fx = self.start_cluster("dc-outage", TWO_DCS, 11)
        dc1, dc2 = fx.dc_nodes("dc1"), fx.dc_nodes("dc2")
        writers = [self.writer(n, f"dc{i}", interval=0.01, seed=i) for i, n in enumerate(dc1)]
        for w in writers:
            w.start()
        self.wait_acked(writers, 50)
        for n in dc2:
            n.node_process.kill()
        killed_at = time.monotonic()
        time.sleep(10.0)
        restarted_at = time.monotonic()
        for n in dc2:
            n.node_process.spawn()
        for n in dc2:
            self.wait_node_ready(n)
        self.wait_acked(writers, sum(len(w.acked) for w in writers) + 50)
        for w in writers:
            w.finish(30)
        acked = merged(writers)
        self.assertNoClientErrors(writers, "at DC_ONE in DC1 while DC2 was down")
        during = sum(1 for w in writers for t, _ in w.ack_times if killed_at < t < restarted_at)
        # acknowledged after DC1 must have seen DC2 DOWN: these writes were hinted
        seen_down = killed_at + fx.layout.peer_down_after()
        self.assertGreater(sum(1 for w in writers for t, _ in w.ack_times if seen_down < t < restarted_at), 0,
                           "no write was acknowledged while DC2 was down")
        hinted = {n.name: (fx.info(n)["hints"].get("dc:dc2") or {}).get("stored_total") for n in dc1}
        self.assertTrue(all(hinted.values()), f"DC1 nodes stored no hints for dc:dc2: {hinted}")
        self.assertHolding(dc1, acked, 5.0, "DC1")
        self.assertHolding(dc2, acked, CONVERGE_TIMEOUT,
                           f"{len(acked)} writes ({during} while DC2 was down); DC2 restarted",
                           since=restarted_at)


# ---------------------------------------------------------------------------
# 3. a coordinator killed while it holds hints


class CoordinatorCrashTests(FaultTestCase):
    """With ``hints_fsync: always``, hints survive SIGKILL of the node that holds them."""

    def crash_with_hints(self, label: str, block: int, torn: bool) -> None:
        fx = self.start_cluster(label, ONE_DC, block, {"hints_fsync": "always"})
        r1, r2, r3 = (fx.rack_node("dc1", f"rack{i}") for i in (1, 2, 3))
        r2.node_process.kill()
        self.wait_peer_state(r1, r2, "DOWN")
        before = self.writer(r1, "pre", count=1000, keys=fx.led_by(r1))
        before.run()   # in this thread: all 1000 done before the crash
        self.assertNoClientErrors([before], "at DC_ONE with rack 2 down")
        self.assertEqual(len(before.acked), 1000)
        stats = fx.hint_stats(r1, r2)
        self.assertGreaterEqual(stats["pending"], 1000, f"rack 1's hints for rack 2 before the crash: {stats}")

        r1.node_process.kill()
        hint_dir = fx.hint_dir(r1, r2)
        segments = sorted(f for f in os.listdir(hint_dir) if f.endswith(".hints")) \
            if os.path.isdir(hint_dir) else []
        if not segments:
            self.fail_with(f"no hint segment in {hint_dir} after SIGKILL of the coordinator"
                           f" (found {os.listdir(os.path.dirname(hint_dir))})", [r1])
        if torn:
            newest = os.path.join(hint_dir, segments[-1])
            # what a crash mid-append leaves: a record header promising more than follows
            with open(newest, "ab") as f:
                f.write(b"\x9c\x3a\x51\x07\x40\x00\x00\x00torn")

        self.start_node(r1)
        stats = fx.hint_stats(r1, r2)
        if stats is None or stats["pending"] < 1000:
            self.fail_with(f"after SIGKILL and restart rack 1 holds fewer hints for rack 2 than it"
                           f" acknowledged writes for (1000): {stats}", [r1])
        # the restarted coordinator appends after what it kept (after the torn tail, cut)
        after = self.writer(r1, "post", count=200)
        after.run()
        self.assertNoClientErrors([after], "through the restarted coordinator")
        acked = merged([before, after])

        self.start_node(r2)
        peer_back = time.monotonic()
        self.assertHolding([r2, r3], acked, CONVERGE_TIMEOUT,
                           "hints kept across the coordinator's SIGKILL" + (" (torn last record)" if torn else "")
                           + "; rack 2 restarted", since=peer_back)
        self.assertTrue(poll(lambda: (fx.hint_stats(r1, r2) or {}).get("pending") == 0, 5),
                        f"rack 1 still holds hints for rack 2: {fx.hint_stats(r1, r2)}")

    def test_hints_survive_sigkill_of_the_coordinator(self) -> None:
        self.crash_with_hints("crash", 21, torn=False)

    def test_torn_last_hint_record_does_not_stop_startup_or_lose_hints(self) -> None:
        self.crash_with_hints("crash-torn", 31, torn=True)


# ---------------------------------------------------------------------------
# 4. a replica's redis-server frozen for 5 s


class FrozenRedisTests(FaultTestCase):
    """A replica's redis-server frozen with SIGSTOP: clients see nothing, and the replica converges."""

    def test_sigstop_of_a_replica_redis_is_invisible_to_clients_and_converges(self) -> None:
        """
        SIGSTOP rack 2's redis-server for 5 s while clients write and read
        through rack 1's and rack 3's nodes at DC_ONE: no errors, reads see
        their writes, and after SIGCONT rack 2 holds every acknowledged key.
        """
        fx = self.start_cluster("sigstop", ONE_DC, 41)
        r1, r2, r3 = (fx.rack_node("dc1", f"rack{i}") for i in (1, 2, 3))
        writers = [self.writer(r1, "via1", interval=0.003, read_every=1, seed=1),
                   self.writer(r3, "via3", interval=0.003, read_every=1, seed=3)]
        for w in writers:
            w.start()
        self.wait_acked(writers, 50)
        r2.redis_process.pause()
        paused_at = time.monotonic()
        time.sleep(5 * fx.layout.timeout())
        r2.redis_process.resume()
        resumed_at = time.monotonic()
        self.wait_acked(writers, sum(len(w.acked) for w in writers) + 50)
        for w in writers:
            w.finish(30)
        self.assertNoClientErrors(writers, f"at DC_ONE while {r2.name}'s redis-server was stopped")
        wrong_reads = [r for w in writers for r in w.wrong_reads]
        self.assertEqual(wrong_reads[:5], [], f"{len(wrong_reads)} reads of a client's own acknowledged"
                         f" writes returned something else")
        self.assertGreater(sum(w.reads for w in writers), 0, "no read was made: the read check tested nothing")
        acked = merged(writers)
        during = sum(1 for w in writers for t, _ in w.ack_times if paused_at < t < resumed_at)
        # acknowledged after rack 2's node must have timed out on its frozen redis-server
        timed_out = paused_at + fx.layout.timeout()
        self.assertGreater(sum(1 for w in writers for t, _ in w.ack_times if timed_out < t < resumed_at), 0,
                           "no write was acknowledged while the redis-server was stopped")
        self.assertHolding([r2, r1, r3], acked, CONVERGE_TIMEOUT,
                           f"{len(acked)} writes ({during} during the stop); {r2.name}'s redis-server"
                           f" got SIGCONT", since=resumed_at)


# ---------------------------------------------------------------------------
# 5. an outage longer than the hint window


_DROP_LINE = re.compile(r"hints for (\S+): dropped (\d+) \(window\)")


class HintWindowTests(FaultTestCase):
    """An outage longer than ``hint_window``: the hints beyond it are dropped, counted and logged."""

    def test_hints_beyond_a_2s_window_are_dropped_counted_and_logged(self) -> None:
        """
        Rack 2 down for 2.5 hint windows while rack 1 takes writes: /info,
        /metrics and the log agree on the number dropped, and rack 2 misses
        no more acknowledged writes than that.
        """
        fx = self.start_cluster("window", ONE_DC, 51, {"hint_window": 2000, "hints_fsync": "always"})
        r1, r2, r3 = (fx.rack_node("dc1", f"rack{i}") for i in (1, 2, 3))
        target = fx.peer_name(r2)
        r2.node_process.kill()
        self.wait_peer_state(r1, r2, "DOWN")
        w = self.writer(r1, "win", interval=0.01, keys=fx.led_by(r1))
        w.start()
        time.sleep(2.5 * fx.settings["hint_window"] / 1000)
        self.start_node(r2)
        self.wait_acked([w], len(w.acked) + 25)
        w.finish(30)
        self.assertNoClientErrors([w], "at DC_ONE with rack 2 down")
        acked = merged([w])

        def dropped() -> int:
            return ((fx.hint_stats(r1, r2) or {}).get("dropped_total") or {}).get("window", 0)

        if not poll(lambda: dropped() > 0, 5):
            self.fail_with(f"no hint for {target} counted as dropped (window) after a 5 s outage"
                           f" with a 2 s window: {fx.hint_stats(r1, r2)}", [r1])
        # once rack 2 is back nothing more expires: wait for the backlog to drain
        if not poll(lambda: (fx.hint_stats(r1, r2) or {}).get("pending") == 0, 15):
            self.fail_with(f"rack 1's hints for rack 2 did not drain: {fx.hint_stats(r1, r2)}", [r1, r2])
        total = dropped()

        metric = re.compile(r'^dynomite_hints_dropped_total\{([^}]*)\} (\S+)$', re.M)
        values = [float(v) for labels, v in metric.findall(fx.metrics(r1))
                  if f'target="{target}"' in labels and 'reason="window"' in labels]
        self.assertEqual(values, [float(total)],
                         f"/metrics dynomite_hints_dropped_total{{target={target},reason=window}}")

        def logged() -> int:
            return sum(int(n) for t, n in _DROP_LINE.findall(fx.log_text(r1)) if t == target)

        if not poll(lambda: logged() == total, 15):
            lines = [line for line in fx.log_text(r1).splitlines() if "dropped" in line]
            self.fail_with(f"{r1.name}'s log reports {logged()} window drops for {target}, /info counts"
                           f" {total}; drop lines: {lines[-5:]}", [r1])

        # every write rack 2 misses is one of the counted drops; the rest arrived
        missing = fx.wait_holding([r2], acked, 3.0).get(r2.name, [])
        self.assertGreater(len(missing), 0, "a 5 s outage with a 2 s window lost nothing on rack 2?")
        self.assertLessEqual(len(missing), total,
                             f"rack 2 misses {len(missing)} acknowledged writes, only {total} drops counted")
        self.assertHolding([r3], acked, 5.0, "rack 3 (up all along)")


# ---------------------------------------------------------------------------
# 6. reads while racks are down


class ReadsDuringFailureTests(FaultTestCase):
    """Reads fail over to other racks; quorum levels fail, with -ERR, only without a quorum."""

    def test_reads_fail_over_to_other_racks_and_quorum_fails_only_without_a_quorum(self) -> None:
        """
        1 DC x 3 racks x 2 nodes. With a key's rack-1 owner DOWN, a DC_ONE
        read through the other rack-1 node is served by another rack and
        DC_QUORUM still works; with its rack-2 owner DOWN too, DC_QUORUM
        reads and writes fail with -ERR naming DC_QUORUM, DC_ONE still reads.
        """
        fx = self.start_cluster("reads", ONE_DC_TWO_PER_RACK, 61)
        owner1 = fx.rack_node("dc1", "rack1", 0)
        via = fx.rack_node("dc1", "rack1", 1)
        keys = [k for k in (f"rd:{i}" for i in range(5000)) if fx.owner(k, "dc1", "rack1") is owner1][:4]
        tampered, agreed, write1, write2 = keys
        owners = {n.rack: n for n in fx.owners(tampered)}
        self.assertTrue(all(n.index == 0 for n in owners.values()), f"owners: {owners}")
        self.assertEqual({n.name for n in fx.owners(agreed)}, {n.name for n in owners.values()})

        c = fx.client(via, "DC_QUORUM")
        self.assertIs(c.set(agreed, "agreed-value"), True)
        self.assertHolding(list(owners.values()), {agreed: "agreed-value"}, 5.0, "setup write")
        for rack, node in owners.items():   # each rack's copy tells which rack answered
            self.assertIs(fx.backend(node).set(tampered, f"from-{rack}"), True)

        owner1.node_process.kill()
        self.wait_peer_state(via, owner1, "DOWN")

        with RawConnection(*via.client_address, timeout=5.0) as raw:
            self.assertEqual(raw.command("DYNO_CONFIG:CONN_CONSISTENCY", "DC_ONE"), b"+OK\r\n")
            replies = {raw.command("GET", tampered) for _ in range(20)}
            self.assertTrue(replies <= {b"$10\r\nfrom-rack2\r\n", b"$10\r\nfrom-rack3\r\n"},
                            f"DC_ONE GET through {via.name} with rack 1's owner DOWN answered {replies}")
            self.assertEqual(raw.command("DYNO_CONFIG:CONN_CONSISTENCY", "DC_QUORUM"), b"+OK\r\n")
            self.assertEqual(raw.command("GET", agreed), b"$12\r\nagreed-value\r\n",
                             "DC_QUORUM read with 1 of 3 racks down")
            self.assertEqual(raw.command("SET", write1, "w1"), b"+OK\r\n",
                             "DC_QUORUM write with 1 of 3 racks down")

        owners["rack2"].node_process.kill()
        self.wait_peer_state(via, owners["rack2"], "DOWN")

        with RawConnection(*via.client_address, timeout=5.0) as raw:
            self.assertEqual(raw.command("DYNO_CONFIG:CONN_CONSISTENCY", "DC_QUORUM"), b"+OK\r\n")
            read = raw.command("GET", agreed)
            self.assertTrue(read.startswith(b"-ERR DC_QUORUM"),
                            f"DC_QUORUM read with 2 of 3 racks down answered {read!r}")
            write = raw.command("SET", write2, "w2")
            self.assertTrue(write.startswith(b"-ERR DC_QUORUM"),
                            f"DC_QUORUM write with 2 of 3 racks down answered {write!r}")
            # the connection stays usable, and DC_ONE still reads from rack 3
            self.assertEqual(raw.command("DYNO_CONFIG:CONN_CONSISTENCY", "DC_ONE"), b"+OK\r\n")
            self.assertEqual(raw.command("GET", agreed), b"$12\r\nagreed-value\r\n",
                             "DC_ONE read with 2 of 3 racks down")
            self.assertEqual(raw.command("GET", tampered), b"$10\r\nfrom-rack3\r\n",
                             "DC_ONE read with racks 1 and 2 down must come from rack 3")
