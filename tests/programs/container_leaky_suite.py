"""A user's test module that leaks a process, as real suites do (a server fixture never stopped).

tests/test_container.py copies it into an empty project as `test_leaky.py`
and runs the command line of the CI workflow in examples/ci/ there. The
test starts `sleep 300` in a session of its own, with stdio on /dev/null,
and forgets it: under a plain `pytest` the sleep outlives the run (on a CI
runner it keeps the job, or the next one, busy); under
`pyinit --unshare` it dies with the namespace when the run ends.

The leaked sleep inherits the environment, so the caller finds it by the
LEAK_MARKER variable it sets. With SUITE_FAILS=1 the test fails after the
leak, so the caller can check that the failure reaches the CI job's status.
"""

import os
import subprocess


def test_starts_a_server_and_forgets_it():
    subprocess.Popen(["sleep", "300"], start_new_session=True, stdin=subprocess.DEVNULL,
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert os.environ.get("SUITE_FAILS") != "1", "failing on purpose (SUITE_FAILS=1)"
