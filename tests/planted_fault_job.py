"""One process of a sharded job with a planted fault, for tests/test_distributed.py (never used by vaxis).

``VAXIS_PLANTED_FAULT=fail``: process 1 fails after its first extraction batch.
``VAXIS_PLANTED_FAULT=mismatch``: process 1 loads the model with one weight changed.
Otherwise it is ``python -m vaxis job <folder>``.
"""

import importlib
import os
import sys

import torch

from vaxis.core import jobs

fault = os.environ.get("VAXIS_PLANTED_FAULT")
if os.environ.get("RANK") == "1" and fault == "fail":
    forward_module = importlib.import_module("vaxis.core.extract_forward")
    real_batch, calls = forward_module.run_batch, []

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) > 1:
            raise RuntimeError("planted failure in process 1")
        return real_batch(*args, **kwargs)

    forward_module.run_batch = failing
elif os.environ.get("RANK") == "1" and fault == "mismatch":
    real_load = jobs.load_source

    def changed(source):
        model, tokenizer = real_load(source)
        with torch.no_grad():
            next(model.parameters()).add_(1.0)
        return model, tokenizer

    jobs.load_source = changed

sys.exit(jobs.job_main(sys.argv[1]))
