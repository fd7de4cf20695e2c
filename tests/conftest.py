"""Session-wide fixtures: generated data is built once per test session, in a temp folder."""
import os
import sys

# The project is a set of flat top-level scripts; make them importable from the tests.
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402


# ---- the network side: a synthetic VGG-19 .mat --------------------------------------------------


# ---- the dataset side: a small ADEChallengeData2016 ---------------------------------------------
