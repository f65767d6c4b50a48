# Makes the repository root importable for tests (models, dataset, helper, ...).
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
