"""The real trainer learns real images: sklearn's handwritten digits, range test included, on TEST_DEVICE."""
from tests.conftest import TEST_DEVICE, read_summary, run_cli


def test_digits_are_learned_far_above_chance(digits_dir, tmp_path):
    out = tmp_path / "out"
    proc = run_cli("--dataset", "folder", "--data-dir", digits_dir, "--epochs", 4, "--batch-size", 64,
                   "--width", 16, "--lr-find-iters", 40, "--device", TEST_DEVICE, "--workers", "0",
                   "--no-progress", "--output-dir", out, "--target", 0.8, "--target-epoch", 4)
    assert proc.returncode == 0, proc.stderr
    s = read_summary(out)
    assert 0 < s["lr_min"] < s["lr_max"]
    # 10 classes: chance is 10%. Seen here: ~0.97 after 4 epochs.
    assert s["final_test_accuracy"] >= 0.85, s["history"]
    assert s["history"][-1]["train_loss"] < s["history"][0]["train_loss"]
    assert s["first_epoch_at_target"] is not None
