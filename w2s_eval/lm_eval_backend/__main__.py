"""``python -m w2s_eval.lm_eval_backend ...``: lm-eval's own CLI, every flag forwarded, with ``--model w2s`` registered
(a fallback where the startup hook is not installed). ``--install-hook [DIR]`` writes the ``.pth`` hook into
site-packages or DIR (``pip install`` and ``pip install -e .`` install it already), ``--uninstall-hook [DIR]``
removes it, ``--print-pth`` prints its line."""

from __future__ import annotations

import sys
from typing import Optional, Sequence

from . import install_hook, pth_line, register, uninstall_hook


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command, site_dir = (argv or [None])[0], argv[1] if len(argv) > 1 else None
    if command == "--print-pth":
        sys.stdout.write(pth_line())
    elif command == "--install-hook":
        print(f"installed {install_hook(site_dir)}")
    elif command == "--uninstall-hook":
        print("removed" if uninstall_hook(site_dir) else "no hook installed")
    else:
        register()
        from lm_eval.__main__ import cli_evaluate

        sys.argv = ["lm_eval", *argv]
        try:
            cli_evaluate()
        except (ValueError, FileNotFoundError) as e:
            if isinstance(e, ValueError) and not str(e).startswith("w2s"):
                raise
            print(f"error: {e}", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
