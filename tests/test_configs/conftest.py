import pytest
import torch


@pytest.fixture(autouse=True)
def one_torch_thread():
    """These tests run whole (small) detectors in the test process: one intra-op thread,
    as tools run by ``run_tool`` get (OMP_NUM_THREADS=1), keeps them fast when the CPU is
    shared and costs little when it is not."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)
