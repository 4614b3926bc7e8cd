"""
Online scale-out with real processes, under continuous load (issue 17's
check, after Redis's ``tests/cluster/tests/04-resharding.tcl``).

A cluster of 1 DC x 3 racks x 1 node serves a pipelined client that
pushes to 40 lists (each list once per pipeline, so one list's pushes are
in order) and sets strings, through every node in turn, while another
reads the strings back: those first acknowledged more than one ``timeout``
before (at DC_ONE a read through another rack's node may come before the
write reached that rack; after a ``timeout`` its replica has it, or its
leader holds a hint for it and reads go elsewhere).  A second node joins
rack 1, then second nodes join racks 2 and 3 at once; then all three
leave again.  Throughout, no write fails and no read of a key written
before answers nil; afterwards every list holds exactly the elements
acknowledged, in order, and every key lives on exactly its owner in each
rack.
"""

from __future__ import annotations

import threading
import time
from typing import Dict, List, Sequence, Tuple

import redis

from dynomite.placement.hashing import key_hash
from dynomite.placement.ring import Ring
from tests.integration.fixtures.cases import FaultTestCase
from tests.integration.fixtures.common import OWN_CLUSTERS_SUBNET, address, poll
from tests.integration.fixtures.joiners import AdminOf, backend_of, start_extra_node

ONE_DC = {"dc1": {"rack1": 1, "rack2": 1, "rack3": 1}}
#: 127.7.<worker>.x block of this module: the cluster, then three joiners
BLOCK = 191
GOS_INTERVAL = 1000
LISTS = 40
STRINGS = 300


class PushLoad(threading.Thread):
    """Pipelined RPUSH and SET through every node in turn, GETs through another; see the module docstring."""

    def __init__(self, clients: Sequence[redis.Redis], settle: float) -> None:
        super().__init__(name="scaleout-load", daemon=True)
        self.clients = list(clients)
        #: seconds after its first acknowledged write that a key is read
        self.settle = settle
        self.lists: Dict[str, List[bytes]] = {"so:list:%d" % i: [] for i in range(LISTS)}
        self.strings: Dict[str, bytes] = {}
        #: each string's first acknowledged write: (batch, monotonic time)
        self.first_written: Dict[str, Tuple[int, float]] = {}
        self.errors: List[str] = []
        self.nil_reads: List[str] = []
        self.batches = 0
        self._halt = threading.Event()
        self._going = threading.Event()
        self._going.set()
        self._batch = threading.Lock()

    def pause(self) -> None:
        """Stop between two batches (what it acknowledged is then all there is), until `resume`."""
        self._going.clear()
        with self._batch:
            pass

    def resume(self) -> None:
        self._going.set()

    def halt(self) -> None:
        self._halt.set()
        if self.is_alive():
            self.join(30)

    def run(self) -> None:
        batch = 0
        while not self._halt.is_set():
            self._going.wait()
            with self._batch:
                if not self._one(batch):
                    return
            batch += 1
            self.batches = batch

    def _one(self, batch: int) -> bool:
        """One pipelined batch and its reads; False when its outcome is unknown (the load stops)."""
        client = self.clients[batch % len(self.clients)]
        element = b"e%d" % batch
        keys = ["so:str:%d" % ((batch * 7 + j) % STRINGS) for j in range(10)]
        pipe = client.pipeline(transaction=False)
        for name in self.lists:
            pipe.rpush(name, element)
        for key in keys:
            pipe.set(key, element)
        try:
            replies = pipe.execute(raise_on_error=False)
        except redis.RedisError as e:
            self.errors.append("batch %d: %s" % (batch, e))
            return False   # outcome unknown: the expectations stop here
        for name, reply in zip(self.lists, replies):
            if isinstance(reply, Exception):
                self.errors.append("RPUSH %s: %s" % (name, reply))
            else:
                self.lists[name].append(element)
        for key, reply in zip(keys, replies[LISTS:]):
            if isinstance(reply, Exception):
                self.errors.append("SET %s: %s" % (key, reply))
            else:
                self.strings[key] = element
                self.first_written.setdefault(key, (batch, time.monotonic()))
        reader = self.clients[(batch + 1) % len(self.clients)]
        settled = time.monotonic() - self.settle
        written = [k for k in sorted(self.strings) if self.first_written[k][1] < settled]
        written = written[:: max(1, len(written) // 10)]
        try:
            values = reader.mget(written) if written else []
        except redis.RedisError as e:
            self.errors.append("MGET: %s" % e)
            return False
        self.nil_reads.extend("%s (first written in batch %d, read after batch %d through node %d)" % (
            k, self.first_written[k][0], batch, (batch + 1) % len(self.clients))
            for k, v in zip(written, values) if v is None)
        return True


class ScaleOutUnderLoadTests(FaultTestCase):

    def join_bound(self) -> float:
        """Announcement (heartbeats), copy, cut-over and the cleanup's grace, from the configured times."""
        layout = self.fx.layout
        return 10 * (GOS_INTERVAL / 1000 + layout.peer_down_after()) + 4 * layout.timeout()

    def entry(self, observer, name: str) -> Dict:
        info = self.fx.try_info(observer)
        return {} if info is None else info["gossip"]["entries"].get(name, {})

    def wait_status(self, names: Sequence[str], status: str, what: str, movers: Sequence = ()) -> None:
        """
        Until every node of the first three holds each of ``names`` with
        ``status`` in its view: one join's bound per node moving, as moves
        at once share the nodes that lead and copy for them.  ``movers``
        (their processes) have their log tails shown if not.
        """
        first = [self.fx.rack_node("dc1", "rack%d" % i) for i in (1, 2, 3)]
        bound = self.join_bound() * len(names)
        if not poll(lambda: all(self.entry(n, name).get("status") == status for n in first for name in names),
                    bound, 0.2):
            tails = "\n".join("--- %s:%d ---\n%s" % (process.dyn_address + (process.log_tail(40),))
                              for process in movers)
            self.fail_with("%s: not %s after %.0f s: %r\n%s" % (
                what, status, bound, [[self.entry(n, name) for name in names] for n in first], tails))

    def placement_problems(self, load, members: Dict[str, List]) -> List[str]:
        """Keys not on exactly their owner in each rack, or not as acknowledged (members: rack -> [(name, token, backend)])."""
        problems = []
        every = list(load.lists) + list(load.strings)
        for rack, nodes in sorted(members.items()):
            ring = Ring((token, name) for name, token, _ in nodes)
            held = {name: set(k.decode() for k in backend.keys("so:*")) for name, _, backend in nodes}
            backends = {name: backend for name, _, backend in nodes}
            for key in every:
                owner = ring.owner(key_hash(key.encode()))
                holders = sorted(name for name in held if key in held[name])
                if holders != [owner]:
                    problems.append("%s in %s: on %s, owner %s" % (key, rack, holders, owner))
                elif key in load.lists:
                    got = backends[owner].lrange(key, 0, -1)
                    if got != load.lists[key]:
                        want = load.lists[key]
                        at = next((i for i, (a, b) in enumerate(zip(got, want)) if a != b), min(len(got), len(want)))
                        problems.append("%s in %s on %s: %d elements, %d acknowledged; from #%d %r, not %r" % (
                            key, rack, owner, len(got), len(want), at, got[at:at + 3], want[at:at + 3]))
                elif backends[owner].get(key) != load.strings[key]:
                    problems.append("%s in %s: %r, acknowledged %r" % (
                        key, rack, backends[owner].get(key), load.strings[key]))
        return problems

    def check_placement(self, load, members: Dict[str, List]) -> None:
        """Every key settles on exactly its owner (the cleanup runs one grace after the cut-over)."""
        problems: List[str] = []

        def settled() -> bool:
            problems[:] = self.placement_problems(load, members)
            return not problems

        if not poll(settled, self.join_bound(), 0.5):
            self.fail_with("%d placement problems, e.g.:\n  %s" % (len(problems), "\n  ".join(problems[:10])))

    def test_nodes_join_and_leave_three_racks_under_load(self) -> None:
        fx = self.start_cluster("scaleout", ONE_DC, BLOCK, {"enable_gossip": True, "gos_interval": GOS_INTERVAL})
        first = [fx.rack_node("dc1", "rack%d" % i) for i in (1, 2, 3)]
        load = PushLoad([fx.client(n) for n in first], fx.layout.timeout())
        load.start()
        self.addCleanup(load.halt)
        if not poll(lambda: load.batches >= 20, 10 * fx.layout.timeout()):
            self.fail_with("the load made no progress: %d batches, errors %r" % (load.batches, load.errors[:3]))

        seed = fx.rack_node("dc1", "rack2").seed
        joiners = {}
        joiners["rack1"] = start_extra_node(self, fx, address(OWN_CLUSTERS_SUBNET, BLOCK + 3), rack="rack1",
                                            tokens=str(2 ** 31), dyn_seeds=[seed], bootstrap=True)
        self.wait_status(["%s:%d" % joiners["rack1"].dyn_address], "NORMAL", "rack 1's join", [joiners["rack1"]])
        for i, rack in ((4, "rack2"), (5, "rack3")):
            joiners[rack] = start_extra_node(self, fx, address(OWN_CLUSTERS_SUBNET, BLOCK + i), rack=rack,
                                             tokens="auto", dyn_seeds=[seed], bootstrap=True)
        names = {rack: "%s:%d" % process.dyn_address for rack, process in joiners.items()}
        self.wait_status([names["rack2"], names["rack3"]], "NORMAL", "racks 2 and 3's joins",
                         [joiners["rack2"], joiners["rack3"]])
        # tokens: auto took the middle of the largest range (the whole ring: token 0 alone)
        self.assertEqual(self.entry(first[0], names["rack3"])["tokens"], [2 ** 31])
        batches = load.batches
        if not poll(lambda: load.batches >= batches + 20, 10 * fx.layout.timeout()):
            self.fail_with("the load stalled after the joins")
        members = {rack: [(fx.peer_name(n), n.tokens[0], fx.backend(n))] for rack, n in zip(
            ("rack1", "rack2", "rack3"), first)}
        joined = {rack: list(nodes) for rack, nodes in members.items()}
        for rack, process in joiners.items():
            token = self.entry(first[0], names[rack])["tokens"][0]
            joined[rack].append((names[rack], token, backend_of(process)))
        self.assertEqual(load.errors, [])
        self.assertEqual(load.nil_reads, [])
        load.pause()
        self.check_placement(load, joined)
        load.resume()

        # then the three leave again, at once (one per rack), under the same load
        for process in joiners.values():
            fx.admin(AdminOf(process), "/decommission")
        self.wait_status(list(names.values()), "LEFT", "the three leaves", list(joiners.values()))
        batches = load.batches
        if not poll(lambda: load.batches >= batches + 20, 10 * fx.layout.timeout()):
            self.fail_with("the load stalled after the leaves")
        load.halt()
        self.assertEqual(load.errors, [])
        self.assertEqual(load.nil_reads, [])
        self.check_placement(load, members)

    def test_a_join_killed_halfway_leaves_the_old_owners_serving_and_ends_on_restart(self) -> None:
        fx = self.start_cluster("scaleout-kill", ONE_DC, BLOCK + 10,
                                {"enable_gossip": True, "gos_interval": GOS_INTERVAL})
        first = [fx.rack_node("dc1", "rack%d" % i) for i in (1, 2, 3)]
        written = _Written()
        pipe = fx.client(first[0]).pipeline(transaction=False)
        for i in range(KEYS):
            pipe.set("so:str:%d" % i, b"v%d" % i)
            written.strings["so:str:%d" % i] = b"v%d" % i
        pipe.execute()
        # a slow copy (repair_rate keys scanned per second), killed once it has begun
        joiner = start_extra_node(self, fx, address(OWN_CLUSTERS_SUBNET, BLOCK + 13), rack="rack1",
                                  tokens=str(2 ** 31), dyn_seeds=[fx.rack_node("dc1", "rack2").seed],
                                  bootstrap=True, repair_rate=KEYS // 5)
        name = "%s:%d" % joiner.dyn_address
        backend = backend_of(joiner)
        if not poll(lambda: backend.dbsize() >= 50, self.join_bound()):
            self.fail_with("the join's copy did not begin")
        joiner.kill()
        self.assertLess(backend.dbsize(), KEYS // 2, "killed halfway, not at the end")
        self.assertEqual(self.entry(first[0], name).get("status"), "JOINING")
        # the old owners serve every key, and take writes
        for n in first:
            names = sorted(written.strings)
            values = fx.client(n).mget(names)
            missing = [k for k, v in zip(names, values) if v != written.strings[k]]
            self.assertEqual(missing, [], "read through %s with the joiner dead" % n.name)
            self.assertTrue(fx.client(n).set("so:str:during:%s" % n.name, b"w"))
            written.strings["so:str:during:%s" % n.name] = b"w"
        # started again, it goes on from its state file and ends the join
        joiner.spawn()
        joiner.wait_ready()
        self.wait_status([name], "NORMAL", "the restarted join", [joiner])
        members = {rack: [(fx.peer_name(n), n.tokens[0], fx.backend(n))] for rack, n in zip(
            ("rack1", "rack2", "rack3"), first)}
        members["rack1"].append((name, 2 ** 31, backend))
        self.check_placement(written, members)
        # restarted once more, with bootstrap still in its file: it is a member, not a joiner
        held = backend.dbsize()
        joiner.kill()
        joiner.spawn()
        joiner.wait_ready()
        self.assertEqual(self.entry(AdminOf(joiner), name).get("status"), "NORMAL")
        self.assertEqual(backend.dbsize(), held, "a member's Redis is not flushed again")


#: keys written before the join that is killed
KEYS = 2000


class _Written:
    """What a test wrote, in the shape `placement_problems` reads."""

    def __init__(self) -> None:
        self.lists: Dict[str, List[bytes]] = {}
        self.strings: Dict[str, bytes] = {}
