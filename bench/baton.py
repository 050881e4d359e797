"""Two trainings in two processes take turns, one whole epoch (training steps and validation) at a
time, so that their epoch times are measured on the same machine in the same minutes and never
while the other runs. A turn is a file holding the name of the process whose turn it is.

    --baton FILE:MINE:OTHER   (bench/trainer_only.py, bench/baseline_bilstm.py)

The process named first in FILE's initial content starts; each writes OTHER after its epoch, and
`done-MINE` when it has no epoch left, so that the other never waits for it again.
"""
import os
import time

POLL_S = 0.05


class Baton:
    def __init__(self, spec: str):
        self.path, self.mine, self.other = spec.split(":")

    def _write(self, value: str) -> None:
        staging = f"{self.path}.{self.mine}"
        with open(staging, "w") as f:
            f.write(value)
        os.replace(staging, self.path)

    def take(self) -> None:
        """Waits until it is this process's turn, or the other has finished."""
        while True:
            with open(self.path) as f:
                turn = f.read().strip()
            if turn in (self.mine, f"done-{self.other}"):
                return
            time.sleep(POLL_S)

    def give(self) -> None:
        with open(self.path) as f:
            if f.read().strip() != f"done-{self.other}":
                self._write(self.other)

    def finish(self) -> None:
        with open(self.path) as f:
            if f.read().strip() != f"done-{self.other}":
                self._write(f"done-{self.mine}")

