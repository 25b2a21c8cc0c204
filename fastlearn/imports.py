"""The names the course notebooks expect after `from fastlearn.imports import *`.

This is the one deliberate hub: a notebook convenience, never imported inside the package.
"""
import glob
import math
import os
import random
import re
import shutil
import sys
import time
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

__all__ = ['glob', 'math', 'os', 'random', 're', 'shutil', 'sys', 'time', 'Path', 'matplotlib',
           'plt', 'np', 'PIL', 'Image', 'torch', 'nn', 'F', 'torchvision']
