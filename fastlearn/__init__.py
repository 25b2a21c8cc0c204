"""fastlearn: transfer learning the way the 2018 fastai course taught it.

    from fastlearn.conv_learner import *
"""
import os

# OpenMP threads that spin while they wait take the cores that loader workers need to decode
# images: on a 2-core machine, a frozen epoch ran 3.9x and a precompute fill 6.6x slower than
# with sleeping threads (bench/threads.py). OpenMP reads this once, when torch loads, so it only
# helps when fastlearn is imported first (as the course's header does); a user's setting wins.
os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')

__version__ = '0.1.0'
__all__ = ['__version__']
