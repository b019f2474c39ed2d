"""Stand-in for ansible-test's pip bootstrap script, which it would download from a host these machines cannot reach.

ansible-test runs it as `python get_pip.py [pip options] pip==X [--no-setuptools] [--no-wheel]`
inside a fresh virtual environment; ensurepip plus a normal pip install from the package index do the same.
"""

import subprocess
import sys

args = [a for a in sys.argv[1:] if a not in ("--no-setuptools", "--no-wheel")]
subprocess.check_call([sys.executable, "-m", "ensurepip", "--upgrade", "--default-pip"])
subprocess.check_call([sys.executable, "-m", "pip", "install", "--quiet", *args])
