"""``python -m w2s_eval.lm_eval ...``: lm-eval's own CLI with the ``w2s`` model registered.

Every lm-eval flag is forwarded unchanged (``python -m w2s_eval.lm_eval --model w2s
--model_args ... --tasks ...`` or ``... run --model w2s ...``). A plain fallback for
environments where the startup hook is not installed. Extra commands:

- ``--install-hook [DIR]``: write the ``.pth`` hook into site-packages (or DIR), so the
  stock ``lm_eval`` command finds ``--model w2s`` (``pip install`` and ``pip install -e .``
  install it already);
- ``--uninstall-hook [DIR]``; ``--print-pth``: print the hook line.
"""

from __future__ import annotations

import sys
from typing import Optional, Sequence


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("--install-hook", "--uninstall-hook", "--print-pth"):
        from .hook import install_hook, pth_line, uninstall_hook

        site_dir = argv[1] if len(argv) > 1 else None
        if argv[0] == "--print-pth":
            sys.stdout.write(pth_line())
        elif argv[0] == "--install-hook":
            print(f"installed {install_hook(site_dir)}")
        else:
            print("removed" if uninstall_hook(site_dir) else "no hook installed")
        return 0
    from . import register

    register()
    from lm_eval.__main__ import cli_evaluate

    sys.argv = ["lm_eval", *argv]
    try:
        cli_evaluate()
    except (ValueError, FileNotFoundError) as e:
        if not str(e).startswith("w2s") and not isinstance(e, FileNotFoundError):
            raise
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
