"""Helpers to read back what the study scripts write."""
import matplotlib.image as mpimg
import numpy as np


def md_table(md: str, first_header_cells: str):
    """``(header line, rows)`` of the Markdown table whose header line starts with
    ``| first_header_cells |``; each row a list of stripped cells."""
    lines = md.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f'| {first_header_cells} |'))
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith('|'):
            break
        rows.append([c.strip() for c in line.strip('|').split('|')])
    return lines[start], rows


def assert_real_plot(path: str, min_width: int = 400) -> None:
    """A readable PNG of a plausible size that is not a blank canvas."""
    img = mpimg.imread(path)
    assert img.ndim == 3 and img.shape[0] > 200 and img.shape[1] > min_width
    assert len(np.unique(img.reshape(-1, img.shape[2]), axis=0)) > 10


def assert_report_from_json_alone(main, argv, md_path: str) -> None:
    """``--report-only`` rewrites the very same report from the saved JSON."""
    import os
    with open(md_path) as f:
        md = f.read()
    os.remove(md_path)
    main(argv + ['--report-only'])
    with open(md_path) as f:
        assert f.read() == md
