"""Tests for dynomite.commands: routes, arity, key extraction, COMMAND replies.

Expected COMMAND INFO / COMMAND DOCS bytes were captured from redis-server
7.0.15 (RESP2, and RESP3 after ``HELLO 3`` on a raw socket). The expected keys
of ``KEY_CASES`` agree with Redis' ``COMMAND GETKEYS`` except where
``GETKEYS_DIFFERENCES`` says why; ``tools/gen_command_table.py --check``
re-verifies both against a live Redis.
"""
from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from dynomite.commands import table as commands
from dynomite.commands.determinism import BLOCKING

#: Node commands that name keys: WATCH, and the streams read at the node.
_NODE_WITH_KEYS = frozenset({"watch", "xread", "xreadgroup"})
from dynomite.commands.redis_commands import COMMANDS as REDIS_COMMANDS
from dynomite.commands.table import KEY, KEYSPACE, MULTI_KEY, NODE, UNSUPPORTED


def a(line: str) -> list:
    """Split a command line into arguments (bytes)."""
    return [w.encode() for w in line.split()]


#: (arguments, keys) -- one case per key-spec form and per tricky command.
KEY_CASES = [
    # begin_search index, find_keys range lastkey 0
    (a("GET k"), [b"k"]),
    (a("set k v EX 10 GET"), [b"k"]),
    (a("HSET h f v f2 v2"), [b"h"]),
    (a("XADD s * f v"), [b"s"]),
    (a("GEOADD g 13.3 38.1 p"), [b"g"]),
    (a("PFADD hll a b"), [b"hll"]),
    (a("SETBIT b 7 1"), [b"b"]),
    (a("RESTORE k 0 payload REPLACE"), [b"k"]),
    # range with negative lastkey
    (a("MGET a b c"), [b"a", b"b", b"c"]),
    (a("DEL a"), [b"a"]),
    (a("EXISTS a b a"), [b"a", b"b", b"a"]),
    (a("UNLINK a b"), [b"a", b"b"]),
    (a("TOUCH a b"), [b"a", b"b"]),
    (a("SUNIONSTORE d s1 s2 s3"), [b"d", b"s1", b"s2", b"s3"]),
    (a("BITOP AND d s1 s2"), [b"d", b"s1", b"s2"]),
    (a("PFMERGE d s1 s2"), [b"d", b"s1", b"s2"]),
    (a("PFCOUNT h1 h2"), [b"h1", b"h2"]),
    (a("BLPOP l1 l2 0"), [b"l1", b"l2"]),
    # range with step 2
    (a("MSET a 1 b 2 c 3"), [b"a", b"b", b"c"]),
    (a("MSETNX a 1 b 2"), [b"a", b"b"]),
    # range with lastkey > 0 and two index specs
    (a("LCS k1 k2 LEN"), [b"k1", b"k2"]),
    (a("RENAME a b"), [b"a", b"b"]),
    (a("COPY a b DB 0 REPLACE"), [b"a", b"b"]),
    (a("SMOVE src dst m"), [b"src", b"dst"]),
    (a("LMOVE src dst LEFT RIGHT"), [b"src", b"dst"]),
    (a("RPOPLPUSH src dst"), [b"src", b"dst"]),
    (a("ZRANGESTORE dst src 0 -1"), [b"dst", b"src"]),
    (a("GEOSEARCHSTORE dst src FROMMEMBER m BYRADIUS 1 km"), [b"dst", b"src"]),
    # keynum: numkeys index, firstkey, step
    (a("ZUNIONSTORE out 2 z1 z2 WEIGHTS 1 2"), [b"out", b"z1", b"z2"]),
    (a("ZINTER 2 z1 z2 WITHSCORES"), [b"z1", b"z2"]),
    (a("ZDIFF 3 z1 z2 z3"), [b"z1", b"z2", b"z3"]),
    (a("ZDIFFSTORE out 1 z1"), [b"out", b"z1"]),
    (a("ZINTERCARD 2 z1 z2 LIMIT 5"), [b"z1", b"z2"]),
    (a("SINTERCARD 2 s1 s2"), [b"s1", b"s2"]),
    (a("LMPOP 2 l1 l2 LEFT COUNT 2"), [b"l1", b"l2"]),
    (a("ZMPOP 1 z1 MIN"), [b"z1"]),
    (a("EVAL script 2 k1 k2 arg1 arg2"), [b"k1", b"k2"]),
    (a("EVALSHA sha 1 k1 arg"), [b"k1"]),
    (a("EVAL_RO script 1 k1"), [b"k1"]),
    (a("FCALL fn 2 k1 k2 arg"), [b"k1", b"k2"]),
    (a("FCALL_RO fn 1 k1"), [b"k1"]),
    (a("EVAL script 0"), []),                 # no keys at all
    (a("EVAL script 0 arg1"), []),
    # bad numkeys: the datastore answers the error
    (a("ZUNIONSTORE out 5 z1 z2"), []),
    (a("ZUNIONSTORE out x z1"), []),
    (a("ZUNIONSTORE out -1 z1"), []),
    (a("ZUNIONSTORE out 01 z1"), []),
    (a("EVAL script 3 k1"), []),
    (a("EVAL script 01 k1"), []),
    (a("LMPOP 0 LEFT"), []),
    # keyword search (positive startfrom)
    (a("GEORADIUS g 15 37 200 km"), [b"g"]),
    (a("GEORADIUS g 15 37 200 km STORE dst"), [b"g", b"dst"]),
    (a("GEORADIUS g 15 37 200 km WITHDIST STOREDIST dd"), [b"g", b"dd"]),
    (a("GEORADIUS g 15 37 200 km store a storedist b"), [b"g", b"a", b"b"]),
    (a("GEORADIUSBYMEMBER g m 100 km STORE dst"), [b"g", b"dst"]),
    # keyword with range limit (XREAD: half of what follows STREAMS)
    (a("XREAD COUNT 2 STREAMS s1 s2 0 0"), [b"s1", b"s2"]),
    (a("XREADGROUP GROUP g c STREAMS s1 >"), [b"s1"]),
    # keyword with negative startfrom (MIGRATE ... KEYS k1 k2)
    (a("MIGRATE host 6379 k 0 5000"), [b"k"]),
    (a("MIGRATE host 6379 k 0 5000 KEYS k1 k2"), [b"k", b"k1", b"k2"]),
    # SORT: STORE may appear anywhere; BY/GET patterns are not keys
    (a("SORT l"), [b"l"]),
    (a("SORT l BY w_* LIMIT 0 10 GET o_* STORE dst"), [b"l", b"dst"]),
    (a("SORT l STORE d1 ALPHA STORE d2"), [b"l", b"d2"]),
    (a("SORT l GET store"), [b"l"]),
    (a("SORT_RO l BY w_* GET o_*"), [b"l"]),
    # containers: the subcommand's key spec
    (a("OBJECT ENCODING k"), [b"k"]),
    (a("XINFO STREAM s FULL"), [b"s"]),
    (a("XGROUP CREATE s g $ MKSTREAM"), [b"s"]),
    (a("MEMORY USAGE k SAMPLES 5"), [b"k"]),
    # no keys
    (a("PING"), []),
    (a("DBSIZE"), []),
    (a("SCAN 0 MATCH *"), []),
    (a("OBJECT HELP"), []),
]

#: Cases where COMMAND GETKEYS, which falls back to Redis' hand-written getkeys
#: procs, differs from the key specs that keys() follows, and why that is fine.
GETKEYS_DIFFERENCES = {
    "ZUNIONSTORE out 01 z1": "the fallback parses numkeys with atoi; ZUNIONSTORE "
                             "itself rejects '01', so the datastore answers the error",
    "EVAL script 01 k1": "same: EVAL rejects '01' as numkeys",
    "MIGRATE host 6379 k 0 5000 KEYS k1 k2": "Redis rejects a non-empty key with KEYS; "
                                             "MIGRATE is unsupported anyway",
}


class RouteTests(SynchronousTestCase):
    """Every command gets the route the module docstring promises."""

    def assertRoutes(self, route: str, names: str) -> None:
        for name in names.split():
            cmd = commands.lookup(name.encode())
            self.assertIsNotNone(cmd, name)
            self.assertEqual(cmd.route, route, name)

    def test_key(self) -> None:
        self.assertRoutes(KEY, "set get append incr getdel getex hset hget hgetall hscan "
                               "lpush lrange lpos sadd smembers sscan zadd zrange zscore "
                               "expire ttl type object dump restore persist pfadd setbit "
                               "bitcount bitfield geoadd geosearch georadius_ro xadd xrange "
                               "xinfo xgroup xautoclaim memory")

    def test_multi_key(self) -> None:
        self.assertRoutes(MULTI_KEY, " ".join(sorted(commands._MULTI_KEY)))

    def test_node(self) -> None:
        self.assertRoutes(NODE, "ping echo quit select auth hello client command info "
                                "config reset acl dyno_config:conn_consistency subscribe "
                                "unsubscribe psubscribe punsubscribe ssubscribe sunsubscribe "
                                "publish spublish pubsub multi exec discard blpop brpop blmove "
                                "brpoplpush blmpop bzpopmin bzpopmax bzmpop watch unwatch xread xreadgroup wait")

    def test_keyspace(self) -> None:
        self.assertRoutes(KEYSPACE, "time dbsize flushdb flushall keys scan randomkey script "
                                 "lastsave lolwut")

    def test_unsupported(self) -> None:
        self.assertRoutes(UNSUPPORTED, "monitor cluster readonly slaveof replicaof "
                                       "sync psync save bgsave bgrewriteaof shutdown debug "
                                       "failover move migrate swapdb module function "
                                       "latency slowlog restore-asking pfdebug")

    def test_data_groups_fully_classified(self) -> None:
        """Every data command is KEY, MULTI_KEY, KEYSPACE or deliberately UNSUPPORTED."""
        unsupported = set()
        for name, entry in REDIS_COMMANDS.items():
            cmd = commands.lookup(name.encode())
            if entry["group"] in commands._DATA_GROUPS and cmd.route == UNSUPPORTED:
                unsupported.add(name)
        self.assertEqual(unsupported, {
            "move", "migrate", "pfdebug", "pfselftest"})

    def test_every_exclusion_is_deliberate(self) -> None:
        """UNSUPPORTED commands are exactly those listed with a reason."""
        unsupported = {name for name in REDIS_COMMANDS
                       if commands.lookup(name.encode()).route == UNSUPPORTED}
        self.assertEqual(unsupported, set(commands._UNSUPPORTED_NAMES))

    def test_key_commands_have_one_key(self) -> None:
        """A KEY command names exactly one key in its specs (or subcommands')."""
        for cmd in commands.served():
            if cmd.route != KEY:
                continue
            parts = [s for s in cmd.subcommands.values() if s.route == KEY] or [cmd]
            for part in parts:
                self.assertEqual(len(part.key_specs), 1, part.name)
                self.assertEqual(part.key_specs[0].lastkey, 0, part.name)

    def test_split(self) -> None:
        split = {c.name: c.key_step for c in commands.served() if c.split}
        self.assertEqual(split, {"mget": 1, "mset": 2, "del": 1, "unlink": 1,
                                 "exists": 1, "touch": 1})
        self.assertFalse(commands.lookup(b"msetnx").split)
        self.assertEqual(commands.lookup(b"msetnx").key_step, 0)

    def test_write_flag(self) -> None:
        for name, write in [(b"set", True), (b"del", True), (b"get", False),
                            (b"mget", False), (b"eval", False), (b"xadd", True)]:
            self.assertEqual(commands.lookup(name).write, write, name)

    def test_subcommand_routes(self) -> None:
        memory = commands.lookup(b"memory")
        self.assertEqual(commands.resolve(memory, a("MEMORY USAGE k")).route, KEY)
        self.assertEqual(commands.resolve(memory, a("memory stats")).route, UNSUPPORTED)
        self.assertEqual(commands.resolve(memory, a("memory help")).route, KEYSPACE)
        self.assertIsNone(commands.resolve(memory, a("memory nosuch")))
        self.assertIs(commands.resolve(memory, a("memory")), memory)
        script = commands.lookup(b"script")
        self.assertEqual(commands.resolve(script, a("SCRIPT LOAD x")).route, KEYSPACE)
        self.assertEqual(commands.resolve(script, a("SCRIPT DEBUG YES")).route, UNSUPPORTED)
        client = commands.lookup(b"client")
        self.assertEqual(commands.resolve(client, a("CLIENT SETNAME x")).route, NODE)
        get = commands.lookup(b"get")
        self.assertIs(commands.resolve(get, a("GET k")), get)

    def test_pseudo_command(self) -> None:
        cmd = commands.lookup(b"DYNO_CONFIG:CONN_CONSISTENCY")
        self.assertEqual((cmd.name, cmd.arity, cmd.group, cmd.route),
                         ("dyno_config:conn_consistency", 2, "connection", NODE))


class LookupTests(SynchronousTestCase):
    def test_case_insensitive(self) -> None:
        cmd = commands.lookup(b"set")
        self.assertIs(commands.lookup(b"SET"), cmd)
        self.assertIs(commands.lookup(b"sEt"), cmd)
        self.assertEqual(cmd.name, "set")
        self.assertEqual(cmd.group, "string")
        self.assertIn("denyoom", cmd.flags)

    def test_unknown(self) -> None:
        self.assertIsNone(commands.lookup(b"nosuch"))
        self.assertIsNone(commands.lookup(b""))
        self.assertIsNone(commands.lookup(b"client|setname"))
        self.assertIsNone(commands.lookup(b"\xff\x00"))

    def test_command_of_names_the_subcommand_run(self) -> None:
        self.assertEqual(commands.command_of([b"SET", b"k", b"v"]).name, "set")
        self.assertEqual(commands.command_of([b"xgroup", b"CREATE", b"s", b"g", b"$"]).name, "xgroup|create")
        self.assertEqual(commands.command_of([b"XGROUP"]).name, "xgroup")          # none named: the container
        self.assertEqual(commands.command_of([b"XGROUP", b"nope"]).name, "xgroup")  # unknown: the container
        self.assertIsNone(commands.command_of([b"nosuch"]))
        self.assertIsNone(commands.command_of([]))

    def test_commands_are_hashable(self) -> None:
        self.assertEqual(len({commands.lookup(b"get"), commands.lookup(b"GET")}), 1)


class ArityTests(SynchronousTestCase):
    def test_fixed(self) -> None:
        get = commands.lookup(b"get")
        self.assertEqual(get.arity, 2)
        self.assertTrue(commands.arity_ok(get, 2))
        self.assertFalse(commands.arity_ok(get, 1))
        self.assertFalse(commands.arity_ok(get, 3))

    def test_at_least(self) -> None:
        set_ = commands.lookup(b"set")
        self.assertEqual(set_.arity, -3)
        self.assertFalse(commands.arity_ok(set_, 2))
        self.assertTrue(commands.arity_ok(set_, 3))
        self.assertTrue(commands.arity_ok(set_, 7))
        ping = commands.lookup(b"ping")
        self.assertTrue(commands.arity_ok(ping, 1))
        self.assertTrue(commands.arity_ok(ping, 2))

    def test_subcommand(self) -> None:
        usage = commands.resolve(commands.lookup(b"memory"), a("MEMORY USAGE k"))
        self.assertTrue(commands.arity_ok(usage, 3))
        self.assertFalse(commands.arity_ok(usage, 2))


class KeysTests(SynchronousTestCase):
    def test_cases(self) -> None:
        self.assertGreaterEqual(len(KEY_CASES), 30)
        for args, expected in KEY_CASES:
            cmd = commands.lookup(args[0])
            self.assertEqual(commands.keys(cmd, args), expected, args)

    def test_every_served_command(self) -> None:
        """keys() works on a sample argument list of every served command."""
        for cmd in commands.served():
            parts = list(cmd.subcommands.values()) or [cmd]
            for part in parts:
                n = max(abs(part.arity), 2) + 4
                args = [cmd.name.encode()]
                if part is not cmd:
                    args.append(part.name.split("|")[1].encode())
                args += [b"1"] * (n - len(args))
                found = commands.keys(cmd, args)
                self.assertIsInstance(found, list, part.name)
                if part.route == KEY:
                    self.assertEqual(found, [b"1"], part.name)
                if part.route in (NODE, KEYSPACE) and part.name not in BLOCKING | _NODE_WITH_KEYS:
                    self.assertEqual(found, [], part.name)   # blocking pops wait at the node
        self.assertIn(commands.lookup(b"get").route, (KEY,))

    def test_short_argument_lists(self) -> None:
        """Too few arguments (arity not checked yet) give [] instead of failing."""
        for cmd in commands.served():
            for n in range(1, 3):
                args = [cmd.name.encode()] + [b"x"] * (n - 1)
                self.assertIsInstance(commands.keys(cmd, args), list, cmd.name)
        self.assertEqual(commands.keys(commands.lookup(b"get"), [b"get"]), [])
        self.assertEqual(commands.keys(commands.lookup(b"object"), [b"object"]), [])


# -- COMMAND INFO / COMMAND DOCS bytes captured from redis-server 7.0.15 ------

SET_SPEC_2 = (
    b"*1\r\n*8\r\n$5\r\nnotes\r\n$48\r\nRW and ACCESS due to the optional `GET` argument\r\n"
    b"$5\r\nflags\r\n*4\r\n+RW\r\n+access\r\n+update\r\n+variable_flags\r\n"
    b"$12\r\nbegin_search\r\n*4\r\n$4\r\ntype\r\n$5\r\nindex\r\n$4\r\nspec\r\n*2\r\n"
    b"$5\r\nindex\r\n:1\r\n$9\r\nfind_keys\r\n*4\r\n$4\r\ntype\r\n$5\r\nrange\r\n"
    b"$4\r\nspec\r\n*6\r\n$7\r\nlastkey\r\n:0\r\n$7\r\nkeystep\r\n:1\r\n$5\r\nlimit\r\n:0\r\n"
)
REDIS_INFO = {
    (2, b"set"): (
        b"*1\r\n*10\r\n$3\r\nset\r\n:-3\r\n*2\r\n+write\r\n+denyoom\r\n:1\r\n:1\r\n:1\r\n"
        b"*3\r\n+@write\r\n+@string\r\n+@slow\r\n*0\r\n" + SET_SPEC_2 + b"*0\r\n"
    ),
    (3, b"set"): (
        b"*1\r\n*10\r\n$3\r\nset\r\n:-3\r\n~2\r\n+write\r\n+denyoom\r\n:1\r\n:1\r\n:1\r\n"
        b"~3\r\n+@write\r\n+@string\r\n+@slow\r\n~0\r\n~1\r\n%4\r\n$5\r\nnotes\r\n"
        b"$48\r\nRW and ACCESS due to the optional `GET` argument\r\n$5\r\nflags\r\n"
        b"~4\r\n+RW\r\n+access\r\n+update\r\n+variable_flags\r\n$12\r\nbegin_search\r\n"
        b"%2\r\n$4\r\ntype\r\n$5\r\nindex\r\n$4\r\nspec\r\n%1\r\n$5\r\nindex\r\n:1\r\n"
        b"$9\r\nfind_keys\r\n%2\r\n$4\r\ntype\r\n$5\r\nrange\r\n$4\r\nspec\r\n%3\r\n"
        b"$7\r\nlastkey\r\n:0\r\n$7\r\nkeystep\r\n:1\r\n$5\r\nlimit\r\n:0\r\n~0\r\n"
    ),
    (2, b"get mget"): (
        b"*2\r\n*10\r\n$3\r\nget\r\n:2\r\n*2\r\n+readonly\r\n+fast\r\n:1\r\n:1\r\n:1\r\n"
        b"*3\r\n+@read\r\n+@string\r\n+@fast\r\n*0\r\n*1\r\n*6\r\n$5\r\nflags\r\n*2\r\n"
        b"+RO\r\n+access\r\n$12\r\nbegin_search\r\n*4\r\n$4\r\ntype\r\n$5\r\nindex\r\n"
        b"$4\r\nspec\r\n*2\r\n$5\r\nindex\r\n:1\r\n$9\r\nfind_keys\r\n*4\r\n$4\r\ntype\r\n"
        b"$5\r\nrange\r\n$4\r\nspec\r\n*6\r\n$7\r\nlastkey\r\n:0\r\n$7\r\nkeystep\r\n:1\r\n"
        b"$5\r\nlimit\r\n:0\r\n*0\r\n*10\r\n$4\r\nmget\r\n:-2\r\n*2\r\n+readonly\r\n+fast\r\n"
        b":1\r\n:-1\r\n:1\r\n*3\r\n+@read\r\n+@string\r\n+@fast\r\n*1\r\n"
        b"$26\r\nrequest_policy:multi_shard\r\n*1\r\n*6\r\n$5\r\nflags\r\n*2\r\n+RO\r\n"
        b"+access\r\n$12\r\nbegin_search\r\n*4\r\n$4\r\ntype\r\n$5\r\nindex\r\n$4\r\nspec\r\n"
        b"*2\r\n$5\r\nindex\r\n:1\r\n$9\r\nfind_keys\r\n*4\r\n$4\r\ntype\r\n$5\r\nrange\r\n"
        b"$4\r\nspec\r\n*6\r\n$7\r\nlastkey\r\n:-1\r\n$7\r\nkeystep\r\n:1\r\n$5\r\nlimit\r\n"
        b":0\r\n*0\r\n"
    ),
    (3, b"get mget"): (
        b"*2\r\n*10\r\n$3\r\nget\r\n:2\r\n~2\r\n+readonly\r\n+fast\r\n:1\r\n:1\r\n:1\r\n"
        b"~3\r\n+@read\r\n+@string\r\n+@fast\r\n~0\r\n~1\r\n%3\r\n$5\r\nflags\r\n~2\r\n"
        b"+RO\r\n+access\r\n$12\r\nbegin_search\r\n%2\r\n$4\r\ntype\r\n$5\r\nindex\r\n"
        b"$4\r\nspec\r\n%1\r\n$5\r\nindex\r\n:1\r\n$9\r\nfind_keys\r\n%2\r\n$4\r\ntype\r\n"
        b"$5\r\nrange\r\n$4\r\nspec\r\n%3\r\n$7\r\nlastkey\r\n:0\r\n$7\r\nkeystep\r\n:1\r\n"
        b"$5\r\nlimit\r\n:0\r\n~0\r\n*10\r\n$4\r\nmget\r\n:-2\r\n~2\r\n+readonly\r\n+fast\r\n"
        b":1\r\n:-1\r\n:1\r\n~3\r\n+@read\r\n+@string\r\n+@fast\r\n~1\r\n"
        b"$26\r\nrequest_policy:multi_shard\r\n~1\r\n%3\r\n$5\r\nflags\r\n~2\r\n+RO\r\n"
        b"+access\r\n$12\r\nbegin_search\r\n%2\r\n$4\r\ntype\r\n$5\r\nindex\r\n$4\r\nspec\r\n"
        b"%1\r\n$5\r\nindex\r\n:1\r\n$9\r\nfind_keys\r\n%2\r\n$4\r\ntype\r\n$5\r\nrange\r\n"
        b"$4\r\nspec\r\n%3\r\n$7\r\nlastkey\r\n:-1\r\n$7\r\nkeystep\r\n:1\r\n$5\r\nlimit\r\n"
        b":0\r\n~0\r\n"
    ),
    (2, b"zunionstore"): (
        b"*1\r\n*10\r\n$11\r\nzunionstore\r\n:-4\r\n*3\r\n+write\r\n+denyoom\r\n+movablekeys\r\n"
        b":1\r\n:1\r\n:1\r\n*3\r\n+@write\r\n+@sortedset\r\n+@slow\r\n*0\r\n*2\r\n*6\r\n"
        b"$5\r\nflags\r\n*2\r\n+OW\r\n+update\r\n$12\r\nbegin_search\r\n*4\r\n$4\r\ntype\r\n"
        b"$5\r\nindex\r\n$4\r\nspec\r\n*2\r\n$5\r\nindex\r\n:1\r\n$9\r\nfind_keys\r\n*4\r\n"
        b"$4\r\ntype\r\n$5\r\nrange\r\n$4\r\nspec\r\n*6\r\n$7\r\nlastkey\r\n:0\r\n"
        b"$7\r\nkeystep\r\n:1\r\n$5\r\nlimit\r\n:0\r\n*6\r\n$5\r\nflags\r\n*2\r\n+RO\r\n"
        b"+access\r\n$12\r\nbegin_search\r\n*4\r\n$4\r\ntype\r\n$5\r\nindex\r\n$4\r\nspec\r\n"
        b"*2\r\n$5\r\nindex\r\n:2\r\n$9\r\nfind_keys\r\n*4\r\n$4\r\ntype\r\n$6\r\nkeynum\r\n"
        b"$4\r\nspec\r\n*6\r\n$9\r\nkeynumidx\r\n:0\r\n$8\r\nfirstkey\r\n:1\r\n"
        b"$7\r\nkeystep\r\n:1\r\n*0\r\n"
    ),
    (3, b"zunionstore"): (
        b"*1\r\n*10\r\n$11\r\nzunionstore\r\n:-4\r\n~3\r\n+write\r\n+denyoom\r\n+movablekeys\r\n"
        b":1\r\n:1\r\n:1\r\n~3\r\n+@write\r\n+@sortedset\r\n+@slow\r\n~0\r\n~2\r\n%3\r\n"
        b"$5\r\nflags\r\n~2\r\n+OW\r\n+update\r\n$12\r\nbegin_search\r\n%2\r\n$4\r\ntype\r\n"
        b"$5\r\nindex\r\n$4\r\nspec\r\n%1\r\n$5\r\nindex\r\n:1\r\n$9\r\nfind_keys\r\n%2\r\n"
        b"$4\r\ntype\r\n$5\r\nrange\r\n$4\r\nspec\r\n%3\r\n$7\r\nlastkey\r\n:0\r\n"
        b"$7\r\nkeystep\r\n:1\r\n$5\r\nlimit\r\n:0\r\n%3\r\n$5\r\nflags\r\n~2\r\n+RO\r\n"
        b"+access\r\n$12\r\nbegin_search\r\n%2\r\n$4\r\ntype\r\n$5\r\nindex\r\n$4\r\nspec\r\n"
        b"%1\r\n$5\r\nindex\r\n:2\r\n$9\r\nfind_keys\r\n%2\r\n$4\r\ntype\r\n$6\r\nkeynum\r\n"
        b"$4\r\nspec\r\n%3\r\n$9\r\nkeynumidx\r\n:0\r\n$8\r\nfirstkey\r\n:1\r\n"
        b"$7\r\nkeystep\r\n:1\r\n~0\r\n"
    ),
    (2, b"client|setname"): (
        b"*1\r\n*10\r\n$14\r\nclient|setname\r\n:3\r\n*3\r\n+noscript\r\n+loading\r\n+stale\r\n"
        b":0\r\n:0\r\n:0\r\n*2\r\n+@slow\r\n+@connection\r\n*0\r\n*0\r\n*0\r\n"
    ),
    (3, b"client|setname"): (
        b"*1\r\n*10\r\n$14\r\nclient|setname\r\n:3\r\n~3\r\n+noscript\r\n+loading\r\n+stale\r\n"
        b":0\r\n:0\r\n:0\r\n~2\r\n+@slow\r\n+@connection\r\n~0\r\n~0\r\n~0\r\n"
    ),
}

#: COMMAND INFO client up to its 16 subcommands (Redis lists those in
#: hash-table order, which changes per process; the node sorts them).
REDIS_CLIENT_HEAD = {
    2: (b"*1\r\n*10\r\n$6\r\nclient\r\n:-2\r\n*0\r\n:0\r\n:0\r\n:0\r\n*1\r\n+@slow\r\n"
        b"*0\r\n*0\r\n*16\r\n"),
    3: (b"*1\r\n*10\r\n$6\r\nclient\r\n:-2\r\n~0\r\n:0\r\n:0\r\n:0\r\n~1\r\n+@slow\r\n"
        b"~0\r\n~0\r\n*16\r\n"),
}

REDIS_DOCS = {
    # COMMAND DOCS dbsize nosuch time: unknown names are left out
    2: (b"*4\r\n$6\r\ndbsize\r\n*8\r\n$7\r\nsummary\r\n"
        b"$50\r\nReturn the number of keys in the selected database\r\n$5\r\nsince\r\n"
        b"$5\r\n1.0.0\r\n$5\r\ngroup\r\n$6\r\nserver\r\n$10\r\ncomplexity\r\n$4\r\nO(1)\r\n"
        b"$4\r\ntime\r\n*8\r\n$7\r\nsummary\r\n$30\r\nReturn the current server time\r\n"
        b"$5\r\nsince\r\n$5\r\n2.6.0\r\n$5\r\ngroup\r\n$6\r\nserver\r\n$10\r\ncomplexity\r\n"
        b"$4\r\nO(1)\r\n"),
    3: (b"%2\r\n$6\r\ndbsize\r\n%4\r\n$7\r\nsummary\r\n"
        b"$50\r\nReturn the number of keys in the selected database\r\n$5\r\nsince\r\n"
        b"$5\r\n1.0.0\r\n$5\r\ngroup\r\n$6\r\nserver\r\n$10\r\ncomplexity\r\n$4\r\nO(1)\r\n"
        b"$4\r\ntime\r\n%4\r\n$7\r\nsummary\r\n$30\r\nReturn the current server time\r\n"
        b"$5\r\nsince\r\n$5\r\n2.6.0\r\n$5\r\ngroup\r\n$6\r\nserver\r\n$10\r\ncomplexity\r\n"
        b"$4\r\nO(1)\r\n"),
}

#: COMMAND DOCS get / georadius, whole: the node leaves out the trailing
#: ``arguments`` field, so its map is one pair shorter.
REDIS_DOCS_WITH_ARGUMENTS = {
    (2, b"get"): (
        b"*2\r\n$3\r\nget\r\n*10\r\n$7\r\nsummary\r\n$22\r\nGet the value of a key\r\n"
        b"$5\r\nsince\r\n$5\r\n1.0.0\r\n$5\r\ngroup\r\n$6\r\nstring\r\n$10\r\ncomplexity\r\n"
        b"$4\r\nO(1)\r\n$9\r\narguments\r\n*1\r\n*6\r\n$4\r\nname\r\n$3\r\nkey\r\n$4\r\ntype\r\n"
        b"$3\r\nkey\r\n$14\r\nkey_spec_index\r\n:0\r\n",
        b"\r\n*10\r\n", b"\r\n*8\r\n"),
    (3, b"get"): (
        b"%1\r\n$3\r\nget\r\n%5\r\n$7\r\nsummary\r\n$22\r\nGet the value of a key\r\n"
        b"$5\r\nsince\r\n$5\r\n1.0.0\r\n$5\r\ngroup\r\n$6\r\nstring\r\n$10\r\ncomplexity\r\n"
        b"$4\r\nO(1)\r\n$9\r\narguments\r\n*1\r\n%3\r\n$4\r\nname\r\n$3\r\nkey\r\n$4\r\ntype\r\n"
        b"$3\r\nkey\r\n$14\r\nkey_spec_index\r\n:0\r\n",
        b"\r\n%5\r\n", b"\r\n%4\r\n"),
    (3, b"georadius"): (
        b"%1\r\n$9\r\ngeoradius\r\n%9\r\n$7\r\nsummary\r\n$114\r\nQuery a sorted set "
        b"representing a geospatial index to fetch members matching a given maximum distance "
        b"from a point\r\n$5\r\nsince\r\n$5\r\n3.2.0\r\n$5\r\ngroup\r\n$3\r\ngeo\r\n"
        b"$10\r\ncomplexity\r\n$168\r\nO(N+log(M)) where N is the number of elements inside the "
        b"bounding box of the circular area delimited by center and radius and M is the number "
        b"of items inside the index.\r\n$9\r\ndoc_flags\r\n~1\r\n+deprecated\r\n"
        b"$16\r\ndeprecated_since\r\n$5\r\n6.2.0\r\n$11\r\nreplaced_by\r\n$61\r\n`GEOSEARCH` "
        b"and `GEOSEARCHSTORE` with the `BYRADIUS` argument\r\n$7\r\nhistory\r\n~2\r\n*2\r\n"
        b"$5\r\n6.2.0\r\n$35\r\nAdded the `ANY` option for `COUNT`.\r\n*2\r\n$5\r\n7.0.0\r\n"
        b"$39\r\nAdded support for uppercase unit names.\r\n$9\r\narguments\r\n*12\r\n",
        b"\r\n%9\r\n", b"\r\n%8\r\n"),
}


class CommandReplyTests(SynchronousTestCase):
    def test_info_matches_redis(self) -> None:
        for (resp, names), expected in REDIS_INFO.items():
            self.assertEqual(commands.command_info_reply(names.split(), resp), expected,
                             (resp, names))

    def test_info_is_case_insensitive(self) -> None:
        self.assertEqual(commands.command_info_reply([b"SET"], 2), REDIS_INFO[2, b"set"])
        self.assertEqual(commands.command_info_reply([b"Client|SetName"], 3),
                         REDIS_INFO[3, b"client|setname"])

    def test_info_container(self) -> None:
        """Parent "client": Redis' header, then each subcommand's own entry."""
        for resp in (2, 3):
            subs = sorted(commands.lookup(b"client").subcommands)
            self.assertEqual(len(subs), 16)
            entries = [commands.command_info_reply([b"client|" + s], resp)[4:] for s in subs]
            self.assertEqual(commands.command_info_reply([b"client"], resp),
                             REDIS_CLIENT_HEAD[resp] + b"".join(entries))

    def test_info_unknown_and_unsupported_are_null(self) -> None:
        names = [b"nosuch", b"monitor", b"get|x", b"client|nosuch", b"client|setname|x",
                 b"memory|stats", b"get|"]
        self.assertEqual(commands.command_info_reply(names, 2), b"*7\r\n" + b"$-1\r\n" * 7)
        self.assertEqual(commands.command_info_reply(names, 3), b"*7\r\n" + b"_\r\n" * 7)

    def test_info_hides_unsupported_subcommands(self) -> None:
        reply = commands.command_info_reply([b"memory"], 3)
        self.assertIn(b"memory|usage", reply)
        self.assertIn(b"memory|help", reply)
        self.assertNotIn(b"memory|stats", reply)
        self.assertIn(b"\r\n*2\r\n*10\r\n", reply)

    def test_info_all(self) -> None:
        for resp in (2, 3):
            everything = commands.command_info_reply(None, resp)
            self.assertEqual(everything, commands.command_info_reply([], resp))
            names = [c.name.encode() for c in commands.served()]
            self.assertTrue(everything.startswith(b"*%d\r\n*10\r\n" % len(names)))
            self.assertEqual(everything, b"*%d\r\n" % len(names) + b"".join(
                commands.command_info_reply([n], resp)[4:] for n in names))
            self.assertNotIn(b"$7\r\nmonitor\r\n", everything)
            self.assertIn(b"$28\r\ndyno_config:conn_consistency\r\n", everything)

    def test_docs_matches_redis(self) -> None:
        for resp, expected in REDIS_DOCS.items():
            self.assertEqual(
                commands.command_docs_reply([b"dbsize", b"nosuch", b"time"], resp), expected)

    def test_docs_without_arguments(self) -> None:
        for (resp, name), (redis, head, fixed) in REDIS_DOCS_WITH_ARGUMENTS.items():
            expected = redis[:redis.index(b"$9\r\narguments\r\n")].replace(head, fixed, 1)
            self.assertEqual(commands.command_docs_reply([name], resp), expected)

    def test_docs_unknown_names_left_out(self) -> None:
        self.assertEqual(commands.command_docs_reply([b"nosuch", b"monitor"], 2), b"*0\r\n")
        self.assertEqual(commands.command_docs_reply([b"nosuch"], 3), b"%0\r\n")

    def test_docs_all(self) -> None:
        served = commands.served()
        reply = commands.command_docs_reply(None, 3)
        self.assertTrue(reply.startswith(b"%%%d\r\n" % len(served)))
        self.assertEqual(reply, commands.command_docs_reply([], 3))
        self.assertTrue(commands.command_docs_reply(None, 2).startswith(
            b"*%d\r\n" % (2 * len(served))))

    def test_docs_container(self) -> None:
        reply = commands.command_docs_reply([b"CLIENT"], 3)
        self.assertTrue(reply.startswith(b"%1\r\n$6\r\nclient\r\n%5\r\n$7\r\nsummary\r\n"))
        self.assertIn(b"$11\r\nsubcommands\r\n%16\r\n$14\r\nclient|caching\r\n", reply)

    def test_command_count(self) -> None:
        self.assertEqual(commands.command_count(), len(commands.served()))
        self.assertEqual(commands.command_count(), 214)
        routes = [c.route for c in commands.served()]
        self.assertEqual((routes.count(KEY), routes.count(MULTI_KEY), routes.count(NODE),
                          routes.count(KEYSPACE)), (121, 45, 38, 10))
        names = [c.name for c in commands.served()]
        self.assertEqual(names, sorted(names))
        self.assertNotIn(UNSUPPORTED, routes)


class TableTests(SynchronousTestCase):
    """The generated data is the Redis 7.0 table."""

    def test_generated_table(self) -> None:
        from dynomite.commands import redis_commands as command_table

        self.assertTrue(command_table.REDIS_VERSION.startswith("7.0."))
        self.assertEqual(len(command_table.COMMANDS), 240)
        self.assertEqual(list(command_table.COMMANDS), sorted(command_table.COMMANDS))
        self.assertNotIn("arguments", str(command_table.COMMANDS["set"]))
