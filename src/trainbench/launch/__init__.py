"""Launchers: the sbatch script as a pure builder (``sbatch``), a thin executor (``submit``), job tracking
(``jobs``), readiness and container import (``setup``). Imports neither torch nor torch.distributed."""
