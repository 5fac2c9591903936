#!/usr/bin/env python3
"""CLI tests: each case is a command, its expected exit code and its expected output.

cases.txt holds blocks:

    ### title
    $ checkpoint-inspect good/plain.safetensors     (run in the data dir; $WORK is a scratch dir)
    exit 0
    | exact stdout line                            (all '|' lines together = the whole stdout)
    ! exact stderr line                            (all '!' lines together = the whole stderr)
    ~ text stdout must contain
    ? text stderr must contain

A case with no '|' lines does not check stdout as a whole (likewise '!' for stderr).
"""
import argparse
import os
import shlex
import shutil
import subprocess
import sys


def parse(path):
    cases, case = [], None
    for raw in open(path, encoding="utf-8"):
        line = raw.rstrip("\n")
        if line.startswith("### "):
            case = {"title": line[4:], "commands": [], "exit": 0, "stdout": None, "stderr": None,
                    "contains": [], "err_contains": []}
            cases.append(case)
        elif case is None or not line.strip() or line.startswith("#"):
            continue
        elif line.startswith("$ "):
            case["commands"].append(line[2:])
        elif line.startswith("exit "):
            case["exit"] = int(line[5:])
        elif line.startswith("|"):
            case["stdout"] = (case["stdout"] or []) + [line[2:] if len(line) > 1 else ""]
        elif line.startswith("!"):
            case["stderr"] = (case["stderr"] or []) + [line[2:] if len(line) > 1 else ""]
        elif line.startswith("~ "):
            case["contains"].append(line[2:])
        elif line.startswith("? "):
            case["err_contains"].append(line[2:])
        else:
            raise SystemExit(f"{path}: cannot parse line {line!r}")
    return cases


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--cases", required=True)
    ap.add_argument("--work", required=True)
    args = ap.parse_args()
    args.bin = os.path.abspath(args.bin)
    args.work = os.path.abspath(args.work)
    shutil.rmtree(args.work, ignore_errors=True)
    os.makedirs(args.work)
    passed = failed = 0
    for case in parse(args.cases):
        errors = []
        result = None
        for i, command in enumerate(case["commands"]):
            argv = shlex.split(command.replace("$WORK", args.work))
            argv[0] = os.path.join(args.bin, argv[0])
            result = subprocess.run(argv, cwd=args.data, capture_output=True, text=True,
                                    stdin=subprocess.DEVNULL)
            last = i == len(case["commands"]) - 1
            if not last and result.returncode != 0:
                errors.append(f"setup command {command!r} exited {result.returncode}: {result.stderr}")
                break
        if result is not None and not errors:
            out = result.stdout.replace(args.work, "$WORK")
            err = result.stderr.replace(args.work, "$WORK")
            if result.returncode != case["exit"]:
                errors.append(f"exit {result.returncode}, expected {case['exit']}")
            if case["stdout"] is not None and out.splitlines() != case["stdout"]:
                errors.append("stdout differs:\n" + out)
            if case["stderr"] is not None and err.splitlines() != case["stderr"]:
                errors.append("stderr differs:\n" + err)
            for text in case["contains"]:
                if text not in out:
                    errors.append(f"stdout lacks {text!r}:\n{out}")
            for text in case["err_contains"]:
                if text not in err:
                    errors.append(f"stderr lacks {text!r}:\n{err}")
        if errors:
            failed += 1
            print(f"FAIL {case['title']}")
            for e in errors:
                print("   ", e.replace("\n", "\n    "))
        else:
            passed += 1
            print(f"ok   {case['title']}")
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
