"""fastlearn: transfer learning the way the 2018 fastai course taught it.

    from fastlearn.conv_learner import *
"""
__version__ = '0.1.0'
__all__ = ['__version__']
