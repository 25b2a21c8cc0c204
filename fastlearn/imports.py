"""The names the course notebooks expect after `from fastlearn.imports import *` (the course's
`from fastai.imports import *`): the standard library modules and functions it used, numpy,
pandas, matplotlib, PIL, tqdm, PyTorch and IPython's `FileLink`.

    from fastlearn.imports import *
    files = glob(f'{PATH}valid/*')          # the function, as in the course
    label_df = pd.read_csv(label_csv)       # pandas: pip install 'fastlearn[course]'

This is the one deliberate hub: a notebook convenience, never imported inside the package.
docs/course.md lists which module gives which name.
"""
import collections
import copy
import datetime
import importlib.util
import itertools
import json
import math
import os
import pickle
import random
import re
import shutil
import string
import sys
import time
from functools import partial
from glob import glob, iglob
from itertools import chain
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import PIL
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision
from PIL import Image
from tqdm import tqdm, trange

__all__ = ['collections', 'copy', 'datetime', 'itertools', 'json', 'math', 'os', 'pickle', 'random',
           're', 'shutil', 'string', 'sys', 'time', 'partial', 'glob', 'iglob', 'chain', 'Path',
           'matplotlib', 'plt', 'np', 'pd', 'PIL', 'Image', 'tqdm', 'trange', 'tnrange', 'FileLink',
           'display', 'torch', 'nn', 'F', 'torchvision']


class _Missing:
    """Stands in for an optional package that is not installed: any use says how to get it
    (a NameError deep in a notebook would not)."""

    def __init__(self, name: str, package: str) -> None:
        self._name, self._package = name, package

    def _fail(self, *args, **kwargs):
        raise ImportError(f"{self._name} needs {self._package}, which is not installed: "
                          f"pip install 'fastlearn[course]' (or pip install {self._package})")

    __call__ = _fail

    def __getattr__(self, attr: str):
        if attr.startswith('__'):
            raise AttributeError(attr)
        self._fail()

    def __repr__(self) -> str:
        return f'<{self._name}: {self._package} is not installed>'


tnrange = trange  # the course's notebook progress range; plain tqdm works in and out of Jupyter

if importlib.util.find_spec('pandas') is not None:
    import pandas as pd
else:
    pd = _Missing('pd', 'pandas')

if importlib.util.find_spec('IPython') is not None:
    from IPython.display import display
    from IPython.lib.display import FileLink
else:
    FileLink, display = _Missing('FileLink', 'ipython'), print  # type: ignore[misc, assignment]  # stand-ins
