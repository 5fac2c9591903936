#!/usr/bin/env python3
"""Writes the pickles of tests/data/pickle with Python's own pickle module (the peer that defines
the format). tests/test_pickle.cpp checks what ckpt's restricted reader makes of each; the
hostile ones name globals that must never run.

    make_pickles.py OUTDIR
"""
import collections
import os
import pickle
import sys


class Hostile:
    """Unpickling this with pickle.loads would run `echo pwned`."""

    def __reduce__(self):
        return (os.system, ("echo pwned",))


class Evil:
    def __reduce__(self):
        import builtins
        return (builtins.eval, ("__import__('os').getcwd()",))


VALUE = {"a": 1, "b": [1.5, None, True], "c": (1, 2, 3), "d": b"xy", "big": 2**70, "neg": -5,
         "long": 2**40, "s": "héllo"}


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)

    def write(name, obj, protocol):
        with open(os.path.join(out, name), "wb") as f:
            f.write(pickle.dumps(obj, protocol=protocol))

    for protocol in (2, 4, 5):
        write(f"values_p{protocol}.pkl", VALUE, protocol)
    shared = [1]
    write("shared_p2.pkl", {"x": shared, "y": shared}, 2)
    write("ordered_p2.pkl", collections.OrderedDict([("w", 1), ("v", 2)]), 2)
    write("set_p4.pkl", {"s": {7}, "f": frozenset([8])}, 4)
    write("hostile_system_p2.pkl", {"payload": Hostile()}, 2)
    write("hostile_eval_p4.pkl", [Evil()], 4)


if __name__ == "__main__":
    main()
