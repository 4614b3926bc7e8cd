"""
Run the trial suite and end with one line ``N passed, M failed``.

trial's own summary (``PASSED (successes=N)`` or ``FAILED (failures=F,
errors=E, successes=S)``) is parsed; the exit status is non-zero when any
test failed or errored, or when trial's summary cannot be found.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys


def main(argv: list) -> int:
    trial = os.path.join(os.path.dirname(sys.executable), "trial")
    jobs = os.environ.get("TRIAL_JOBS", "2")
    command = [trial, "--jobs=%s" % jobs] + (argv or ["tests"])
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    summary = None
    assert proc.stdout is not None
    for raw in proc.stdout:
        line = raw.decode("utf-8", "replace")
        sys.stdout.write(line)
        sys.stdout.flush()
        if re.match(r"^(PASSED|FAILED) \(", line):
            summary = line
    rc = proc.wait()
    if summary is None:
        print("0 passed, 1 failed: trial printed no summary (exit status %d)" % rc)
        return 1
    counts = dict((k, int(v)) for k, v in re.findall(r"(\w+)=(\d+)", summary))
    passed = counts.get("successes", 0) + counts.get("expectedFailures", 0)
    failed = counts.get("failures", 0) + counts.get("errors", 0) + counts.get("unexpectedSuccesses", 0)
    skipped = counts.get("skips", 0)
    print("%d passed, %d failed" % (passed, failed) + (", %d skipped" % skipped if skipped else ""))
    return 1 if failed or rc else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
