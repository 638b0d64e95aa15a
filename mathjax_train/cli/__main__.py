"""`python -m mathjax_train.cli ...` runs the command line."""

import sys

from mathjax_train.cli import main

sys.exit(main())
