"""ckpt::libtorch against real Python torch 1.13, both ways (ctest torch.peer).

    run_torch_tests.py TEST_BINARY WORK_DIR

Python writes its models' files into WORK_DIR (torch_models.py make), the C++ test's [peer] cases
load them and write C++'s own (CKPT_TORCH_WORK=WORK_DIR), and Python judges those
(torch_models.py check).
"""
import os
import shutil
import subprocess
import sys

here = os.path.dirname(os.path.abspath(__file__))
binary, work = sys.argv[1], sys.argv[2]
shutil.rmtree(work, ignore_errors=True)
os.makedirs(work)
models = os.path.join(here, "torch_models.py")
subprocess.run([sys.executable, models, "make", work], check=True)
subprocess.run([binary, "[peer]"], check=True, env=dict(os.environ, CKPT_TORCH_WORK=work))
subprocess.run([sys.executable, models, "check", work], check=True)
print("torch peer tests passed")
