"""The processes under (and including) given ones, from /proc.

  python3 bench/proctree.py PID...     prints their PIDs, space-separated

Used by bench/lib.sh (proc_tree) and bench/stack-profile.py.
"""
import os
import sys


def children():
    """Parent PID -> the PIDs of its children, for every process now."""
    kids = {}
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                s = open(f"/proc/{p}/stat").read()
                kids.setdefault(int(s[s.rindex(")") + 2:].split()[1]), []).append(int(p))
            except (OSError, ValueError, IndexError):
                pass
    return kids


def tree(roots):
    """The roots that still run and every process under them."""
    kids, seen, todo = children(), [], list(roots)
    while todo:
        p = todo.pop()
        if p not in seen and os.path.exists(f"/proc/{p}"):
            seen.append(p)
            todo.extend(kids.get(p, []))
    return seen


if __name__ == "__main__":
    print(" ".join(map(str, tree([int(a) for a in sys.argv[1:] if a.isdigit()]))))
