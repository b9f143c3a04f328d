"""Collects the demo's tables and plots: tables go to stdout as they are produced and, with the
figures (PNG), into one Markdown report."""
import os


class Report:
    """A Markdown report under ``out_dir``; ``figure()`` gives matplotlib figures a file."""

    def __init__(self, out_dir, title):
        os.makedirs(out_dir, exist_ok=True)
        self.out_dir, self.parts = out_dir, [f"# {title}\n"]

    def section(self, title, text=""):
        print(f"\n== {title} ==")
        if text:
            print(text)
        self.parts.append(f"\n## {title}\n\n{text}\n" if text else f"\n## {title}\n")

    def text(self, text):
        print(text)
        self.parts.append(f"\n{text}\n")

    def table(self, rows, caption=None):
        """rows: a list of dicts with the same keys (column order from the first row)."""
        columns = list(rows[0])
        cells = [[_format(row[c]) for c in columns] for row in rows]
        widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
        if caption:
            print(caption)
        print("  ".join(c.ljust(w) for c, w in zip(columns, widths)))
        for r in cells:
            print("  ".join(v.ljust(w) for v, w in zip(r, widths)))
        lines = ([f"\n{caption}\n"] if caption else []) + [
            "| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
        lines += ["| " + " | ".join(r) + " |" for r in cells]
        self.parts.append("\n".join(lines) + "\n")

    def figure(self, fig, name, caption):
        path = os.path.join(self.out_dir, name)
        fig.savefig(path, dpi=110, bbox_inches="tight")
        import matplotlib.pyplot as plt
        plt.close(fig)
        print(f"[plot] {path}")
        self.parts.append(f"\n![{caption}]({name})\n\n*{caption}*\n")

    def write(self):
        path = os.path.join(self.out_dir, "report.md")
        with open(path, "w") as f:
            f.write("\n".join(self.parts))
        return path


def _format(value):
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e-3 and value != 0 else f"{value:.3f}"
    return str(value)
