"""The loss curve as a small standalone SVG image (no plotting library needed)."""
from ..files.atomic import write_text

W, H, PAD = 640, 360, 48


def write_loss_plot(path, history):
    """history: loss_curve.json records; draws train loss (every step) and validation loss."""
    train = [(r["step"], r["train_loss"]) for r in history if r["train_loss"] is not None]
    val = [(r["step"], r["val_loss"]) for r in history if r.get("val_loss") is not None]
    points = train + val
    if not points:
        return
    x_max = max(s for s, _ in points) or 1
    y_lo = min(v for _, v in points)
    y_hi = max(v for _, v in points)
    if y_hi - y_lo < 1e-9:
        y_hi = y_lo + 1.0

    def xy(step, loss):
        x = PAD + (W - 2 * PAD) * step / x_max
        y = H - PAD - (H - 2 * PAD) * (loss - y_lo) / (y_hi - y_lo)
        return f"{x:.1f},{y:.1f}"

    def polyline(series, color):
        return (f'<polyline fill="none" stroke="{color}" stroke-width="1.5" '
                f'points="{" ".join(xy(*p) for p in series)}"/>')

    ticks = []
    for i in range(5):
        loss = y_lo + (y_hi - y_lo) * i / 4
        y = H - PAD - (H - 2 * PAD) * i / 4
        ticks.append(f'<text x="{PAD - 6}" y="{y + 4:.1f}" text-anchor="end">{loss:.2f}</text>')
    svg = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">',
        f'<rect width="{W}" height="{H}" fill="white"/>',
        f'<line x1="{PAD}" y1="{H - PAD}" x2="{W - PAD}" y2="{H - PAD}" stroke="black"/>',
        f'<line x1="{PAD}" y1="{PAD}" x2="{PAD}" y2="{H - PAD}" stroke="black"/>',
        *ticks,
        f'<text x="{W / 2}" y="{H - 12}" text-anchor="middle">step (last: {x_max})</text>',
        (f'<text x="{PAD}" y="{PAD - 16}">loss — <tspan fill="#1f77b4">train</tspan>, '
         '<tspan fill="#d62728">validation</tspan></text>'),
        polyline(train, "#1f77b4"),
    ]
    if val:
        svg.append(polyline(val, "#d62728"))
        svg += [f'<circle cx="{xy(*p).split(",")[0]}" cy="{xy(*p).split(",")[1]}" r="3" fill="#d62728"/>' for p in val]
    svg.append("</svg>")
    write_text(path, "\n".join(svg))
