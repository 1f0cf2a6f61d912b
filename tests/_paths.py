"""Where the tests find the repository and their data, wherever a test file sits below tests/."""

import os

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(TESTS_DIR)
