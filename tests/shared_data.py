"""Where the tests find the real IFLLM data: ``../shared/datasets/ifllm`` beside the repo."""

from pathlib import Path

IFLLM_ROOT = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "ifllm"
