"""``python -m osprey_core.logbook.sample``: rewrite the shipped sample from the generator."""

from pathlib import Path

from osprey_core.logbook.sample import SAMPLE_FILE, sample_text

target = Path(__file__).parent.parent / "data" / SAMPLE_FILE
target.parent.mkdir(exist_ok=True)
target.write_text(sample_text(), encoding="utf-8", newline="\n")
print(f"wrote {target}")
