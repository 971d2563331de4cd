import os.path as osp
import sys

# the study scripts are scripts, not a package: import them by path
STUDIES = osp.dirname(osp.dirname(osp.abspath(__file__)))
if STUDIES not in sys.path:
    sys.path.insert(0, STUDIES)
