"""What the peer scripts share: collecting failed checks, running the tools, the exit status."""
import subprocess

failures = []


def check(cond, what):
    """Records a failed check (and prints it); the script goes on to report every failure."""
    if not cond:
        failures.append(what)
        print("FAIL:", what)


def run(*args):
    return subprocess.run(list(args), capture_output=True, text=True)


def finish(label):
    print(f"{len(failures)} failed" if failures else f"all {label} checks passed")
    return 1 if failures else 0
