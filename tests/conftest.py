"""Shared fixtures: keep torch to one thread so tests behave the same on any box."""

import torch

torch.set_num_threads(1)
