"""The images and tables written by ``timestepper sample`` and ``timestepper eval`` appear whole
or not at all: an interrupted write never leaves a partial file nor destroys the previous one."""

from __future__ import annotations

import pytest

from timestepper.cli import main

matplotlib = pytest.importorskip("matplotlib")


def test_an_interrupted_image_write_keeps_the_previous_image(tmp_path, monkeypatch):
    out = tmp_path / "moons"
    assert main(["train", "moons", "--steps", "2", "--hidden", "8", "--no-progress", "--out", str(out)]) == 0
    png = tmp_path / "s.png"
    sample = ["sample", str(out), "--solver", "ddim", "--steps", "2", "--n", "8", "--out", str(png)]
    assert main(sample) == 0
    before = png.read_bytes()
    assert before.startswith(b"\x89PNG")
    from matplotlib.figure import Figure

    def failing(self, fname, **kwargs):
        with open(fname, "wb") as f:
            f.write(b"\x89PNG partial")
        raise OSError(28, "No space left on device (injected)")

    monkeypatch.setattr(Figure, "savefig", failing)
    with pytest.raises(OSError, match="injected"):
        main([*sample[:-2], "--seed", "1", "--out", str(png)])
    assert png.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["moons", "s.png"]
