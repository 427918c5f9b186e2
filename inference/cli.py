"""`python run.py predict ...` and `python run.py export ...`: a trained model's uses after training.

run.py hands any command line whose first word is one of COMMANDS to `main`; every other command
line trains, as before. A user error is one line `error: ...` and exit code 2, as for training.
"""
from __future__ import annotations

import argparse
import logging
import sys
import traceback
from pathlib import Path

from core.cli import USER_ERROR_EXIT, OneLineParser
from core.errors import UserError

COMMANDS = ("predict", "export")


class _OneLineParser(OneLineParser):
    command = ""  # the command whose --help the error line points to (unknown flags reach the top parser)

    def help_hint(self) -> str:
        return f"python run.py {self.command or self.prog.split()[-1]} --help"


def parser() -> argparse.ArgumentParser:
    p = _OneLineParser(prog="run.py", description="Use a trained model: predict images, or export it to ONNX.")
    commands = p.add_subparsers(dest="command", required=True, parser_class=_OneLineParser)
    pr = commands.add_parser("predict", help="top-k classes of image files",
                             formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                             description="Top-k classes with probabilities for image files or folders (searched "
                                         "recursively), as a table and optionally CSV/JSON.")
    pr.add_argument("model", metavar="MODEL.pt", help="a best-model file, OUTPUT/checkpoints/best_model_*.pt")
    pr.add_argument("images", metavar="IMAGE", nargs="+", help="image files and/or folders")
    pr.add_argument("--top-k", type=int, default=3, help="classes shown per image")
    pr.add_argument("--csv", metavar="FILE", help="also write the predictions as CSV")
    pr.add_argument("--json", metavar="FILE", help="also write the predictions as JSON")
    pr.add_argument("--resize", action="store_true", help="resize images that are not 32x32 (else they are skipped)")
    pr.add_argument("--batch-size", type=int, default=256, help="images per forward pass")
    pr.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="auto: CUDA when available")
    pr.add_argument("--debug", action="store_true", help="print the traceback of an error too")
    ex = commands.add_parser("export", help="export to ONNX", formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                             description="Export a best-model file to ONNX (dynamic batch axis; class names and "
                                         "mean/std in the metadata). Needs: pip install -e .[export]")
    ex.add_argument("model", metavar="MODEL.pt", help="a best-model file, OUTPUT/checkpoints/best_model_*.pt")
    ex.add_argument("--onnx", metavar="OUT.onnx", required=True, help="the ONNX file to write")
    ex.add_argument("--opset", type=int, default=None, help="ONNX opset (default 18, see inference/export.py)")
    ex.add_argument("--debug", action="store_true", help="print the traceback of an error too")
    return p


def pick_device(name: str):
    import torch

    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: torch sees no CUDA GPU here: use --device cpu (or auto)")
    return torch.device("cuda" if name == "auto" and torch.cuda.is_available() else
                        ("cpu" if name == "auto" else name))


def write_file(path: str, text: str) -> None:
    """Through a temporary file and a rename: a reader never sees half a file."""
    import os

    out = Path(path)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f".{out.name}.tmp")
        tmp.write_text(text, encoding="utf-8", newline="")
        os.replace(tmp, out)
    except OSError as e:
        raise UserError(f"cannot write {out} ({e.strerror or e}): choose a file you can write") from None


def predict(args) -> int:
    from inference.predict import predict_images, table, to_csv, to_json
    from models.trained import load_trained

    if args.top_k < 1:
        raise UserError(f"--top-k {args.top_k} must be at least 1")
    if args.batch_size < 1:
        raise UserError(f"--batch-size {args.batch_size} must be at least 1")
    model, meta = load_trained(args.model, pick_device(args.device), require_meta=True)
    result = predict_images(model, meta, args.images, args.top_k, args.batch_size, args.resize)
    for line in result.skipped:  # one line per file, and the rest are still predicted
        print(f"skipped: {line}", file=sys.stderr, flush=True)
    if not result.files:
        raise UserError(f"no image could be predicted ({len(result.skipped)} skipped, see above): give 32x32 "
                        f"image files or folders of them (or pass --resize)")
    print(table(result))
    for flag, text in (("csv", args.csv and to_csv(result)), ("json", args.json and to_json(result, args.model, meta))):
        if text:
            write_file(getattr(args, flag), text)
    chosen = f"{meta['chosen_on']} {meta['score']:.4f} at epoch {meta['epoch']}"
    print(f"{len(result.files)} image(s) predicted, {len(result.skipped)} skipped; model {args.model} "
          f"(width {meta['width']}, chosen on {chosen})", flush=True)
    return 0


def export(args) -> int:
    from inference.export import OPSET, check_with_onnxruntime, export_onnx
    from models.trained import load_trained

    model, meta = load_trained(args.model, "cpu", require_meta=True)
    opset = args.opset if args.opset is not None else OPSET
    out = export_onnx(model, meta, Path(args.onnx), Path(args.model), opset)
    diff = check_with_onnxruntime(model, out, meta["input_size"])
    check = "not checked (onnxruntime is not installed)" if diff is None else \
        f"ONNX Runtime vs PyTorch on 8 random images: max |logits difference| {diff:.2e}"
    print(f"wrote {out} (opset {opset}, dynamic batch axis, input 'image' (N, 3, {meta['input_size']}, "
          f"{meta['input_size']}), output 'logits'; {check})", flush=True)
    return 0


def main(argv: list[str]) -> int:
    p = parser()
    p.command = argv[0] if argv and argv[0] in COMMANDS else ""
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    try:
        return predict(args) if args.command == "predict" else export(args)
    except UserError as e:
        if args.debug:
            e.__suppress_context__ = False
            traceback.print_exception(e)
        print(f"error: {e}", file=sys.stderr, flush=True)
        return USER_ERROR_EXIT
