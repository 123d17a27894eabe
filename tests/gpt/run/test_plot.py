"""gpt.run.plot: the loss curve as an SVG, tested directly."""
import xml.etree.ElementTree as ET

from gpt.run.plot import write_loss_plot

SVG = "{http://www.w3.org/2000/svg}"


def test_the_plot_draws_train_and_validation_losses(tmp_path):
    history = [{"step": s, "train_loss": 5.0 - s / 10, "val_loss": (5.1 - s / 10) if s % 5 == 0 else None}
               for s in range(1, 21)]
    path = tmp_path / "loss_curve.svg"
    write_loss_plot(str(path), history)
    root = ET.fromstring(path.read_text())                    # well-formed XML
    lines = root.findall(f"{SVG}polyline")
    assert len(lines) == 2
    train_points = lines[0].get("points").split()
    assert len(train_points) == 20 and len(root.findall(f"{SVG}circle")) == 4
    ys = [float(p.split(",")[1]) for p in train_points]
    assert ys == sorted(ys)                                    # a falling loss goes down the image


def test_a_flat_or_empty_curve(tmp_path):
    write_loss_plot(str(tmp_path / "empty.svg"), [])
    assert not (tmp_path / "empty.svg").exists()
    write_loss_plot(str(tmp_path / "flat.svg"), [{"step": 1, "train_loss": 2.0}, {"step": 2, "train_loss": 2.0}])
    ET.fromstring((tmp_path / "flat.svg").read_text())
