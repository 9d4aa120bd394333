"""Code run in a fresh interpreter by the tests that prove an import has no side effects."""
import textwrap

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
