# Makes the repository root importable for tests (models, dataset, helper, ...).
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

# The suite's tiny batches gain little from intra-op threads, and on a shared 2-core machine OpenMP
# oversubscription made them up to 20x slower; one thread keeps the suite's run time predictable.
torch.set_num_threads(1)
