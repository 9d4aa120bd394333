"""Helpers of the tests: code run in a fresh interpreter by the tests that prove an import has no
side effects, and :func:`wait_until`, the bounded wait for a condition."""
import textwrap
import time

# Records into ``events`` every socket, thread start, directory creation, chmod and file opened
# for writing from this point on (Python audit hooks). Needs ``sys`` imported before it.
AUDIT_SIDE_EFFECTS = textwrap.dedent("""
    events = []
    def audit(event, args):
        if event.startswith("socket.") or event in ("_thread.start_new_thread", "os.mkdir", "os.chmod"):
            events.append(event)
        elif event == "open" and args[1] and any(c in str(args[1]) for c in "wax+"):
            events.append(f"open for writing {args[0]}")
    sys.addaudithook(audit)
""")


def wait_until(condition, timeout: float = 10.0, what: str = "the condition", interval: float = 0.02):
    """Poll ``condition()`` until it returns something true, and return that; fail the test when
    ``timeout`` seconds pass first. The bounded wait for something to happen: never a fixed sleep."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)
