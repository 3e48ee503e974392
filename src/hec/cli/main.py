"""Entry point of the ``hec`` command: a click group whose subcommands live in sibling modules.

User errors (``hec.errors.HecError``) become one line on stderr and a non-zero exit code;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import sys

import click

from hec.errors import HecError


class _LazyGroup(click.Group):
    """Imports a subcommand's module only when that subcommand runs (keeps ``hec --help`` fast)."""

    def __init__(self, *args, lazy: dict[str, str], **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._lazy = lazy

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self._lazy})

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in self._lazy:
            module_name, attr = self._lazy[name].split(":")
            module = __import__(module_name, fromlist=[attr])
            return getattr(module, attr)
        return super().get_command(ctx, name)


COMMANDS = {
    "compile": "hec.cli.compile_cmd:compile_cmd",
    "optimize": "hec.cli.optimize_cmd:optimize_cmd",
    "run": "hec.cli.run_cmd:run_cmd",
    "keygen": "hec.cli.deploy_cmds:keygen_cmd",
    "encrypt": "hec.cli.deploy_cmds:encrypt_cmd",
    "eval": "hec.cli.deploy_cmds:eval_cmd",
    "decrypt": "hec.cli.deploy_cmds:decrypt_cmd",
    "serve": "hec.cli.serve_cmd:serve_cmd",
    "query": "hec.cli.serve_cmd:query_cmd",
    "vit": "hec.cli.vit:vit",
    "calibrate-costs": "hec.cli.calibrate_costs_cmd:calibrate_costs_cmd",
    "inspect": "hec.cli.inspect_cmd:inspect_cmd",
}


@click.group(cls=_LazyGroup, lazy=COMMANDS)
@click.version_option(package_name="hec")
def cli() -> None:
    """hec: compile ONNX networks to CKKS (OpenFHE) and run encrypted inference."""


def main(argv: list[str] | None = None) -> None:
    """Run the CLI, turning user errors into one clear line and a non-zero exit."""
    try:
        from hec._environment import check_python

        check_python()
        cli.main(args=argv, prog_name="hec", standalone_mode=False)
    except HecError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)


if __name__ == "__main__":
    main()
