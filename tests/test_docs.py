"""The documents a user clones: everything they point to is in the repository."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = [ROOT / "README.md", ROOT / "DEVELOPERS.md", *sorted((ROOT / "docs").glob("*.md"))]


def test_no_document_points_outside_the_repository():
    assert ROOT / "docs" / "DESIGN.md" in DOCUMENTS  # the project's own design document
    for path in DOCUMENTS:
        text = path.read_text()
        assert "shared/DESIGN.md" not in text and "](../" not in text, path
        for target in re.findall(r"\]\(([^)#]+)\)", text):  # markdown links: to files that exist here
            if "://" not in target:
                resolved = (path.parent / target).resolve()
                assert resolved.is_relative_to(ROOT) and resolved.exists(), (path.name, target)
