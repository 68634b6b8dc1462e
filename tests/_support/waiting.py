"""How long a test waits for a state before it calls the wait a hang.

Tests wait on states (a trial RUNNING, a file written, a process ended), never on times. This
bound only turns a real hang into a failure, so it sits far above any wait on a quiet machine
(seconds). On a loaded machine a Ray trial's first start alone has taken minutes: the trial's
fresh worker imports torch and timm while other suites run on the same cores.
"""

#: seconds a test waits for a state, or for a process to end, before it fails as hung
HANG_S = 600.0
