"""Test top-1 and training loss per epoch of run folders in one PNG (the trials of a configuration as mean +- sd).

    python scripts/plot_runs.py save/student_model/S_resnet8_T_resnet32_digits_kd_* --out kd.png
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from experiments.cli import plot_main  # noqa: E402
from helper.run import run_cli  # noqa: E402

if __name__ == "__main__":
    run_cli(plot_main)
