"""CPU per request of each component of a stack, for bench/stack.sh PROFILE=1.

  python3 bench/stack-profile.py sample PID...
      one JSON object {component: CPU seconds} over the processes under
      (and including) the given PIDs, from /proc/PID/stat (user + system
      time, children that already exited not counted).
  python3 bench/stack-profile.py between BEFORE AFTER
      each component's CPU seconds between two samples (around a wrk leg).
  python3 bench/stack-profile.py report LEGS.jsonl
      a table per leg: each component's CPU µs per request of the leg, and
      per API request (reads + posts, as sent by bench/stack.lua) for the
      components that only see API requests.

Components are named after what a process runs: haproxy, nginx, gunicorn
(master and workers), mariadbd; Bulwark's roles by the role kind on their
command line (`bulwark ... db -c ...`: "bulwark db"), the supervisor of
`bulwark up` as "bulwark up". Anything else is named by its command.

CPU time is far less sensitive to a busy machine than requests per second,
but not immune (caches, frequency scaling): compare runs taken on the same
machine under the same load.
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from proctree import tree  # noqa: E402

ROLE_KINDS = ("lb", "web", "app", "db")
# Shells and helpers of the bench scripts: not part of either stack.
IGNORED = {"bash", "sh", "sleep", "timeout", "python3", "wrk"}
# Components that only serve the API (reads and posts), not static files.
API_ONLY = ("gunicorn", "mariadbd", "bulwark app", "bulwark db")


def component(comm, argv):
    names = [os.path.basename(a) for a in argv[:2]]
    if comm == "haproxy" or "haproxy" in names:
        return "haproxy"
    if comm == "nginx" or names[:1] == ["nginx"]:
        return "nginx"
    if comm == "mariadbd" or "mariadbd" in names:
        return "mariadbd"
    if comm == "gunicorn" or "gunicorn" in names:
        return "gunicorn"
    # Bulwark's roles as `bulwark up` starts them: `bulwark --log-level
    # LEVEL KIND -c FILE` (whatever the binary is called).
    if argv[1:2] == ["--log-level"] and len(argv) > 3 and argv[3] in ROLE_KINDS:
        return f"bulwark {argv[3]}"
    if argv[1:2] == ["up"]:
        return "bulwark up"
    if comm == "bulwark" or names[:1] == ["bulwark"]:
        return "bulwark"
    if comm in IGNORED:
        return None
    return comm


def sample(roots):
    hz = os.sysconf("SC_CLK_TCK")
    out = {}
    for p in tree(roots):
        try:
            s = open(f"/proc/{p}/stat").read()
            argv = [a for a in open(f"/proc/{p}/cmdline", "rb").read().decode(errors="replace").split("\0") if a]
        except OSError:
            continue
        name = component(s[s.index("(") + 1:s.rindex(")")], argv)
        if name is None:
            continue
        f = s[s.rindex(")") + 2:].split()
        # Keyed by pid and start time, so that a pid reused between two
        # samples is another process.
        out.setdefault(name, {})[f"{p}:{f[19]}"] = (int(f[11]) + int(f[12])) / hz
    return out


def between(before, after):
    """CPU seconds per component from two samples."""
    cpu = {}
    for name, procs in after.items():
        old = before.get(name, {})
        cpu[name] = sum(v - old.get(k, 0.0) for k, v in procs.items())
    return cpu


def report(legs_file):
    for line in open(legs_file):
        leg = json.loads(line)
        if "components" not in leg:
            continue
        n = leg["requests"]
        api = leg.get("sent_read", 0) + leg.get("sent_post", 0)
        posts = leg.get("sent_post", 0)
        print(f"\n{leg['stack']} {leg['mix']}: {n} requests ({api} API: {leg.get('sent_read', 0)} reads, "
              f"{posts} posts), {leg['rps']:.0f} req/s")
        print("| component | CPU s | µs per request | µs per API request |")
        print("|---|---:|---:|---:|")
        total = 0.0
        for name, secs in sorted(leg["components"].items(), key=lambda kv: -kv[1]):
            total += secs
            per_api = f"{secs * 1e6 / api:.0f}" if api and name in API_ONLY else ""
            print(f"| {name} | {secs:.2f} | {secs * 1e6 / max(n, 1):.0f} | {per_api} |")
        print(f"| total | {total:.2f} | {total * 1e6 / max(n, 1):.0f} | |")


def main():
    if len(sys.argv) >= 2 and sys.argv[1] == "sample":
        print(json.dumps(sample([int(a) for a in sys.argv[2:] if a.isdigit()])))
    elif len(sys.argv) == 4 and sys.argv[1] == "between":
        print(json.dumps({k: round(v, 3) for k, v in between(json.loads(sys.argv[2]), json.loads(sys.argv[3])).items()}))
    elif len(sys.argv) == 3 and sys.argv[1] == "report":
        report(sys.argv[2])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
