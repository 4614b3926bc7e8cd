"""
ACL users: the rules and glob patterns (`dynomite.commands.acl`,
`dynomite.commands.globmatch`), and what a node does with them
(`dynomite.node.access`): AUTH, NOPERM for single and pipelined requests,
the ACL command, the failed-AUTH limit under a `Clock`.
"""

from __future__ import annotations

import hashlib
import os

from twisted.trial.unittest import SynchronousTestCase

from dynomite.commands import table as commands
from dynomite.commands.acl import Acl, AclError, User, load, split_args
from dynomite.commands.globmatch import compile_pattern, match
from dynomite.config.model import ConfigError
from dynomite.node import access
from dynomite.node.access import AuthGuard
from dynomite.ops.metrics import Collector

from tests.fakes import node_config
from tests.unit.test_node import NodeTestCase, multibulk

NOPERM_KEY = b"-NOPERM this user has no permissions to access one of the keys used as arguments\r\n"
WRONGPASS = b"-WRONGPASS invalid username-password pair or user is disabled.\r\n"


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def user(rules: str, name: str = "u") -> User:
    u = User(name)
    for rule in split_args(rules):
        u.apply(rule)
    return u


def cmd(*args: bytes):
    found = commands.lookup(args[0])
    return commands.resolve(found, args) if found.subcommands else found


class GlobTests(SynchronousTestCase):
    """Cases where Redis's stringmatchlen differs from fnmatch (checked against redis-server 7.0's KEYS)."""

    CASES = [
        (b"app:*", b"app:", True), (b"app:*", b"app:x:y", True), (b"app:*", b"ap", False),
        (b"*", b"", False), (b"", b"", True), (b"a?c", b"abc", True), (b"a?c", b"ac", False),
        (b"[a-c]x", b"bx", True), (b"[c-a]x", b"bx", True), (b"[^a-c]x", b"bx", False),
        (b"[^a-c]x", b"dx", True), (b"a\\*", b"a*", True), (b"a\\*", b"ab", False),
        (b"[\\]]", b"]", True), (b"[ab", b"b", True), (b"[ab", b"ab", False),
        (b"a*b*c", b"aXbYc", True), (b"a*b*c", b"aXbY", False), (b"**", b"x", True),
        (b"*a", b"ba", True), (b"x\\", b"x\\", True), (b"user:[0-9]", b"user:7", True),
    ]

    def test_cases(self):
        for pattern, string, expected in self.CASES:
            self.assertEqual(match(pattern, string), expected, (pattern, string))
            self.assertEqual(compile_pattern(pattern)(string), expected, (pattern, string))


class SplitTests(SynchronousTestCase):
    def test_words_and_quotes(self):
        self.assertEqual(split_args('user a on "~x y" \'>p\\\'w\' "\\x"'),
                         ["user", "a", "on", "~x y", ">p'w", "x"])
        self.assertEqual(split_args("   "), [])

    def test_bad_quotes(self):
        self.assertRaises(AclError, split_args, 'user "a')
        self.assertRaises(AclError, split_args, 'user "a"b')


class RuleTests(SynchronousTestCase):
    def test_a_new_user_may_do_nothing(self):
        u = User("x")
        self.assertFalse(u.enabled)
        self.assertFalse(u.may_run(cmd(b"get", b"k")))
        self.assertFalse(u.may_touch(b"k"))
        self.assertTrue(u.restricted)

    def test_categories_in_order(self):
        u = user("on ~* -@all +@read +@write -@dangerous")
        self.assertTrue(u.may_run(cmd(b"get", b"k")))
        self.assertTrue(u.may_run(cmd(b"set", b"k", b"v")))
        self.assertFalse(u.may_run(cmd(b"flushall")))      # @write but @dangerous
        self.assertFalse(u.may_run(cmd(b"keys", b"*")))    # @read, @dangerous
        self.assertFalse(u.may_run(cmd(b"ping")))          # @connection only

    def test_no_auth_commands_are_always_allowed(self):
        u = user("on nocommands")
        for name in (b"auth", b"hello", b"quit"):
            self.assertTrue(u.may_run(commands.lookup(name)), name)

    def test_commands_and_subcommands(self):
        u = user("+get +client|setname -@all +config +config|get -config|set")
        self.assertFalse(u.may_run(cmd(b"get", b"k")))      # -@all came after
        self.assertFalse(u.may_run(cmd(b"client", b"setname", b"n")))
        self.assertTrue(u.may_run(cmd(b"config", b"get", b"x")))
        self.assertTrue(u.may_run(cmd(b"config", b"resetstat")))   # +config: every subcommand
        self.assertFalse(u.may_run(cmd(b"config", b"set", b"a", b"b")))
        self.assertEqual(u.describe().split()[-4:], ["-@all", "+config", "+config|get", "-config|set"])

    def test_all_commands_and_removing_one(self):
        u = user("on nopass allkeys allcommands -flushall")
        self.assertFalse(u.all_commands)
        self.assertTrue(u.restricted)
        self.assertFalse(u.may_run(cmd(b"flushall")))
        self.assertTrue(u.may_run(cmd(b"flushdb")))
        self.assertEqual(u.describe(), "user u on nopass ~* resetchannels +@all -flushall")

    def test_a_later_rule_for_a_command_replaces_the_earlier(self):
        u = user("+get -get +get")
        self.assertEqual(u.describe().split()[-2:], ["-@all", "+get"])

    def test_key_patterns(self):
        u = user("~app:* ~tmp?")
        self.assertTrue(u.may_touch(b"app:1"))
        self.assertTrue(u.may_touch(b"tmp1"))
        self.assertFalse(u.may_touch(b"tmp12"))
        self.assertFalse(u.may_touch(b"other"))
        u.apply("resetkeys")
        self.assertFalse(u.may_touch(b"app:1"))
        u.apply("allkeys")
        self.assertTrue(u.may_touch(b"anything"))

    def test_channels(self):
        u = user("&news.*")
        self.assertTrue(u.may_use_channel(b"news.sport"))
        self.assertFalse(u.may_use_channel(b"chat"))
        u.apply("allchannels")
        self.assertTrue(u.may_use_channel(b"chat"))

    def test_passwords(self):
        u = user("on >one #%s" % sha("two"))
        self.assertTrue(u.authenticates(b"one"))
        self.assertTrue(u.authenticates(b"two"))
        self.assertFalse(u.authenticates(b"three"))
        u.apply("<one")
        self.assertFalse(u.authenticates(b"one"))
        u.apply("!" + sha("two"))
        self.assertFalse(u.authenticates(b"two"))
        u.apply("nopass")
        self.assertTrue(u.authenticates(b"anything"))
        u.apply("off")
        self.assertFalse(u.authenticates(b"anything"))
        u.apply("on")
        u.apply("resetpass")
        self.assertFalse(u.authenticates(b"anything"))

    def test_denial_names_the_command_then_the_first_refused_key(self):
        u = user("on ~a* +get +mget +set")
        self.assertIsNone(u.denial(cmd(b"get", b"ab"), [b"get", b"ab"]))
        self.assertEqual(u.denial(cmd(b"del", b"ab"), [b"del", b"ab"]), ("command", b"del"))
        self.assertEqual(u.denial(cmd(b"mget", b"a1", b"b", b"c"), [b"mget", b"a1", b"b", b"c"]),
                         ("key", b"b"))
        self.assertEqual(u.denial(cmd(b"client", b"list"), [b"client", b"list"]), ("command", b"client|list"))

    def test_refused_rules(self):
        for rule, reason in [
            ("+nosuch", "unknown command or category"), ("+@nosuch", "unknown command or category"),
            ("#abc", "64 characters"), ("#" + sha("x").upper(), "lowercase"),
            ("%R~x", "not supported"), ("(~x +get)", "selectors"), ("+select|0", "first-arg"),
            ("<nope", "does not exist"), ("bogus", "syntax error"),
        ]:
            with self.assertRaises(AclError, msg=rule) as caught:
                User("x").apply(rule)
            self.assertIn(reason, str(caught.exception), rule)
        self.assertRaises(AclError, user, "allkeys ~x")
        self.assertRaises(AclError, user, "allchannels &x")


class AclTests(SynchronousTestCase):
    def lines(self, *texts, key="users"):
        return [(key, "entry %d" % i, t) for i, t in enumerate(texts, 1)]

    def test_default_user_is_added(self):
        acl = Acl.from_lines(self.lines("user alice on >pw ~* +@all"))
        self.assertEqual(list(acl.users), ["alice", "default"])
        self.assertTrue(acl.default_authenticated)
        self.assertEqual(acl.default.describe(), "user default on nopass ~* &* +@all")
        self.assertFalse(acl.restricted)

    def test_requirepass_is_the_default_password(self):
        acl = Acl.from_lines([], requirepass="s3cret")
        self.assertFalse(acl.default_authenticated)
        self.assertIs(acl.authenticate(b"default", b"s3cret"), acl.default)
        self.assertIsNone(acl.authenticate(b"default", b"nope"))
        self.assertIsNone(acl.authenticate(b"nobody", b"s3cret"))

    def test_requirepass_and_a_default_user_are_refused(self):
        with self.assertRaises(AclError) as caught:
            Acl.from_lines(self.lines("user default on nopass"), requirepass="x")
        self.assertEqual(caught.exception.key, "requirepass")

    def test_a_defined_default_user(self):
        acl = Acl.from_lines(self.lines("user default off"))
        self.assertFalse(acl.default_authenticated)
        self.assertTrue(acl.restricted)

    def test_errors_name_the_line(self):
        for text, reason in [("user a on +nope", "entry 1: unknown command"),
                             ("alice on", "entry 1: a line must start with 'user <name>'"),
                             ("user", "entry 1: a line must start")]:
            with self.assertRaises(AclError) as caught:
                Acl.from_lines(self.lines(text))
            self.assertIn(reason, str(caught.exception))
        with self.assertRaises(AclError) as caught:
            Acl.from_lines(self.lines("user a on", "user a off"))
        self.assertIn("entry 2: duplicate user 'a'", str(caught.exception))

    def test_blank_lines_are_skipped(self):
        acl = Acl.from_lines(self.lines("", "  ", "user a on"))
        self.assertEqual(list(acl.users), ["a", "default"])


class LoadTests(SynchronousTestCase):
    def test_file_then_yaml_users(self):
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("user alice on >pw ~app:* +@read\n\nuser bob off\n")
        acl = load(node_config(acl_file=path, users=["user carol on nopass"]))
        self.assertEqual(list(acl.users), ["alice", "bob", "carol", "default"])

    def test_a_bad_file_names_config_key_and_line(self):
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("user alice on\nuser bob on +nosuch\n")
        with self.assertRaises(ConfigError) as caught:
            load(node_config(acl_file=path))
        self.assertEqual(str(caught.exception),
                         "test.yml: acl_file: %s line 2: unknown command or category name in ACL: "
                         "'+nosuch'" % path)

    def test_a_missing_file(self):
        path = os.path.join(self.mktemp(), "none.acl")
        with self.assertRaises(ConfigError) as caught:
            load(node_config(acl_file=path))
        self.assertIn("acl_file: cannot read %s: No such file" % path, str(caught.exception))

    def test_yaml_users_must_be_acl_lines(self):
        for value in ("user a on", ["a on"], [3]):
            with self.assertRaises(ConfigError) as caught:
                node_config(users=value)
            self.assertIn("users:", str(caught.exception))


class GuardTests(SynchronousTestCase):
    def setUp(self):
        from twisted.internet.task import Clock

        self.clock = Clock()
        self.failures = {"wrongpass": 0, "throttled": 0}
        acl = Acl.from_lines([("users", "1", "user a on >pw ~* +@all")])
        self.guard = AuthGuard(acl, self.clock, self.failures, max_failures=3, window=10, block=30)

    def test_blocked_after_max_failures_in_the_window_then_free_again(self):
        for _ in range(3):
            self.assertEqual(self.guard.authenticate("h", b"a", b"bad"), WRONGPASS)
        refused = self.guard.authenticate("h", b"a", b"pw")   # the right password, refused unheard
        self.assertEqual(refused, b"-ERR too many failed authentication attempts from this address; "
                                  b"retry in 30 seconds\r\n")
        self.assertEqual(self.failures, {"wrongpass": 3, "throttled": 1})
        self.assertEqual(self.guard.authenticate("other", b"a", b"pw").name, "a")
        self.clock.advance(30)
        self.assertEqual(self.guard.authenticate("h", b"a", b"pw").name, "a")

    def test_failures_spread_over_windows_are_not_blocked(self):
        for _ in range(4):
            self.assertEqual(self.guard.authenticate("h", b"a", b"bad"), WRONGPASS)
            self.assertEqual(self.guard.authenticate("h", b"a", b"bad"), WRONGPASS)
            self.clock.advance(10)
        self.assertEqual(self.guard.authenticate("h", b"a", b"pw").name, "a")

    def test_addresses_remembered_are_bounded(self):
        self.guard.max_addresses = 5
        for i in range(50):
            self.guard.authenticate("h%d" % i, b"a", b"bad")
        self.assertLessEqual(len(self.guard._hosts), 6)


USERS = [
    "user alice on >alicepw ~app:* -@all +@read +@write -@dangerous +acl|whoami",
    "user admin on >adminpw ~* &* +@all",
    "user off off >offpw ~* +@all",
]


class NodeAclTests(NodeTestCase):
    def setUp(self):
        self.start(users=USERS, requirepass="defaultpw")

    def login(self, name=b"alice", password=b"alicepw"):
        self.send(b"AUTH %s %s\r\n" % (name, password))
        self.assertEqual(self.written(), b"+OK\r\n")

    def test_auth_as_a_user(self):
        self.send(b"GET app:1\r\n")
        self.assertEqual(self.written(), b"-NOAUTH Authentication required.\r\n")
        self.login()
        self.assertEqual(self.client.session.user.name, "alice")
        self.send(b"ACL WHOAMI\r\n")
        self.assertEqual(self.written(), b"$5\r\nalice\r\n")

    def test_wrong_passwords_and_disabled_users(self):
        self.send(b"AUTH alice nope\r\nAUTH off offpw\r\nAUTH nobody x\r\nAUTH defaultpw\r\n")
        self.assertEqual(self.written(), WRONGPASS * 3 + b"+OK\r\n")
        self.assertEqual(self.node.metrics.auth_failures["wrongpass"], 3)

    def test_noperm_for_a_command(self):
        self.login()
        self.send(b"FLUSHALL\r\nCLIENT LIST\r\nPING\r\n")
        self.assertEqual(self.written(),
                         b"-NOPERM this user has no permissions to run the 'flushall' command\r\n"
                         b"-NOPERM this user has no permissions to run the 'client|list' command\r\n"
                         b"-NOPERM this user has no permissions to run the 'ping' command\r\n")
        self.assertEqual(self.datastore.sent, [])

    def test_noperm_for_a_key(self):
        self.login()
        self.send(b"GET other\r\nMSET app:1 x other y\r\n")
        self.assertEqual(self.written(), NOPERM_KEY * 2)
        self.assertEqual(self.datastore.sent, [])
        self.send(b"GET app:1\r\n")
        self.assertEqual(len(self.datastore.sent), 1)

    def test_every_key_of_a_pipelined_run_is_checked(self):
        self.login()
        self.send(multibulk(b"SET app:1 a", b"SET app:2 b", b"SET secret c", b"SET app:3 d"))
        sent = [(count, data) for count, (_, _, data, _) in zip(self.datastore.counts, self.datastore.sent)]
        # the refused one never leaves; the others reach Redis together
        self.assertEqual(sent, [(3, multibulk(b"SET app:1 a", b"SET app:2 b", b"SET app:3 d"))])
        self.datastore.answer(b"+OK\r\n+OK\r\n+OK\r\n")
        self.assertEqual(self.written(), b"+OK\r\n+OK\r\n" + NOPERM_KEY + b"+OK\r\n")

    def test_hello_3_auth(self):
        self.send(b"HELLO 3 AUTH alice nope\r\n")
        self.assertEqual(self.written(), WRONGPASS)
        self.send(b"HELLO 3 AUTH alice alicepw\r\n")
        self.assertTrue(self.written().startswith(b"%7\r\n"))
        self.assertEqual(self.client.session.user.name, "alice")
        self.assertEqual(self.client.session.resp, 3)

    def test_reset_goes_back_to_the_default_user(self):
        self.login()
        self.send(b"RESET\r\nGET app:1\r\n")
        self.assertEqual(self.written(), b"+RESET\r\n-NOAUTH Authentication required.\r\n")
        self.assertIsNone(self.client.session.acl)

    def test_acl_list_users_cat_for_admin_only(self):
        self.login()
        self.send(b"ACL LIST\r\n")
        self.assertEqual(self.written(), b"-NOPERM this user has no permissions to run the 'acl|list' command\r\n")
        self.login(b"admin", b"adminpw")
        self.send(b"ACL USERS\r\n")
        self.assertEqual(self.written(), b"*4\r\n$5\r\nadmin\r\n$5\r\nalice\r\n$7\r\ndefault\r\n$3\r\noff\r\n")
        self.send(b"ACL LIST\r\n")
        listed = self.written()
        self.assertIn(b"user alice on #%s ~app:* resetchannels -@all +@read +@write -@dangerous +acl|whoami"
                      % sha("alicepw").encode(), listed)
        self.assertNotIn(b"alicepw", listed)
        self.send(b"ACL CAT\r\n")
        self.assertTrue(self.written().startswith(b"*21\r\n$8\r\nkeyspace\r\n"))
        self.send(b"ACL CAT nosuch\r\n")
        self.assertEqual(self.written(), b"-ERR Unknown category 'nosuch'\r\n")
        self.send(b"ACL SETUSER x\r\nACL NOSUCH\r\nACL WHOAMI extra\r\n")
        self.assertEqual(self.written(),
                         b"-ERR unsupported command 'acl setuser' (users come from the node's "
                         b"acl_file and users)\r\n"
                         b"-ERR unknown subcommand 'NOSUCH'. Try ACL HELP.\r\n"
                         b"-ERR wrong number of arguments for 'acl|whoami' command\r\n")

    def test_acl_dryrun(self):
        self.login(b"admin", b"adminpw")
        self.send(b"ACL DRYRUN alice SET app:x v\r\nACL DRYRUN alice SET k v\r\n"
                  b"ACL DRYRUN alice FLUSHALL\r\nACL DRYRUN nobody GET x\r\nACL DRYRUN alice NOSUCH\r\n"
                  b"ACL DRYRUN alice GET\r\n")
        self.assertEqual(self.written(),
                         b"+OK\r\n"
                         b"$50\r\nThis user has no permissions to access the 'k' key\r\n"
                         b"$58\r\nThis user has no permissions to run the 'flushall' command\r\n"
                         b"-ERR User 'nobody' not found\r\n"
                         b"-ERR Command 'NOSUCH' not found\r\n"
                         b"-ERR wrong number of arguments for 'get' command\r\n")

    def test_failed_auths_are_limited_and_exported(self):
        for _ in range(access.MAX_FAILURES):
            self.send(b"AUTH alice nope\r\n")
        self.assertEqual(self.written(), WRONGPASS * access.MAX_FAILURES)
        self.send(b"AUTH alice alicepw\r\n")
        self.assertTrue(self.written().startswith(b"-ERR too many failed authentication attempts"))
        self.assertFalse(self.client.session.authenticated)
        self.clock.advance(access.BLOCK_SECONDS)
        self.login()
        self.assertEqual(self.node.metrics.auth_failures, {"wrongpass": access.MAX_FAILURES, "throttled": 1})


class ExportTests(SynchronousTestCase):
    def test_auth_failures_are_exported_by_reason(self):
        from tests.fakes import FakeNode

        node = FakeNode()
        node.metrics.auth_failures.update(wrongpass=7, throttled=2)
        samples = {(s.name, s.labels.get("reason")): s.value
                   for f in Collector(node.status).collect() for s in f.samples}
        self.assertEqual(samples[("dynomite_auth_failures_total", "wrongpass")], 7)
        self.assertEqual(samples[("dynomite_auth_failures_total", "throttled")], 2)


class UnrestrictedTests(NodeTestCase):
    def test_nothing_is_checked_for_an_unrestricted_user(self):
        self.assertIsNone(self.client.session.acl)
        self.assertTrue(self.client.session.authenticated)
        self.send(b"ACL WHOAMI\r\nAUTH default anything\r\n")
        self.assertEqual(self.written(), b"$7\r\ndefault\r\n+OK\r\n")
